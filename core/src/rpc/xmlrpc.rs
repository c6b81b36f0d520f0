//! XML-RPC: `<methodCall>` in, `<methodResponse>` out.
//!
//! A call becomes a method name and positional params in the shared value
//! model (see [`value`]), so XML-RPC clients reach the same
//! registry as JSON-RPC ones. Every type of the spec round-trips:
//! `dateTime.iso8601` and `base64` become tagged values and are written
//! back as themselves, `<i8>` and `<nil/>` (the common extensions) are
//! read and written, a `<value>` without a type is a string. Parsing goes through quick-xml for
//! well-formedness and entities, then a small recursive descent over the
//! element stream checks the XML-RPC grammar; nesting is bounded so that a
//! megabyte of `<array>` cannot exhaust the stack. A document is UTF-8, or
//! ISO-8859-1 when its declaration says so. A `<struct>` whose only member
//! has the name of a tag is refused: it would read as a typed value.
//!
//! Errors follow the de-facto "faults_interop" codes: XML that is not
//! well-formed is -32700, well-formed XML that is not an XML-RPC call is
//! -32600. Either way the answer is a fault, never a dropped connection:
//! XML-RPC has no other way to report a failure. A fault quotes at most a
//! few dozen characters of the input (see [`quote`]).

use quick_xml::events::Event;
use quick_xml::Reader;

use super::error::{clip, quote, RpcError};
use super::value::{self, Map, Typed, Value};

/// How deeply arrays and structs may nest in a call, like serde_json's
/// own recursion limit.
const MAX_DEPTH: usize = 128;

/// A decoded `<methodCall>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The `<methodName>`, trimmed.
    pub method: String,
    /// The `<params>`, in order.
    pub params: Vec<Value>,
}

/// How many characters of a message from the XML parser an error keeps:
/// such a message may quote names of the input, which have no bound.
const MAX_XML_ERROR: usize = 256;

/// Decodes a `<methodCall>` document, in UTF-8 or, when its declaration
/// says so, ISO-8859-1 (see `document_text`).
pub fn decode_call(bytes: &[u8]) -> Result<Call, RpcError> {
    let text = document_text(bytes)?;
    let mut parser = Parser { tokens: tokenize(&text)?, pos: 0 };
    parser.call()
}

/// The text of a document: UTF-8 unless its XML declaration names
/// ISO-8859-1 (Latin-1), which Python's `ServerProxy(..., encoding=...)`
/// sends and which maps byte for byte to the first 256 code points.
/// US-ASCII is UTF-8's subset; any other encoding is refused (-32700).
fn document_text(bytes: &[u8]) -> Result<std::borrow::Cow<'_, str>, RpcError> {
    let utf8 = || {
        std::str::from_utf8(bytes)
            .map(std::borrow::Cow::Borrowed)
            .map_err(|_| RpcError::parse_error("invalid xml: not utf-8"))
    };
    let Some(encoding) = declared_encoding(bytes) else {
        return utf8();
    };
    match encoding.to_ascii_lowercase().as_str() {
        "utf-8" | "utf8" | "us-ascii" | "ascii" => utf8(),
        "iso-8859-1" | "iso8859-1" | "iso_8859-1" | "latin-1" | "latin1" | "l1" => {
            Ok(std::borrow::Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()))
        }
        other => Err(RpcError::parse_error(format!(
            "invalid xml: encoding '{}' is not supported, only UTF-8 and ISO-8859-1",
            quote(other)
        ))),
    }
}

/// The `encoding` of the XML declaration that opens `bytes`, if any.
fn declared_encoding(bytes: &[u8]) -> Option<String> {
    let head = bytes.strip_prefix(b"<?xml")?;
    let end = head.windows(2).position(|w| w == b"?>")?;
    let decl = std::str::from_utf8(&head[..end]).ok()?;
    let rest = decl[decl.find("encoding")? + "encoding".len()..].trim_start().strip_prefix('=')?.trim_start();
    let quote_char = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = &rest[1..];
    Some(value[..value.find(quote_char)?].to_string())
}

