//! The built-in `system.*` methods, XML-RPC introspection and multicall,
//! and `rpc.discover`, which answers the OpenRPC document (see
//! [`openrpc`](super::openrpc)).
//!
//! They follow the conventions XML-RPC clients already speak (the
//! introspection spec's `listMethods`/`methodSignature`/`methodHelp`,
//! xmlrpc-epi's `getCapabilities`, Eric Kidd's `system.multicall`), and they
//! answer over JSON-RPC too, with the same values: a client can discover a
//! daemon whatever protocol it speaks. They live in the registry because
//! they read it, which a handler closure over the context cannot.
//!
//! A multicall runs its entries synchronously, one after the other, so an
//! entry whose method answers `Deferred` cannot be waited for. A method
//! marked [`Method::defers`] is refused before it runs (-32600), so that
//! nothing is done whose answer would be lost; one that defers without the
//! mark becomes a fault (-32603) after it ran, and its later completion
//! finds no connection waiting and is ignored. A multicall has at most as
//! many entries as the registry allows (`set_max_multicall`).

use super::error::{self, RpcError};
use super::registry::{Args, Method, ParamType, Params, Registry, Reply};
use super::value::{Map, Value};

/// Which built-in a method is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Builtin {
    ListMethods,
    MethodSignature,
    MethodHelp,
    GetCapabilities,
    Multicall,
    Discover,
}

/// The name of the multicall method, which may not call itself.
const MULTICALL: &str = "system.multicall";

/// The name of the OpenRPC discovery method.
pub(super) const DISCOVER: &str = "rpc.discover";

/// The capabilities `system.getCapabilities` reports: (name, spec url,
/// spec version), the same set comodojo/rpcserver announces.
const CAPABILITIES: &[(&str, &str, i64)] = &[
    ("faults_interop", "http://xmlrpc-epi.sourceforge.net/specs/rfc.fault_codes.php", 20010516),
    ("introspection", "http://phpxmlrpc.sourceforge.net/doc-2/ch10.html", 2),
    ("json-rpc", "http://www.jsonrpc.org/specification", 2),
    ("nil", "http://www.ontosys.com/xml-rpc/extensions.php", 1),
    ("system.multicall", "http://www.xmlrpc.com/discuss/msgReader$1208", 1),
    ("xmlrpc", "http://www.xmlrpc.com/spec", 1),
];

/// The built-in methods, with their signatures and help.
pub(super) fn methods<C>() -> Vec<Method<C>> {
    vec![
        Method::builtin("system.listMethods", Builtin::ListMethods)
            .help("List the names of the methods this server answers, sorted.")
            .returns(ParamType::Array),
        Method::builtin("system.methodSignature", Builtin::MethodSignature)
            .help(
                "Return the signatures of a method: an array of arrays, \
                 each holding the return type then the param types.",
            )
            .param(ParamType::String, "method")
            .returns(ParamType::Array)
            .error(error::METHOD_NOT_FOUND, "No method of that name"),
        Method::builtin("system.methodHelp", Builtin::MethodHelp)
            .help("Return the description of a method.")
            .param(ParamType::String, "method")
            .returns(ParamType::String)
            .error(error::METHOD_NOT_FOUND, "No method of that name"),
        Method::builtin("system.getCapabilities", Builtin::GetCapabilities)
            .help(
                "List the extensions to the RPC specs this server implements, \
                 with the url and version of each spec.",
            )
            .returns(ParamType::Struct),
        Method::builtin(MULTICALL, Builtin::Multicall)
            .help(
                "Run many calls in one request. Each entry is a struct \
                 {methodName, params}; each answer is [result] or a struct \
                 {faultCode, faultString}, in order.",
            )
            .param(ParamType::Array, "requests")
            .returns(ParamType::Array)
            .error(error::LIMIT, "More entries than the server runs in one multicall"),
        Method::builtin(DISCOVER, Builtin::Discover)
            .help(
                "Return the OpenRPC document of this server: every method it answers, \
                 with its params, result, description and errors.",
            )
            .returns(ParamType::Struct),
    ]
}

