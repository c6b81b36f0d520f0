//! Who may call on a connection: the browser checks every HTTP request
//! passes, the token (an `Authorization` header, or `rpc.authenticate` on
//! newline-delimited JSON), and what a refusal costs the connection.

use super::*;

/// Who may use a connection: shared by all the connections of one
/// transport.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The token a client must present; `None` when none is needed (a unix
    /// socket, whose peers the daemon checks by their credentials, or tcp
    /// explicitly opened).
    pub token: Option<String>,
    /// Names accepted in `Host` besides loopback names and literal IPs.
    pub allowed_hosts: Vec<String>,
    /// Origins accepted in `Origin`; a request with any other is refused.
    pub allowed_origins: Vec<String>,
}

/// A connection's [`Policy`] and who is at its other end, for the log.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// What the connection may do: token, hosts, origins. Shared by every
    /// connection of one listener kind.
    pub policy: std::rc::Rc<Policy>,
    /// The peer as the log names it (`127.0.0.1:51234`, `pid 7 uid 0`).
    pub peer: String,
}

/// After this many refused calls for want of a token (or for a wrong one)
/// a connection is closed.
pub const MAX_AUTH_FAILURES: u32 = 3;

/// The method a newline-delimited JSON connection authenticates with. The
/// `rpc.` prefix is JSON-RPC's own, so no user method can take the name.
pub const AUTHENTICATE: &str = "rpc.authenticate";

/// Compares a presented token with the daemon's in time that depends on
/// the length alone, so that a client cannot learn the token byte by byte
/// from how long a refusal takes. (The length is no secret: every token is
/// 64 hex digits.)
pub(super) fn tokens_equal(presented: &[u8], token: &str) -> bool {
    let token = token.as_bytes();
    if presented.len() != token.len() {
        return false;
    }
    let diff = presented.iter().zip(token).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(diff) == 0
}

impl Conn {
    /// The request that began to arrive took too long: answer an error
    /// (HTTP 408) and close.
    pub fn handle_request_timeout(&mut self) {
        log::warn!("refused {}: request not received in time", self.access.peer);
        match self.framing {
            Some(Framing::Http) => {
                self.refuse(Status::RequestTimeout);
            }
            Some(Framing::Ndjson) | None => {
                self.fatal_line(RpcError::invalid_request("request not received in time"));
            }
        }
        self.discard_input();
        self.flush();
    }

    /// A newer connection takes this one's slot (it has not shown the
    /// token): says so (HTTP 503, or -32006 with id null) and closes.
    pub fn handle_eviction(&mut self) {
        match self.framing {
            Some(Framing::Http) => {
                self.refuse(Status::ServiceUnavailable);
            }
            Some(Framing::Ndjson) | None => self.fatal_line(RpcError::new(
                codes::UNAUTHORIZED,
                "closed: every connection slot is taken, and this one has not authenticated",
            )),
        }
        self.discard_input();
        self.flush();
    }

    /// Whether the client has presented the token (or needs none): on
    /// newline-delimited JSON once `rpc.authenticate` succeeded, over HTTP
    /// once a request carried it (each request is still checked on its
    /// own).
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// Who is at the other end, as the log names it.
    pub fn peer(&self) -> &str {
        &self.access.peer
    }

