//! A blocking client for a forkd daemon's control socket, on std alone. It
//! speaks newline-delimited JSON-RPC 2.0: one request a line, one answer a
//! line. The console's `status`, `stop` and `call` use it, and so do tests.
//!
//! On tcp the daemon wants a token before anything else, and the client
//! finds and presents it by itself, once, right after connecting: the token
//! given in [`ConnectOptions::token`], else `FORKD_TOKEN` from the
//! environment, else the content of [`ConnectOptions::token_file`]. The
//! file is read only if it is a regular file that neither group nor others
//! may access, and never through a symbolic link: the client sends what it
//! reads over the network, so a planted link or a file anyone could have
//! written would make it send someone else's secret, or a token that is no
//! secret. On a unix socket the daemon checks the peer's credentials
//! instead, and the client sends no token.
//!
//! A daemon closes a connection in an orderly way when it hands over to a
//! new master (`daemon.upgrade`) or when the connection was idle: it first
//! answers every request it has read. So a call whose connection ends
//! before any byte of its answer came back (end of file, a reset, a broken
//! pipe on the write) was not taken, and the client sends it once more on
//! a fresh connection, presenting the token again; a second failure is the
//! caller's. The one case this cannot tell apart is a daemon killed while
//! it ran the call: a call that must never run twice should not rely on the
//! retry being safe there. A timeout is never retried.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use forkd_core::rpc::codes::{METHOD_NOT_FOUND, UNAUTHORIZED};
use forkd_core::rpc::RpcError;
use forkd_os::real::{open_regular, OpenFor, OpenRegularError};
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

/// The environment variable a client takes the tcp token from when none is
/// given explicitly.
pub const TOKEN_ENV: &str = "FORKD_TOKEN";

/// The largest token file read; a token is 65 bytes.
const MAX_TOKEN_FILE: u64 = 4096;

/// A connection to a daemon.
pub struct Client {
    reader: BufReader<Stream>,
    next_id: u64,
    address: Address,
    /// How it connected, to connect again after an orderly close.
    options: ConnectOptions,
    /// `FORKD_TOKEN` as it was at the first connect.
    env_token: Option<OsString>,
    /// Whether a call unanswered on a closed connection is sent again.
    retry: bool,
    /// On tcp without a token: where the client looked for one (the token
    /// file, if any), to explain the daemon's refusal.
    no_token: Option<Option<PathBuf>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("address", &self.address).field("next_id", &self.next_id).finish()
    }
}

/// How [`Client::connect_with`] connects: a timeout for connecting and for
/// each answer, and on tcp where the token comes from.
///
/// ```no_run
/// use std::time::Duration;
/// use forkd::{Address, Client, ConnectOptions};
///
/// let address: Address = "tcp://127.0.0.1:10042".parse()?;
/// let options = ConnectOptions::new(Duration::from_secs(5)).token_file("/srv/echo/daemon.token");
/// let mut client = Client::connect_with(&address, &options)?;
/// println!("{}", client.call("daemon.info", forkd::Value::Null)?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ConnectOptions {
    timeout: Duration,
    token: Option<String>,
    token_file: Option<PathBuf>,
}

impl ConnectOptions {
    /// No token given: on tcp, `FORKD_TOKEN` if set, else none.
    pub fn new(timeout: Duration) -> ConnectOptions {
        ConnectOptions { timeout, token: None, token_file: None }
    }

    /// The token to present on tcp, before `FORKD_TOKEN` and the token
    /// file (which is then not read).
    pub fn token(mut self, token: impl Into<String>) -> ConnectOptions {
        self.token = Some(token.into());
        self
    }

    /// The file to read the token from on tcp when neither [`token`]
    /// nor `FORKD_TOKEN` gives one, e.g. [`Config::token_path`].
    ///
    /// [`token`]: ConnectOptions::token
    /// [`Config::token_path`]: crate::Config::token_path
    pub fn token_file(mut self, path: impl Into<PathBuf>) -> ConnectOptions {
        self.token_file = Some(path.into());
        self
    }