impl<C> Registry<C> {
    pub(super) fn run_builtin(&mut self, builtin: Builtin, ctx: &mut C, args: Args) -> Reply {
        match builtin {
            Builtin::ListMethods => Reply::Value(Value::Array(self.names().map(Value::from).collect())),
            Builtin::MethodSignature => {
                let name = args.get_str("method").unwrap_or_default();
                match self.get(name) {
                    None => Reply::Error(RpcError::method_not_found(name)),
                    Some(method) => Reply::Value(Value::Array(
                        method
                            .signatures()
                            .iter()
                            .map(|signature| {
                                let types = std::iter::once(signature.returns())
                                    .chain(signature.params().iter().map(|(_, ty)| *ty));
                                Value::Array(types.map(|ty| Value::from(ty.name())).collect())
                            })
                            .collect(),
                    )),
                }
            }
            Builtin::MethodHelp => {
                let name = args.get_str("method").unwrap_or_default();
                match self.get(name) {
                    None => Reply::Error(RpcError::method_not_found(name)),
                    Some(method) => Reply::Value(Value::from(method.help_text())),
                }
            }
            Builtin::GetCapabilities => {
                let mut capabilities = Map::new();
                for (name, url, version) in CAPABILITIES {
                    let mut spec = Map::new();
                    spec.insert("specUrl".into(), Value::from(*url));
                    spec.insert("specVersion".into(), Value::from(*version));
                    capabilities.insert(name.to_string(), Value::Object(spec));
                }
                Reply::Value(Value::Object(capabilities))
            }
            Builtin::Multicall => {
                let calls = match args.into_values().pop() {
                    Some(Value::Array(calls)) => calls,
                    // The signature guarantees one array param.
                    _ => Vec::new(),
                };
                if calls.len() > self.max_multicall {
                    return Reply::Error(RpcError::new(
                        error::LIMIT,
                        format!("system.multicall of {} entries: at most {}", calls.len(), self.max_multicall),
                    ));
                }
                let answers = calls.into_iter().map(|call| self.multicall_one(ctx, call)).collect();
                Reply::Value(Value::Array(answers))
            }
            Builtin::Discover => Reply::Value(super::openrpc::document(self)),
        }
    }

    /// One entry of a multicall: `[result]` or `{faultCode, faultString}`.
    fn multicall_one(&mut self, ctx: &mut C, call: Value) -> Value {
        let result = match call {
            Value::Object(mut call) => {
                let params = match call.remove("params") {
                    None | Some(Value::Null) => Ok(Params::None),
                    Some(Value::Array(values)) => Ok(Params::Positional(values)),
                    Some(Value::Object(map)) => Ok(Params::Named(map)),
                    Some(_) => Err(RpcError::invalid_request("multicall params must be an array or a struct")),
                };
                match (call.get("methodName").and_then(Value::as_str), params) {
                    (None, _) => Err(RpcError::invalid_request("multicall entry needs a string methodName")),
                    (Some(_), Err(error)) => Err(error),
                    (Some(MULTICALL), Ok(_)) => Err(RpcError::invalid_request("system.multicall cannot be nested")),
                    (Some(name), Ok(_)) if self.get(name).is_some_and(Method::is_deferred) => {
                        Err(RpcError::invalid_request(format!(
                            "method '{name}' answers later, which system.multicall cannot wait for"
                        )))
                    }
                    (Some(name), Ok(params)) => match self.dispatch(ctx, name, params) {
                        Reply::Value(value) => Ok(value),
                        Reply::Error(error) => Err(error),
                        Reply::Deferred(_) => Err(RpcError::internal_error(format!(
                            "method '{name}' answers later, which system.multicall cannot wait for"
                        ))),
                    },
                }
            }
            _ => Err(RpcError::invalid_request("multicall entry must be a struct")),
        };
        match result {
            Ok(value) => Value::Array(vec![value]),
            Err(error) => {
                let mut fault = Map::new();
                fault.insert("faultCode".into(), Value::from(error.code));
                fault.insert("faultString".into(), Value::from(error.message));
                Value::Object(fault)
            }
        }
    }
}