/// The response carrying `value`.
pub fn encode_response(value: &Value) -> String {
    let mut out = String::from(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    out.push_str("<methodResponse><params><param>");
    write_value(&mut out, value);
    out.push_str("</param></params></methodResponse>");
    out
}

/// The fault response for `error` (its `data` has no place in XML-RPC).
pub fn encode_fault(error: &RpcError) -> String {
    let mut out = String::from(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    out.push_str("<methodResponse><fault><value><struct>");
    out.push_str("<member><name>faultCode</name>");
    write_value(&mut out, &Value::from(error.code));
    out.push_str("</member><member><name>faultString</name>");
    write_value(&mut out, &Value::from(error.message.as_str()));
    out.push_str("</member></struct></value></fault></methodResponse>");
    out
}

/// The response for either outcome.
pub fn encode(outcome: &Result<Value, RpcError>) -> String {
    match outcome {
        Ok(value) => encode_response(value),
        Err(error) => encode_fault(error),
    }
}

fn write_value(out: &mut String, value: &Value) {
    out.push_str("<value>");
    match value {
        Value::Null => out.push_str("<nil/>"),
        Value::Bool(b) => out.push_str(if *b { "<boolean>1</boolean>" } else { "<boolean>0</boolean>" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                if i32::try_from(i).is_ok() {
                    out.push_str(&format!("<int>{i}</int>"));
                } else {
                    out.push_str(&format!("<i8>{i}</i8>"));
                }
            } else {
                // Past i64::MAX an integer fits no XML-RPC integer type.
                let f = n.as_f64().unwrap_or(f64::NAN);
                out.push_str(&format!("<double>{}</double>", format_double(f)));
            }
        }
        Value::String(s) => {
            out.push_str("<string>");
            escape_into(out, s);
            out.push_str("</string>");
        }
        Value::Array(items) => {
            out.push_str("<array><data>");
            for item in items {
                write_value(out, item);
            }
            out.push_str("</data></array>");
        }
        Value::Object(members) => {
            if let Some((kind, text)) = value::typed(value) {
                write_typed(out, kind, &text);
                out.push_str("</value>");
                return;
            }
            out.push_str("<struct>");
            for (name, member) in members {
                out.push_str("<member><name>");
                escape_into(out, name);
                out.push_str("</name>");
                write_value(out, member);
                out.push_str("</member>");
            }
            out.push_str("</struct>");
        }
    }
    out.push_str("</value>");
}

/// A tagged date-time or byte string, given its canonical text, as its
/// own XML-RPC type: a date-time in the spec's basic form.
fn write_typed(out: &mut String, kind: Typed, text: &str) {
    match kind {
        Typed::DateTime => {
            let basic = text.parse::<value::DateTime>().map(|t| t.to_xmlrpc()).unwrap_or_default();
            out.push_str(&format!("<dateTime.iso8601>{basic}</dateTime.iso8601>"));
        }
        Typed::Base64 => {
            out.push_str("<base64>");
            out.push_str(text);
            out.push_str("</base64>");
        }
    }
}

/// A double in the XML-RPC grammar: digits, a point, digits; no exponent.
/// Rust's `Display` for `f64` already writes no exponent; it only omits the
/// point for integral values.
fn format_double(f: f64) -> String {
    let mut s = f.to_string();
    if !s.contains('.') && f.is_finite() {
        s.push_str(".0");
    }
    s
}

/// Escapes text content. Characters XML 1.0 cannot carry at all (most C0
/// controls, U+FFFE, U+FFFF) become U+FFFD so that the document stays
/// well-formed; `\r` is written as a reference so that parsers keep it.
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(c),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => out.push('\u{fffd}'),
            _ => out.push(c),
        }
    }
}

/// The element stream of a document, reduced to what the grammar needs.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Start(String),
    End(String),
    /// Character data, entities resolved, adjacent pieces (text, CDATA)
    /// merged.
    Text(String),
    Eof,
}

