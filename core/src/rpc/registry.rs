//! Methods, their signatures, and dispatch by name.
//!
//! This is comodojo/rpcserver's `RpcMethod::create(name, handler)
//! ->setDescription()->addParameter(type, name)->addSignature()
//! ->setReturnType()` in Rust: a method declares one or more signatures, and
//! the registry checks the params of a call against them *before* the handler
//! runs. A handler therefore never validates its arguments by hand: if
//! `my.echo` declares `message: string`, `args.get_str("message")` is there.
//!
//! Both protocols meet here. JSON-RPC may pass params by position or by name,
//! XML-RPC only by position; the signature that matched maps positions to
//! names, so a handler reads its arguments by name either way.
//!
//! The registry is generic over the daemon's context `C`, which handlers get
//! as `&mut C`: that is how a method reaches the daemon's state without
//! shared ownership. It never touches the world; a handler that needs the
//! world (or a worker) answers [`Reply::Deferred`] and the daemon completes
//! the call later through the connection.

use std::collections::BTreeMap;
use std::fmt;

use super::error::RpcError;
use super::introspection::{self, Builtin};
pub use super::param_type::ParamType;
use super::value::{type_name, Map, Value};

/// Names a call whose answer comes later. The daemon's context allocates it
/// (uniquely among the calls still open); the connection remembers where the
/// answer goes and fills it in on [`Conn::complete`](super::Conn::complete).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeferId(pub(crate) u64);

impl DeferId {
    /// An id from its number: for tests that play the daemon's part.
    #[cfg(any(test, feature = "testing"))]
    pub fn from_raw(n: u64) -> DeferId {
        DeferId(n)
    }
}

pub use super::args::Args;
pub use super::reply::{IntoReply, Reply};

/// The params of a call, as the client sent them.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Params {
    /// No params at all (JSON-RPC `params` absent).
    #[default]
    None,
    /// By position (a JSON array, or XML-RPC's `<params>`).
    Positional(Vec<Value>),
    /// By name (a JSON object).
    Named(Map<String, Value>),
}

/// One way to call a method: its params, in order, and its return type.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Signature {
    params: Vec<(String, ParamType)>,
    returns: ParamType,
}

impl Signature {
    /// The params, in positional order, with their names.
    pub fn params(&self) -> &[(String, ParamType)] {
        &self.params
    }

    /// The return type.
    pub fn returns(&self) -> ParamType {
        self.returns
    }

    /// Checks `params` against this signature without taking them.
    fn check(&self, params: &Params) -> Result<(), Mismatch> {
        match params {
            Params::None => match self.params.first() {
                None => Ok(()),
                Some((name, _)) => Err(Mismatch::Other(RpcError::invalid_params(format!("missing param '{name}'")))),
            },
            Params::Positional(values) => {
                if values.len() != self.params.len() {
                    return Err(Mismatch::Arity(self.params.len()));
                }
                for ((name, ty), value) in self.params.iter().zip(values) {
                    check_type(name, *ty, value)?;
                }
                Ok(())
            }
            Params::Named(map) => {
                for (name, ty) in &self.params {
                    match map.get(name) {
                        None => {
                            return Err(Mismatch::Other(RpcError::invalid_params(format!("missing param '{name}'"))))
                        }
                        Some(value) => check_type(name, *ty, value)?,
                    }
                }
                if let Some(extra) = map.keys().find(|k| !self.params.iter().any(|(n, _)| n == *k)) {
                    return Err(Mismatch::Other(RpcError::invalid_params(format!("unexpected param '{extra}'"))));
                }
                Ok(())
            }
        }
    }

    /// Turns params that passed [`Signature::check`] into the values in
    /// signature order, each bound by its type (see [`ParamType::bind`]).
    fn bind(&self, params: Params) -> Vec<Value> {
        let values = match params {
            Params::None => Vec::new(),
            Params::Positional(values) => values,
            Params::Named(mut map) => {
                self.params.iter().map(|(name, _)| map.remove(name).unwrap_or(Value::Null)).collect()
            }
        };
        values.into_iter().zip(&self.params).map(|(value, (_, ty))| ty.bind(value)).collect()
    }
}

