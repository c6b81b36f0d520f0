//! The `describe` subcommand: the daemon's OpenRPC document, as
//! `rpc.discover` answers it, printed whole (JSON) or as a readable list of
//! its methods (`--text`), one line per signature with its description and
//! the errors it may answer beneath.

use forkd_os::Address;
use serde_json::Value;

use crate::cli::{call_failed, connect};
use crate::client::ConnectOptions;

/// The errors every method may answer, said once at the top of `--text`.
const COMMON: [i64; 2] = [forkd_core::rpc::codes::INVALID_PARAMS, forkd_core::rpc::codes::INTERNAL_ERROR];

/// Asks the daemon at `address` for its document and prints it; the exit
/// code as the other control subcommands have it.
pub(crate) fn describe(address: &Address, options: &ConnectOptions, text: bool) -> u8 {
    let mut client = match connect(address, options) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.call("rpc.discover", Value::Null) {
        Ok(document) if text => {
            print!("{}", render_text(&document));
            0
        }
        Ok(document) => {
            println!("{}", serde_json::to_string_pretty(&document).unwrap_or_default());
            0
        }
        Err(e) => {
            call_failed(address, &e);
            1
        }
    }
}

/// The type of a schema as the document titles it (XML-RPC's name), or
/// the `|` of the alternatives of a `oneOf`.
fn type_of(schema: &Value) -> String {
    match schema.get("oneOf").and_then(Value::as_array) {
        Some(alternatives) => alternatives.iter().map(type_of).collect::<Vec<_>>().join("|"),
        None => schema.get("title").and_then(Value::as_str).unwrap_or("mixed").to_string(),
    }
}

/// `name(param: type, ...) -> type` for each way to call `method`.
fn signatures(method: &Value) -> Vec<String> {
    let name = method["name"].as_str().unwrap_or("?");
    let line = |params: &[Value], result: &Value, mark_optional: bool| {
        let params: Vec<String> = params
            .iter()
            .map(|p| {
                let optional = mark_optional && p["required"] == Value::Bool(false);
                format!(
                    "{}{}: {}",
                    p["name"].as_str().unwrap_or("?"),
                    if optional { "?" } else { "" },
                    type_of(&p["schema"])
                )
            })
            .collect();
        format!("{name}({}) -> {}", params.join(", "), type_of(result))
    };
    match method.get("x-signatures").and_then(Value::as_array) {
        Some(all) => {
            all.iter().map(|s| line(s["params"].as_array().map_or(&[], Vec::as_slice), &s["result"], false)).collect()
        }
        None => vec![line(method["params"].as_array().map_or(&[], Vec::as_slice), &method["result"]["schema"], true)],
    }
}

/// The `--text` rendering of an OpenRPC document.
pub(crate) fn render_text(document: &Value) -> String {
    let info = &document["info"];
    let mut out = format!(
        "{} {} (OpenRPC {})\n",
        info["title"].as_str().unwrap_or("daemon"),
        info["version"].as_str().unwrap_or("?"),
        document["openrpc"].as_str().unwrap_or("?"),
    );
    out.push_str("Any method may also answer -32602 (invalid params) and -32603 (internal error).\n");
    for method in document["methods"].as_array().map_or(&[][..], Vec::as_slice) {
        out.push('\n');
        for signature in signatures(method) {
            out.push_str(&signature);
            out.push('\n');
        }
        if let Some(description) = method["description"].as_str() {
            out.push_str(&format!("    {description}\n"));
        }
        let errors: Vec<String> = method["errors"]
            .as_array()
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .filter(|e| !COMMON.contains(&e["code"].as_i64().unwrap_or(0)))
            .map(|e| format!("{} {}", e["code"], e["message"].as_str().unwrap_or("")))
            .collect();
        if !errors.is_empty() {
            out.push_str(&format!("    errors: {}\n", errors.join("; ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::render_text;

    #[test]
    fn text_lists_each_signature_with_its_description_and_errors() {
        let document = json!({
            "openrpc": "1.3.2",
            "info": {"title": "Echo Daemon", "version": "0.1.0"},
            "methods": [
                {
                    "name": "my.echo",
                    "description": "I'm here to reply your data",
                    "params": [{"name": "message", "required": true, "schema": {"title": "string", "type": "string"}}],
                    "result": {"name": "result", "schema": {"title": "string", "type": "string"}},
                    "errors": [
                        {"code": -32602, "message": "The params fit no signature of the method"},
                        {"code": -32001, "message": "No worker of that name"},
                    ],
                },
                {
                    "name": "worker.pause",
                    "params": [{"name": "name", "required": false, "schema": {"title": "string"}}],
                    "result": {"name": "result", "schema": {"oneOf": [{"title": "struct"}, {"title": "boolean"}]}},
                    "errors": [],
                    "x-signatures": [
                        {"params": [], "result": {"title": "struct"}},
                        {"params": [{"name": "name", "schema": {"title": "string"}}], "result": {"title": "boolean"}},
                    ],
                },
            ],
        });
        insta::assert_snapshot!(render_text(&document));
    }
}