fn tokenize(text: &str) -> Result<Vec<Token>, RpcError> {
    let bad_xml = |e: &dyn std::fmt::Display| {
        RpcError::parse_error(format!("invalid xml: {}", clip(&e.to_string(), MAX_XML_ERROR)))
    };
    let mut reader = Reader::from_str(text);
    let config = reader.config_mut();
    config.expand_empty_elements = true;
    config.enable_all_checks(true);
    let mut tokens = Vec::new();
    let push_text = |tokens: &mut Vec<Token>, piece: &str| match tokens.last_mut() {
        Some(Token::Text(text)) => text.push_str(piece),
        _ => tokens.push(Token::Text(piece.to_string())),
    };
    loop {
        match reader.read_event().map_err(|e| bad_xml(&e))? {
            Event::Start(e) => tokens.push(Token::Start(local_name(e.local_name().as_ref()))),
            Event::End(e) => tokens.push(Token::End(local_name(e.local_name().as_ref()))),
            // Not produced with expand_empty_elements, but harmless.
            Event::Empty(e) => {
                let name = local_name(e.local_name().as_ref());
                tokens.push(Token::Start(name.clone()));
                tokens.push(Token::End(name));
            }
            Event::Text(e) => {
                let piece = e.unescape().map_err(|e| bad_xml(&e))?;
                push_text(&mut tokens, &piece);
            }
            Event::CData(e) => {
                let raw = e.into_inner();
                let piece = std::str::from_utf8(&raw).map_err(|e| bad_xml(&e))?;
                push_text(&mut tokens, piece);
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
            Event::Eof => {
                tokens.push(Token::Eof);
                return Ok(tokens);
            }
        }
    }
}

fn local_name(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(token: &Token) -> String {
    match token {
        Token::Start(name) => format!("<{}>", quote(name)),
        Token::End(name) => format!("</{}>", quote(name)),
        Token::Text(_) => "text".to_string(),
        Token::Eof => "end of document".to_string(),
    }
}

/// Refuses a struct whose only member bears the name of a tagged value
/// (see [`value`](super::value)): inside the daemon it would be that
/// date-time or byte string, not the struct the client sent.
fn reserved_member(members: &Map<String, Value>) -> Result<(), RpcError> {
    match members.keys().next() {
        Some(name) if members.len() == 1 && (name == value::DATETIME_TAG || name == value::BASE64_TAG) => {
            Err(RpcError::invalid_request(format!(
                "a struct whose only member is '{name}' is refused: the name is reserved for forkd's typed values"
            )))
        }
        _ => Ok(()),
    }
}

fn not_xmlrpc(message: String) -> RpcError {
    RpcError::invalid_request(format!("not an xml-rpc call: {message}"))
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        // The stream always ends with Eof, and nothing moves past it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn bump(&mut self) {
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
    }

    /// Skips whitespace between elements.
    fn skip_space(&mut self) {
        while let Token::Text(text) = self.peek() {
            if !text.trim().is_empty() {
                break;
            }
            self.bump();
        }
    }

    fn at_start(&mut self, name: &str) -> bool {
        self.skip_space();
        matches!(self.peek(), Token::Start(n) if n == name)
    }

    fn expect(&mut self, want: Token) -> Result<(), RpcError> {
        self.skip_space();
        if *self.peek() == want {
            self.bump();
            Ok(())
        } else {
            Err(self.unexpected(&describe(&want)))
        }
    }

    /// The error for finding the current token where `want` should be.
    /// quick-xml checks that tags match but not that the document ends
    /// where its root does: those two cases are still not well-formed XML.
    fn unexpected(&self, want: &str) -> RpcError {
        match self.peek() {
            Token::Eof => RpcError::parse_error("invalid xml: unexpected end of document"),
            _ if want == describe(&Token::Eof) => RpcError::parse_error("invalid xml: content after the root element"),
            found => not_xmlrpc(format!("expected {want}, found {}", describe(found))),
        }
    }

    fn start(&mut self, name: &str) -> Result<(), RpcError> {
        self.expect(Token::Start(name.to_string()))
    }

    fn end(&mut self, name: &str) -> Result<(), RpcError> {
        self.expect(Token::End(name.to_string()))
    }

    /// The text up to the next tag, possibly empty.
    fn text(&mut self) -> String {
        match self.peek() {
            Token::Text(text) => {
                let text = text.clone();
                self.bump();
                text
            }
            _ => String::new(),
        }
    }

    /// The text of a scalar element, up to and including its end tag.
    fn scalar(&mut self, name: &str) -> Result<String, RpcError> {
        let text = self.text();
        self.end(name)?;
        Ok(text)
    }

    fn call(&mut self) -> Result<Call, RpcError> {
        self.start("methodCall")?;
        self.start("methodName")?;
        let method = self.scalar("methodName")?.trim().to_string();
        if method.is_empty() {
            return Err(not_xmlrpc("empty <methodName>".to_string()));
        }
        let mut params = Vec::new();
        if self.at_start("params") {
            self.bump();
            while self.at_start("param") {
                self.bump();
                params.push(self.value(0)?);
                self.end("param")?;
            }
            self.end("params")?;
        }
        self.end("methodCall")?;
        self.expect(Token::Eof)?;
        Ok(Call { method, params })
    }

    fn value(&mut self, depth: usize) -> Result<Value, RpcError> {
        if depth > MAX_DEPTH {
            return Err(not_xmlrpc(format!("values nested over {MAX_DEPTH} deep")));
        }
        self.start("value")?;
        // A bare `<value>text</value>` is a string; otherwise the text
        // around the typed element is only whitespace.
        let text = self.text();
        if *self.peek() == Token::End("value".to_string()) {
            self.bump();
            return Ok(Value::String(text));
        }
        if !text.trim().is_empty() {
            return Err(not_xmlrpc("text mixed with a typed value".to_string()));
        }
        let ty = match self.peek() {
            Token::Start(ty) => ty.clone(),
            _ => return Err(self.unexpected("a value")),
        };
        self.bump();
        let value = self.typed(&ty, depth)?;
        self.end("value")?;
        Ok(value)
    }

    fn typed(&mut self, ty: &str, depth: usize) -> Result<Value, RpcError> {
        let invalid = |text: &str| not_xmlrpc(format!("invalid <{ty}> '{}'", quote(text.trim())));
        match ty {
            "string" => Ok(Value::String(self.scalar(ty)?)),
            "int" | "i4" | "i8" => {
                let text = self.scalar(ty)?;
                let n: i64 = text.trim().parse().map_err(|_| invalid(&text))?;
                Ok(Value::from(n))
            }
            "boolean" => {
                let text = self.scalar(ty)?;
                match text.trim() {
                    "1" | "true" => Ok(Value::Bool(true)),
                    "0" | "false" => Ok(Value::Bool(false)),
                    _ => Err(invalid(&text)),
                }
            }
            "double" => {
                let text = self.scalar(ty)?;
                let f: f64 = text.trim().parse().map_err(|_| invalid(&text))?;
                serde_json::Number::from_f64(f).map(Value::Number).ok_or_else(|| invalid(&text))
            }
            "dateTime.iso8601" => {
                let text = self.scalar(ty)?;
                text.trim().parse().map(|t| value::datetime(&t)).map_err(|_| invalid(&text))
            }
            "base64" => {
                // Peers break long base64 into lines (Python every 76
                // characters): the breaks are not part of the data.
                let text = self.scalar(ty)?;
                let packed: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                value::base64_decode(&packed).map(|data| value::bytes(&data)).ok_or_else(|| invalid(&text))
            }
            "nil" => {
                let text = self.scalar(ty)?;
                if text.trim().is_empty() {
                    Ok(Value::Null)
                } else {
                    Err(invalid(&text))
                }
            }
            "array" => {
                self.start("data")?;
                let mut items = Vec::new();
                while self.at_start("value") {
                    items.push(self.value(depth + 1)?);
                }
                self.end("data")?;
                self.end("array")?;
                Ok(Value::Array(items))
            }
            "struct" => {
                let mut members = Map::new();
                while self.at_start("member") {
                    self.bump();
                    self.start("name")?;
                    let name = self.scalar("name")?;
                    let value = self.value(depth + 1)?;
                    self.end("member")?;
                    members.insert(name, value);
                }
                self.end("struct")?;
                reserved_member(&members)?;
                Ok(Value::Object(members))
            }
            other => Err(not_xmlrpc(format!("unknown type <{}>", quote(other)))),
        }
    }
}