fn check_type(name: &str, ty: ParamType, value: &Value) -> Result<(), Mismatch> {
    if ty.accepts(value) {
        Ok(())
    } else {
        Err(Mismatch::Other(RpcError::invalid_params(format!("param '{name}' expects {ty}, got {}", type_name(value)))))
    }
}

/// Why params did not fit one signature.
enum Mismatch {
    /// Wrong number of positional params; the signature wants this many.
    Arity(usize),
    /// Anything else, already phrased for the client.
    Other(RpcError),
}

/// The error for params that fit no signature: the first error from a
/// signature of the right shape if there is one (it says most), otherwise
/// the list of accepted param counts.
fn mismatch_error(mismatches: Vec<Mismatch>, given: usize) -> RpcError {
    let mut counts = Vec::new();
    for mismatch in mismatches {
        match mismatch {
            Mismatch::Other(error) => return error,
            Mismatch::Arity(n) => counts.push(n),
        }
    }
    counts.sort_unstable();
    counts.dedup();
    let plural = if counts == [1] { "" } else { "s" };
    let list = match counts.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => {
            let rest: Vec<String> = rest.iter().map(|n| n.to_string()).collect();
            format!("{} or {last}", rest.join(", "))
        }
        None => "no".to_string(),
    };
    RpcError::invalid_params(format!("expected {list} param{plural}, got {given}"))
}

/// A method handler: gets the daemon's context and the checked arguments.
pub type Handler<C> = Box<dyn FnMut(&mut C, &Args) -> Reply>;

/// What runs when a method is called.
enum Body<C> {
    User(Handler<C>),
    /// The introspection methods need the registry itself, so they cannot
    /// be closures over the context.
    Builtin(Builtin),
}

/// A named method with its description, signatures and handler.
///
/// ```
/// use forkd_core::rpc::{Method, ParamType, Reply, Value};
///
/// let echo: Method<()> = Method::new("my.echo", |_ctx: &mut (), args| {
///     Reply::Value(args.get("message").cloned().unwrap_or(Value::Null))
/// })
/// .help("I'm here to reply your data")
/// .param(ParamType::String, "message")
/// .returns(ParamType::String);
/// assert_eq!(echo.signatures().len(), 1);
/// ```
pub struct Method<C> {
    name: String,
    help: String,
    signatures: Vec<Signature>,
    body: Body<C>,
    defers: bool,
    errors: Vec<(i64, String)>,
}

impl<C> Method<C> {
    /// A method called `name`, with one empty signature returning "mixed",
    /// whose handler takes the bound arguments as they came and returns
    /// anything that converts into a reply (a [`Reply`], a [`Value`], a
    /// `Result<T: Serialize, RpcError>`). See [`Method::typed`] for params
    /// deserialized into a type of the caller's.
    pub fn new<R: IntoReply>(name: impl Into<String>, mut handler: impl FnMut(&mut C, &Args) -> R + 'static) -> Self {
        Method {
            name: name.into(),
            help: String::new(),
            signatures: vec![Signature::default()],
            body: Body::User(Box::new(move |ctx, args| handler(ctx, args).into_reply())),
            defers: false,
            errors: Vec::new(),
        }
    }