    /// The checks every HTTP request passes before anything runs: the
    /// browser defences (see [`http`](super::http)), the RPC path and
    /// content type, then the token. `None` when it may go on. It may run
    /// more than once for one request (while its body arrives), so it
    /// counts no refusal (the caller does, when it answers one) and only
    /// notes that the token was shown, which is the same however often.
    pub(super) fn check_http(&mut self, head: &http::Head, route: route::Route) -> Option<Status> {
        let policy = std::rc::Rc::clone(&self.access.policy);
        let host_ok = match &head.host {
            Some(host) => http::host_allowed(host, &policy.allowed_hosts),
            // HTTP/1.1 requires a Host; an HTTP/1.0 client may omit it, and
            // no browser does.
            None if head.version == 0 => true,
            None => return Some(Status::BadRequest),
        };
        if !host_ok {
            log::warn!("refused {}: host {:?} not allowed", self.access.peer, head.host.as_deref().unwrap_or(""));
            return Some(Status::MisdirectedRequest);
        }
        if let Some(origin) = &head.origin {
            // The daemon's own page, served from this very Host (which
            // passed the check above, so no rebinding name), is its own
            // origin: http://HOST.
            let own = head.host.as_deref().is_some_and(|h| origin.strip_prefix("http://") == Some(h));
            if !own && !policy.allowed_origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
                log::warn!("refused {}: origin {origin:?} not allowed", self.access.peer);
                return Some(Status::Forbidden);
            }
        }
        if !route.wants_token() {
            return None;
        }
        if route == route::Route::Rpc {
            if head.path != "/" {
                return Some(Status::NotFound);
            }
            if http::body_kind(head.content_type.as_deref()).is_none() {
                log::debug!("refused {}: content type {:?}", self.access.peer, head.content_type);
                return Some(Status::UnsupportedMediaType);
            }
        }
        match (&policy.token, &head.authorization) {
            (None, _) => None,
            (Some(token), Some(auth)) if http::bearer_token(auth).is_some_and(|t| tokens_equal(&t, token)) => {
                // Every request is still checked on its own; this only
                // tells the loop that the client has shown the token.
                self.authenticated = true;
                None
            }
            (Some(_), _) => Some(Status::Unauthorized),
        }
    }

    /// Whether the connection was closed for its refused calls: nothing
    /// more of it runs, not even the rest of its batch.
    pub(super) fn refused_too_often(&self) -> bool {
        self.auth_failures >= MAX_AUTH_FAILURES
    }

    /// Logs a refused call; past [`MAX_AUTH_FAILURES`] the connection
    /// takes nothing more.
    pub(super) fn auth_failed(&mut self, why: &str) {
        self.auth_failures += 1;
        log::warn!("refused {}: {why}", self.access.peer);
        if self.auth_failures >= MAX_AUTH_FAILURES {
            log::warn!("closing connection of {}: {} refused calls", self.access.peer, self.auth_failures);
            self.stopped = true;
        }
    }

    /// `rpc.authenticate(token)`: `true`, or the error that refuses it.
    pub(super) fn authenticate(&mut self, params: &Params) -> Result<Value, RpcError> {
        let presented = match params {
            Params::Named(map) => map.get("token"),
            Params::Positional(values) if values.len() == 1 => values.first(),
            _ => None,
        };
        let Some(token) = self.access.policy.token.clone() else {
            self.authenticated = true;
            return Ok(Value::Bool(true));
        };
        match presented.and_then(Value::as_str) {
            Some(t) if tokens_equal(t.as_bytes(), &token) => {
                self.authenticated = true;
                Ok(Value::Bool(true))
            }
            Some(_) => {
                self.auth_failed("wrong token");
                Err(RpcError::new(codes::UNAUTHORIZED, "unauthorized: wrong token"))
            }
            None => {
                self.auth_failed("rpc.authenticate without a token");
                Err(RpcError::invalid_params("rpc.authenticate takes one param: token (a string)"))
            }
        }
    }

    /// Runs one call of a JSON-RPC message, or refuses it: a connection
    /// that must authenticate runs nothing but `rpc.authenticate` until it
    /// has.
    pub(super) fn call(
        &mut self,
        method: &str,
        params: Params,
        dispatch: &mut dyn FnMut(&str, Params) -> Reply,
    ) -> Reply {
        if method == AUTHENTICATE {
            return self.authenticate(&params).into();
        }
        // Over HTTP every request carries its own credentials, checked with
        // its head (`check_http`).
        if !self.authenticated && self.framing != Some(Framing::Http) {
            self.auth_failed("call before authenticating");
            return Reply::Error(RpcError::new(
                codes::UNAUTHORIZED,
                format!("unauthorized: call {AUTHENTICATE} with the daemon's token first"),
            ));
        }
        if method == SUBSCRIBE {
            return self.subscribe();
        }
        dispatch(method, params)
    }
}
