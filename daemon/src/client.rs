//! A blocking client for a forkd daemon's control socket, on std alone. It
//! speaks newline-delimited JSON-RPC 2.0: one request a line, one answer a
//! line. The console's `status`, `stop` and `call` use it, and so do tests.

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use forkd_os::Address;
use serde_json::{json, Value};

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl io::Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
        }
    }
}

/// A connection to a daemon.
pub struct Client {
    reader: BufReader<Stream>,
    next_id: u64,
    address: Address,
}

/// Why a call failed.
#[derive(Debug)]
pub enum ClientError {
    /// Connecting, writing or reading failed.
    Io(Address, io::Error),
    /// The daemon closed the connection before answering.
    Closed(Address),
    /// The answer was not a JSON-RPC 2.0 response.
    BadAnswer(String),
    /// The daemon answered with an error.
    Rpc { code: i64, message: String, data: Option<Value> },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(a, e) => write!(f, "{a}: {}", forkd_core::daemon::short_io(e)),
            ClientError::Closed(a) => write!(f, "{a}: the daemon closed the connection"),
            ClientError::BadAnswer(s) => write!(f, "bad answer: {s}"),
            ClientError::Rpc { code, message, .. } => write!(f, "{message} ({code})"),
        }
    }
}

impl std::error::Error for ClientError {}

impl Client {
    /// Connects to `address`; calls time out after `timeout`.
    pub fn connect(address: &Address, timeout: Duration) -> Result<Client, ClientError> {
        let err = |e| ClientError::Io(address.clone(), e);
        let stream = match address {
            Address::Unix(p) => {
                let s = UnixStream::connect(p).map_err(err)?;
                s.set_read_timeout(Some(timeout)).map_err(err)?;
                Stream::Unix(s)
            }
            Address::Tcp(a) => {
                let s = TcpStream::connect_timeout(a, timeout).map_err(err)?;
                s.set_read_timeout(Some(timeout)).map_err(err)?;
                s.set_nodelay(true).map_err(err)?;
                Stream::Tcp(s)
            }
        };
        Ok(Client { reader: BufReader::new(stream), next_id: 1, address: address.clone() })
    }

    /// Calls `method` with `params` (an array, an object, or null for none)
    /// and returns its result.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({ "jsonrpc": "2.0", "method": method, "id": id });
        if !params.is_null() {
            request["params"] = params;
        }
        let answer = self.round_trip(&request)?;
        decode(answer, id)
    }

    /// Sends several calls as one batch; the results in the calls' order.
    pub fn batch(&mut self, calls: &[(&str, Value)]) -> Result<Vec<Result<Value, ClientError>>, ClientError> {
        let first = self.next_id;
        let batch: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(i, (m, p))| {
                let mut r = json!({ "jsonrpc": "2.0", "method": m, "id": first + i as u64 });
                if !p.is_null() {
                    r["params"] = p.clone();
                }
                r
            })
            .collect();
        self.next_id += calls.len() as u64;
        let answer = self.round_trip(&Value::Array(batch))?;
        let Value::Array(items) = answer else { return Err(ClientError::BadAnswer(answer.to_string())) };
        let mut by_id: std::collections::BTreeMap<u64, Value> =
            items.into_iter().filter_map(|a| Some((a.get("id")?.as_u64()?, a))).collect();
        Ok((0..calls.len() as u64)
            .map(|i| match by_id.remove(&(first + i)) {
                Some(a) => decode(a, first + i),
                None => Err(ClientError::BadAnswer(format!("no answer for id {}", first + i))),
            })
            .collect())
    }

    fn round_trip(&mut self, request: &Value) -> Result<Value, ClientError> {
        let mut line = request.to_string();
        line.push('\n');
        let address = self.address.clone();
        let err = |e| ClientError::Io(address.clone(), e);
        self.reader.get_mut().write_all(line.as_bytes()).map_err(err)?;
        let mut answer = String::new();
        let n = self.reader.read_line(&mut answer).map_err(err)?;
        if n == 0 {
            return Err(ClientError::Closed(self.address.clone()));
        }
        serde_json::from_str(&answer).map_err(|e| ClientError::BadAnswer(format!("{e}: {}", answer.trim_end())))
    }
}

fn decode(answer: Value, id: u64) -> Result<Value, ClientError> {
    if answer.get("id").and_then(Value::as_u64) != Some(id) {
        return Err(ClientError::BadAnswer(format!("expected id {id}: {answer}")));
    }
    if let Some(e) = answer.get("error") {
        return Err(ClientError::Rpc {
            code: e.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: e.get("message").and_then(Value::as_str).unwrap_or("").to_string(),
            data: e.get("data").cloned(),
        });
    }
    answer.get("result").cloned().ok_or_else(|| ClientError::BadAnswer(answer.to_string()))
}