    /// A method whose handler takes its params deserialized (with serde)
    /// into `P`: a struct whose fields are the declared params' names, or
    /// a tuple of them in order. Declare the params with
    /// [`Method::param`] as for any method: introspection and the OpenRPC
    /// document read the declared types, and a call that does not fit them
    /// is refused before `P` is made. Dates arrive as ISO 8601 text, bytes
    /// as base64 text.
    ///
    /// ```
    /// use forkd_core::rpc::{Method, ParamType, RpcError};
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Add {
    ///     a: i64,
    ///     b: i64,
    /// }
    ///
    /// let add: Method<()> = Method::typed("math.add", |_ctx: &mut (), p: Add| -> Result<i64, RpcError> {
    ///     p.a.checked_add(p.b).ok_or_else(|| RpcError::invalid_params("the sum overflows"))
    /// })
    /// .help("Adds two integers.")
    /// .param(ParamType::Int, "a")
    /// .param(ParamType::Int, "b")
    /// .returns(ParamType::Int);
    /// assert_eq!(add.signatures()[0].params().len(), 2);
    /// ```
    pub fn typed<P, R>(name: impl Into<String>, mut handler: impl FnMut(&mut C, P) -> R + 'static) -> Self
    where
        P: serde::de::DeserializeOwned,
        R: IntoReply,
    {
        Method::new(name, move |ctx: &mut C, args: &Args| match args.deserialize::<P>() {
            Ok(params) => handler(ctx, params).into_reply(),
            Err(error) => Reply::Error(error),
        })
    }

    pub(super) fn builtin(name: &str, builtin: Builtin) -> Self {
        Method {
            name: name.to_string(),
            help: String::new(),
            signatures: vec![Signature::default()],
            body: Body::Builtin(builtin),
            defers: false,
            errors: Vec::new(),
        }
    }

    /// Marks the method as one that answers [`Reply::Deferred`] (it waits
    /// for a worker, say): `system.multicall`, which cannot wait, refuses
    /// it before it runs, so that nothing is done whose answer is lost.
    pub fn defers(mut self) -> Self {
        self.defers = true;
        self
    }

    /// Whether the method was marked with [`Method::defers`].
    pub fn is_deferred(&self) -> bool {
        self.defers
    }

    /// Sets the help text: what `system.methodHelp` answers and the
    /// OpenRPC document's description of the method.
    pub fn help(mut self, text: impl Into<String>) -> Self {
        self.help = text.into();
        self
    }

    /// Declares an error the method may answer besides those forkd answers
    /// for every method (invalid params, a panicking handler), for the
    /// OpenRPC document: its code and what it means.
    pub fn error(mut self, code: i64, message: impl Into<String>) -> Self {
        self.errors.push((code, message.into()));
        self
    }

    /// The errors declared with [`Method::error`], in order.
    pub fn errors(&self) -> &[(i64, String)] {
        &self.errors
    }

    /// Appends a param to the current signature.
    pub fn param(mut self, ty: ParamType, name: impl Into<String>) -> Self {
        self.current().params.push((name.into(), ty));
        self
    }

    /// Sets the return type of the current signature.
    pub fn returns(mut self, ty: ParamType) -> Self {
        self.current().returns = ty;
        self
    }

    /// Starts another signature; the following `param`/`returns` apply to
    /// it. Signatures are tried in order and the first that fits wins.
    pub fn signature(mut self) -> Self {
        self.signatures.push(Signature::default());
        self
    }

    fn current(&mut self) -> &mut Signature {
        self.signatures.last_mut().expect("a method always has a signature")
    }

    /// The method's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The help text set with [`Method::help`].
    pub fn help_text(&self) -> &str {
        &self.help
    }

    /// The signatures, in the order they are tried.
    pub fn signatures(&self) -> &[Signature] {
        &self.signatures
    }

    /// Picks the first signature that `params` fit and binds them to it.
    fn bind(&self, params: Params) -> Result<Args, RpcError> {
        let mut mismatches = Vec::new();
        for (i, signature) in self.signatures.iter().enumerate() {
            match signature.check(&params) {
                Ok(()) => {
                    return Ok(Args {
                        names: signature.params.iter().map(|(n, _)| n.clone()).collect(),
                        values: signature.bind(params),
                        signature: i,
                    })
                }
                Err(mismatch) => mismatches.push(mismatch),
            }
        }
        let given = match &params {
            Params::None => 0,
            Params::Positional(values) => values.len(),
            Params::Named(map) => map.len(),
        };
        Err(mismatch_error(mismatches, given))
    }
}

impl<C> fmt::Debug for Method<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Method").field("name", &self.name).field("signatures", &self.signatures).finish_non_exhaustive()
    }
}

/// Why [`Registry::add`] refused a method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddError {
    /// A method of that name is already there (the built-in `system.*`
    /// methods included): replacing one silently would hide a bug.
    Duplicate(String),
    /// The name is empty.
    EmptyName,
    /// The name starts with "rpc.", which JSON-RPC 2.0 reserves for
    /// rpc-internal methods.
    ReservedName(String),
    /// One signature names two params alike, so named params could not
    /// tell them apart.
    DuplicateParam {
        /// The method.
        method: String,
        /// The param named twice.
        param: String,
    },
}