    /// The same options with another timeout (connecting, and each
    /// answer): a call that waits for something slow, like a rolling
    /// reload, wants a longer one.
    pub fn timeout(mut self, timeout: Duration) -> ConnectOptions {
        self.timeout = timeout;
        self
    }
}

/// The token itself is left out: a `Debug` print may end up in a log.
impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("timeout", &self.timeout)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("token_file", &self.token_file)
            .finish()
    }
}

/// Where the token a client presented came from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenSource {
    /// [`ConnectOptions::token`] (the console's `--token`).
    Given,
    /// The `FORKD_TOKEN` environment variable.
    Env,
    /// A token file.
    File(PathBuf),
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Given => f.write_str("the given token"),
            TokenSource::Env => write!(f, "the token in {TOKEN_ENV}"),
            TokenSource::File(p) => write!(f, "the token in {}", p.display()),
        }
    }
}

/// Why a token file was not used.
#[derive(Debug)]
#[non_exhaustive]
pub enum TokenFileError {
    /// The path is a symbolic link, which is never followed.
    Symlink,
    /// The path is not a regular file.
    NotRegular,
    /// Group or others may access the file (its permission bits).
    Exposed(u32),
    /// The file is larger than a token file can be.
    TooLarge,
    /// The file holds no token, or bytes that are not text.
    Malformed,
    /// Opening or reading the file failed.
    Io(io::Error),
}

impl fmt::Display for TokenFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenFileError::Symlink => f.write_str("is a symbolic link"),
            TokenFileError::NotRegular => f.write_str("is not a regular file"),
            TokenFileError::Exposed(mode) => {
                write!(f, "may be read by group or others (mode {:04o}): chmod 600 it", mode & 0o7777)
            }
            TokenFileError::TooLarge => write!(f, "is larger than {MAX_TOKEN_FILE} bytes"),
            TokenFileError::Malformed => f.write_str("holds no token"),
            TokenFileError::Io(e) => f.write_str(&forkd_core::daemon::short_io(e)),
        }
    }
}