impl fmt::Display for AddError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddError::Duplicate(name) => write!(f, "add method '{name}': name already registered"),
            AddError::EmptyName => write!(f, "add method: empty name"),
            AddError::ReservedName(name) => {
                write!(f, "add method '{name}': names starting with 'rpc.' are reserved")
            }
            AddError::DuplicateParam { method, param } => {
                write!(f, "add method '{method}': param '{param}' declared twice")
            }
        }
    }
}

impl std::error::Error for AddError {}

/// The methods a daemon answers, by name, with the introspection methods
/// (`system.listMethods`, `system.methodSignature`, `system.methodHelp`,
/// `system.getCapabilities`, `system.multicall`) and `rpc.discover` (the
/// OpenRPC document) always present.
pub struct Registry<C> {
    pub(super) methods: BTreeMap<String, Method<C>>,
    /// The most entries one `system.multicall` may run.
    pub(super) max_multicall: usize,
    /// The title and version `rpc.discover` describes the server with.
    pub(super) info: (String, String),
}

impl<C> Default for Registry<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> fmt::Debug for Registry<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.methods.values()).finish()
    }
}

impl<C> Registry<C> {
    /// A registry holding only the introspection methods.
    pub fn new() -> Self {
        let info = ("forkd".to_string(), env!("CARGO_PKG_VERSION").to_string());
        let mut registry = Registry { methods: BTreeMap::new(), max_multicall: 1000, info };
        // Not through `add`, which keeps the reserved "rpc." names for these.
        for method in introspection::methods() {
            let previous = registry.methods.insert(method.name.clone(), method);
            assert!(previous.is_none(), "built-in method names are unique");
        }
        registry
    }

    /// Sets the title and version that `rpc.discover` gives in its `info`
    /// (by default "forkd" and forkd's version).
    pub fn set_info(&mut self, title: impl Into<String>, version: impl Into<String>) {
        self.info = (title.into(), version.into());
    }

    /// Adds `method`.
    pub fn add(&mut self, method: Method<C>) -> Result<(), AddError> {
        if method.name.is_empty() {
            return Err(AddError::EmptyName);
        }
        if method.name.starts_with("rpc.") {
            return Err(AddError::ReservedName(method.name));
        }
        if self.methods.contains_key(&method.name) {
            return Err(AddError::Duplicate(method.name));
        }
        for signature in &method.signatures {
            for (i, (name, _)) in signature.params.iter().enumerate() {
                if signature.params[..i].iter().any(|(n, _)| n == name) {
                    return Err(AddError::DuplicateParam { method: method.name.clone(), param: name.clone() });
                }
            }
        }
        self.methods.insert(method.name.clone(), method);
        Ok(())
    }

    /// Sets the most entries one `system.multicall` may run (default
    /// 1000); a larger one is refused whole.
    pub fn set_max_multicall(&mut self, n: usize) {
        self.max_multicall = n;
    }

    /// The method called `name`.
    pub fn get(&self, name: &str) -> Option<&Method<C>> {
        self.methods.get(name)
    }

    /// The names of all methods, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.methods.keys().map(String::as_str)
    }

    /// Calls `method` with `params`: checks them against its signatures,
    /// then runs the handler. Unknown methods and params that fit no
    /// signature answer an error without running anything. A handler that
    /// panics answers an internal error (-32603): the panic is logged, and
    /// the daemon that dispatched the call runs on.
    pub fn dispatch(&mut self, ctx: &mut C, method: &str, params: Params) -> Reply {
        let Some(found) = self.methods.get_mut(method) else {
            return Reply::Error(RpcError::method_not_found(method));
        };
        let args = match found.bind(params) {
            Ok(args) => args,
            Err(error) => return Reply::Error(error),
        };
        let builtin = match &mut found.body {
            Body::User(handler) => {
                // The handler's state may be half-updated after a panic;
                // it is the user's, and only a daemon that runs on can
                // report it.
                let run = std::panic::AssertUnwindSafe(|| handler(ctx, &args));
                return match std::panic::catch_unwind(run) {
                    Ok(reply) => reply,
                    Err(panic) => {
                        log::error!("method {method} panicked: {}", panic_message(&*panic));
                        Reply::Error(RpcError::internal_error(format!("method {method} panicked")))
                    }
                };
            }
            Body::Builtin(builtin) => *builtin,
        };
        self.run_builtin(builtin, ctx, args)
    }
}

/// The message a panic carried, if it was a string.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}