impl std::error::Error for TokenFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TokenFileError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Why a call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// Connecting, writing or reading failed.
    Io(Address, io::Error),
    /// The daemon closed the connection before answering.
    Closed(Address),
    /// The answer was not a JSON-RPC 2.0 response.
    BadAnswer(String),
    /// The params could not be serialized into JSON; nothing was sent.
    BadRequest(String),
    /// The daemon answered with an error.
    Rpc(RpcError),
    /// The token file exists but was refused; nothing was sent. An
    /// explicit token or `FORKD_TOKEN` would have been used instead.
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        error: TokenFileError,
    },
    /// The daemon wants a token and the client found none: no explicit
    /// token, no `FORKD_TOKEN`, and no token file it could read (`token_file`
    /// is where it looked, if anywhere).
    NoToken {
        /// The daemon's address.
        address: Address,
        /// The token file the client looked for.
        token_file: Option<PathBuf>,
    },
    /// The daemon refused the token the client presented.
    TokenRefused {
        /// The daemon's address.
        address: Address,
        /// Where the token came from.
        from: TokenSource,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(a, e) => write!(f, "{a}: {}", forkd_core::daemon::short_io(e)),
            ClientError::Closed(a) => write!(f, "{a}: the daemon closed the connection"),
            ClientError::BadAnswer(s) => write!(f, "bad answer: {s}"),
            ClientError::BadRequest(s) => write!(f, "bad request: {s}"),
            ClientError::Rpc(e) => write!(f, "{} ({})", e.message, e.code),
            ClientError::TokenFile { path, error } => write!(f, "token file {}: {error}", path.display()),
            ClientError::NoToken { address, token_file: Some(p) } => {
                write!(f, "{address}: no token: pass --token, set {TOKEN_ENV}, or read access to {}", p.display())
            }
            ClientError::NoToken { address, token_file: None } => {
                write!(f, "{address}: no token: pass --token or set {TOKEN_ENV}")
            }
            ClientError::TokenRefused { address, from } => write!(f, "{address}: {from} is refused"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Io(_, e) => Some(e),
            ClientError::TokenFile { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// What the token lookup found.
#[derive(Debug, PartialEq, Eq)]
enum Lookup {
    Found(String, TokenSource),
    /// None; where the client looked for a file, if anywhere.
    Missing(Option<PathBuf>),
}

/// Finds the token: `given`, else `env` (the value of `FORKD_TOKEN`, taken
/// as an argument so that tests need not touch the process's environment),
/// else the file. A missing or unreadable file is no token, not an error:
/// the daemon may serve without one, and if it does not, its refusal is
/// explained then.
fn find_token(given: Option<&str>, env: Option<OsString>, file: Option<&Path>) -> Result<Lookup, ClientError> {
    if let Some(t) = given {
        return Ok(Lookup::Found(t.to_string(), TokenSource::Given));
    }
    if let Some(t) = env.map(|v| v.to_string_lossy().trim().to_string()).filter(|t| !t.is_empty()) {
        return Ok(Lookup::Found(t, TokenSource::Env));
    }
    let Some(path) = file else { return Ok(Lookup::Missing(None)) };
    match read_token_file(path) {
        Ok(Some(t)) => Ok(Lookup::Found(t, TokenSource::File(path.to_path_buf()))),
        Ok(None) => Ok(Lookup::Missing(Some(path.to_path_buf()))),
        Err(error) => Err(ClientError::TokenFile { path: path.to_path_buf(), error }),
    }
}

/// The trimmed content of a token file; `None` if it does not exist or may
/// not be read. It is opened without following a final symbolic link, and
/// without blocking on a FIFO, then checked on the open descriptor, so that
/// it cannot be swapped between the check and the read.
fn read_token_file(path: &Path) -> Result<Option<String>, TokenFileError> {
    let (file, meta) = match open_regular(path, OpenFor::Read) {
        Ok(opened) => opened,
        Err(OpenRegularError::Io(e))
            if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied) =>
        {
            return Ok(None)
        }
        Err(OpenRegularError::Symlink) => return Err(TokenFileError::Symlink),
        Err(OpenRegularError::NotRegular) => return Err(TokenFileError::NotRegular),
        Err(OpenRegularError::Io(e)) => return Err(TokenFileError::Io(e)),
        Err(e) => return Err(TokenFileError::Io(io::Error::other(e))),
    };
    if meta.mode() & 0o077 != 0 {
        return Err(TokenFileError::Exposed(meta.mode()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_TOKEN_FILE + 1).read_to_end(&mut bytes).map_err(TokenFileError::Io)?;
    if bytes.len() as u64 > MAX_TOKEN_FILE {
        return Err(TokenFileError::TooLarge);
    }
    match String::from_utf8(bytes) {
        Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
        _ => Err(TokenFileError::Malformed),
    }
}

impl Client {
    /// Connects to `address`; calls time out after `timeout`. On tcp it
    /// presents the token in `FORKD_TOKEN`, if set; see
    /// [`Client::connect_with`] to give a token or a token file.
    pub fn connect(address: &Address, timeout: Duration) -> Result<Client, ClientError> {
        Client::connect_with(address, &ConnectOptions::new(timeout))
    }

    /// Connects to `address` with these options. On tcp it then
    /// authenticates with the first token found: [`ConnectOptions::token`],
    /// `FORKD_TOKEN`, the content of [`ConnectOptions::token_file`]. With
    /// none it connects anyway, for a daemon that serves tcp without a
    /// token; if the daemon wants one, calls fail with
    /// [`ClientError::NoToken`].
    pub fn connect_with(address: &Address, options: &ConnectOptions) -> Result<Client, ClientError> {
        Client::connect_env(address, options, std::env::var_os(TOKEN_ENV))
    }

    /// [`Client::connect_with`], given the value of `FORKD_TOKEN`.
    fn connect_env(address: &Address, options: &ConnectOptions, env: Option<OsString>) -> Result<Client, ClientError> {
        // Looked up before connecting: a refused token file is the user's to
        // fix, whether or not a daemon runs.
        let lookup = match address {
            Address::Unix(_) => None,
            Address::Tcp(_) => Some(find_token(options.token.as_deref(), env.clone(), options.token_file.as_deref())?),
        };
        let timeout = options.timeout;
        let err = |e| ClientError::Io(address.clone(), e);
        let stream = match address {
            Address::Unix(p) => {
                let s = forkd_os::real::connect_unix_timeout(p, timeout).map_err(err)?;
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
        let mut client = Client {
            reader: BufReader::new(stream),
            next_id: 1,
            address: address.clone(),
            options: options.clone(),
            env_token: env,
            // Not while it authenticates: a daemon that closes at once
            // must not make a reconnect loop.
            retry: false,
            no_token: None,
        };
        match lookup {
            None => {}
            Some(Lookup::Missing(file)) => client.no_token = Some(file),
            Some(Lookup::Found(token, source)) => client.authenticate(&token, source)?,
        }
        client.retry = true;
        Ok(client)
    }

    /// Whether a call whose connection closed before any byte of its answer
    /// came is sent once more on a fresh connection (the default). That is
    /// safe when the daemon closed it in an orderly way, having answered
    /// all it read; a call that must not run twice, even when the daemon
    /// was killed while it ran it, turns this off: the `upgrade` and
    /// `reload` commands do.
    pub fn set_retry(&mut self, retry: bool) {
        self.retry = retry;
    }

    /// A fresh connection in place of one the daemon closed; the ids go on.
    fn reconnect(&mut self) -> Result<(), ClientError> {
        let fresh = Client::connect_env(&self.address, &self.options, self.env_token.clone())?;
        let next_id = self.next_id.max(fresh.next_id);
        *self = fresh;
        self.next_id = next_id;
        Ok(())
    }

    /// Presents the token. A daemon that does not know `rpc.authenticate`
    /// predates tokens and checks none, so its "method not found" is no
    /// failure.
    fn authenticate(&mut self, token: &str, source: TokenSource) -> Result<(), ClientError> {
        match self.call("rpc.authenticate", json!({ "token": token })) {
            Ok(Value::Bool(true)) => Ok(()),
            Ok(other) => Err(ClientError::BadAnswer(format!("rpc.authenticate answered {other}"))),
            Err(ClientError::Rpc(RpcError { code: UNAUTHORIZED, .. })) => {
                Err(ClientError::TokenRefused { address: self.address.clone(), from: source })
            }
            Err(ClientError::Rpc(RpcError { code: METHOD_NOT_FOUND, .. })) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A refusal for want of a token, told as one, with where the client
    /// looked.
    fn explain(&self, e: ClientError) -> ClientError {
        match (e, &self.no_token) {
            (ClientError::Rpc(RpcError { code: UNAUTHORIZED, .. }), Some(file)) => {
                ClientError::NoToken { address: self.address.clone(), token_file: file.clone() }
            }
            (e, _) => e,
        }
    }

    /// Calls `method` with `params` and returns its result. `params` is
    /// anything that serializes to an array (by position) or an object (by
    /// name); `()` (or `Value::Null`) sends none.
    pub fn call(&mut self, method: &str, params: impl serde::Serialize) -> Result<Value, ClientError> {
        let params =
            serde_json::to_value(params).map_err(|e| ClientError::BadRequest(format!("params of {method}: {e}")))?;
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({ "jsonrpc": "2.0", "method": method, "id": id });
        if !params.is_null() {
            request["params"] = params;
        }
        let answer = self.round_trip(&request)?;
        decode(answer, id).map_err(|e| self.explain(e))
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
        let items = match answer {
            Value::Array(items) => items,
            // A batch refused as a whole gets one error, without an id.
            Value::Object(ref o) if o.contains_key("error") => return Err(self.explain(error_of(&answer))),
            _ => return Err(ClientError::BadAnswer(answer.to_string())),
        };
        let mut by_id: std::collections::BTreeMap<u64, Value> =
            items.into_iter().filter_map(|a| Some((a.get("id")?.as_u64()?, a))).collect();
        Ok((0..calls.len() as u64)
            .map(|i| match by_id.remove(&(first + i)) {
                Some(a) => decode(a, first + i).map_err(|e| self.explain(e)),
                None => Err(ClientError::BadAnswer(format!("no answer for id {}", first + i))),
            })
            .collect())
    }

    fn round_trip(&mut self, request: &Value) -> Result<Value, ClientError> {
        let mut line = request.to_string();
        line.push('\n');
        match self.exchange(&line) {
            Err(Attempt::Unanswered(_)) if self.retry => {
                log::debug!("{}: closed before answering: connecting again", self.address);
                self.reconnect()?;
                self.exchange(&line).map_err(Attempt::into_error)
            }
            result => result.map_err(Attempt::into_error),
        }
    }

    /// Sends one request line and reads its answer.
    fn exchange(&mut self, line: &str) -> Result<Value, Attempt> {
        use io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, NotConnected};
        let address = self.address.clone();
        let fail = |e: io::Error| {
            let error = ClientError::Io(address.clone(), e);
            match &error {
                ClientError::Io(_, e)
                    if matches!(e.kind(), BrokenPipe | ConnectionReset | ConnectionAborted | NotConnected) =>
                {
                    Attempt::Unanswered(error)
                }
                _ => Attempt::Failed(error),
            }
        };
        self.reader.get_mut().write_all(line.as_bytes()).map_err(fail)?;
        let mut answer = String::new();
        let n = self.reader.read_line(&mut answer).map_err(|e| match answer.is_empty() {
            true => fail(e),
            false => Attempt::Failed(ClientError::Io(address.clone(), e)),
        })?;
        if n == 0 {
            return Err(Attempt::Unanswered(ClientError::Closed(self.address.clone())));
        }
        serde_json::from_str(&answer)
            .map_err(|e| Attempt::Failed(ClientError::BadAnswer(format!("{e}: {}", answer.trim_end()))))
    }
}

/// How one exchange failed: before any byte of the answer came back on a
/// connection the daemon closed (safe to send again), or otherwise.
enum Attempt {
    Unanswered(ClientError),
    Failed(ClientError),
}

impl Attempt {
    fn into_error(self) -> ClientError {
        match self {
            Attempt::Unanswered(e) | Attempt::Failed(e) => e,
        }
    }
}

fn decode(answer: Value, id: u64) -> Result<Value, ClientError> {
    if answer.get("id").and_then(Value::as_u64) != Some(id) {
        return Err(ClientError::BadAnswer(format!("expected id {id}: {answer}")));
    }
    if answer.get("error").is_some() {
        return Err(error_of(&answer));
    }
    answer.get("result").cloned().ok_or_else(|| ClientError::BadAnswer(answer.to_string()))
}

/// The error of an answer that has one.
fn error_of(answer: &Value) -> ClientError {
    let e = &answer["error"];
    ClientError::Rpc(RpcError {
        code: e.get("code").and_then(Value::as_i64).unwrap_or(0),
        message: e.get("message").and_then(Value::as_str).unwrap_or("").to_string(),
        data: e.get("data").cloned(),
    })
}

mod events;
pub use events::Events;

#[cfg(test)]
mod tests;
