//! What an HTTP request asks for: RPC (`POST /`), the health check, the
//! status page, the metrics or the event stream, and how each is answered.
//!
//! Every route passes the browser checks (`Host`, `Origin`); RPC, the
//! metrics and the event stream also want the token on tcp. The page's
//! HTML carries no data (it fetches everything through RPC and the event
//! stream, with the token), so it is served without one, as `/health` is.

use super::*;

/// The method `GET /metrics` is answered by: it takes `format` (`text`,
/// Prometheus's 0.0.4, or `openmetrics`) and answers the exposition as a
/// string. It is an ordinary method, so it can be called over RPC too.
pub const METRICS: &str = "daemon.metrics";

/// The status page, compiled in: HTML, CSS and JS in one file.
pub const PAGE: &str = include_str!("../page.html");

/// Where the page says whether the token is wanted.
const AUTH_MARK: &str = "__FORKD_AUTH__";

const HTML: &str = "text/html; charset=utf-8";
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What an HTTP request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// `POST /`: a JSON-RPC or XML-RPC call.
    Rpc,
    /// `GET /health`: open, a liveness check.
    Health,
    /// `GET /`: the status page, open (it carries no data).
    Page,
    /// `GET /metrics`: the Prometheus exposition, with the token.
    Metrics,
    /// `GET /events`: the event stream (Server-Sent Events), with the token.
    Events,
}

impl Route {
    /// The route of a request head, or the status that refuses it.
    fn of(head: &http::Head) -> Result<Route, Status> {
        match (head.method.as_str(), head.path.as_str()) {
            ("POST", _) => Ok(Route::Rpc),
            ("GET", "/health") => Ok(Route::Health),
            ("GET", "/") => Ok(Route::Page),
            ("GET", "/metrics") => Ok(Route::Metrics),
            ("GET", "/events") => Ok(Route::Events),
            ("GET", _) => Err(Status::NotFound),
            _ => Err(Status::MethodNotAllowed),
        }
    }

    /// Whether a request on this route must carry the token (on tcp).
    pub(super) fn wants_token(self) -> bool {
        match self {
            Route::Rpc | Route::Metrics | Route::Events => true,
            Route::Health | Route::Page => false,
        }
    }
}

/// Whether an `Accept` header asks for OpenMetrics rather than the 0.0.4
/// text format.
fn wants_openmetrics(accept: Option<&str>) -> bool {
    // Each media range's quality (`q`, 1 when absent); OpenMetrics only
    // when the scraper rates it above the text format (and above 0).
    let quality = |wanted: &dyn Fn(&str) -> bool| {
        accept
            .unwrap_or("")
            .split(',')
            .filter_map(|range| {
                let mut parts = range.split(';').map(str::trim);
                let media = parts.next()?.to_ascii_lowercase();
                wanted(&media).then(|| {
                    parts
                        .filter_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
                        .find_map(|q| q.parse::<f32>().ok())
                        .unwrap_or(1.0)
                })
            })
            .fold(None, |best: Option<f32>, q| Some(best.map_or(q, |b| b.max(q))))
    };
    let open = quality(&|m| m == "application/openmetrics-text").unwrap_or(0.0);
    let text = quality(&|m| m == "text/plain" || m == "text/*" || m == "*/*").unwrap_or(0.0);
    open > 0.0 && open > text
}

impl Conn {
    /// HTTP: takes one request if a whole one is buffered.
    pub(super) fn next_http(&mut self, dispatch: &mut dyn FnMut(&str, Params) -> Reply) -> bool {
        let buf = &self.input[self.start..];
        if buf.is_empty() {
            return false;
        }
        let head = match http::parse_head(buf) {
            Ok(None) => return false,
            Ok(Some(head)) => head,
            Err(status) => return self.refuse(status),
        };
        let route = match Route::of(&head) {
            Ok(route) => route,
            Err(status) => return self.refuse(status),
        };
        let body_len = match (head.content_length, head.chunked, route == Route::Rpc) {
            (_, true, _) | (None, false, true) => return self.refuse(Status::LengthRequired),
            (Some(n), false, _) => n,
            (None, false, false) => 0,
        };
        if body_len > self.limits.max_request {
            return self.refuse(Status::ContentTooLarge);
        }
        let avail = buf.len();
        let verdict = self.check_http(&head, route);
        let complete = avail - head.len >= body_len;
        if let Some(status) = verdict {
            // The refusal waits for the body, so that closing does not
            // reset a connection whose client is still sending (and would
            // then never read the answer) — unless the client waits for a
            // 100 before it sends, in which case it is told at once.
            if complete || (head.expect_continue && !self.continue_sent) {
                self.start += if complete { head.len + body_len } else { avail };
                // Counted once, when answered: a body that arrives in
                // several reads passes through here once for each.
                if status == Status::Unauthorized {
                    let why = if head.authorization.is_some() { "wrong token" } else { "no token" };
                    self.auth_failed(why);
                }
                return self.refuse(status);
            }
            return false;
        }
        if !complete {
            // Only when no earlier answer is owed, or the 100 would
            // overtake it.
            if head.expect_continue && !self.continue_sent && self.queue.is_empty() {
                self.output.extend_from_slice(http::CONTINUE);
                self.continue_sent = true;
            }
            return false;
        }
        let from = self.start + head.len;
        let body = self.input[from..from + body_len].to_vec();
        self.start += head.len + body_len;
        self.taken += 1;
        self.continue_sent = false;
        let envelope = Envelope::Http { keep_alive: head.keep_alive && !self.draining };
        // A stream lasts as long as the connection, whatever it asked.
        if !head.keep_alive && route != Route::Events {
            self.stopped = true;
        }
        match route {
            Route::Rpc => self.answer_rpc(head.content_type.as_deref(), &body, envelope, dispatch),
            Route::Health => self.answer_plain(envelope, Status::Ok, JSON, http::health_body()),
            Route::Page => {
                // The one thing the page is told: whether calls want the
                // token here, so that it asks before it is refused.
                let auth = if self.access.policy.token.is_some() { "token" } else { "none" };
                self.answer_plain(envelope, Status::Ok, HTML, PAGE.replacen(AUTH_MARK, auth, 1))
            }
            Route::Metrics => self.answer_metrics(envelope, head.accept.as_deref(), dispatch),
            Route::Events => match self.subscription_refused() {
                Some(why) => {
                    let body = format!("{{\"error\":\"{why}\"}}");
                    self.answer_plain(envelope, Status::ServiceUnavailable, JSON, body)
                }
                None => self.open_stream(StreamKind::Sse),
            },
        }
        true
    }

    fn answer_plain(&mut self, envelope: Envelope, status: Status, content_type: &'static str, text: String) {
        self.queue.push_back(Pending { envelope, body: Body::Plain { status, content_type, text } });
    }

    /// `GET /metrics`: the exposition in the format the scraper asked for.
    fn answer_metrics(
        &mut self,
        envelope: Envelope,
        accept: Option<&str>,
        dispatch: &mut dyn FnMut(&str, Params) -> Reply,
    ) {
        let open = wants_openmetrics(accept);
        let mut params = Map::new();
        params.insert("format".into(), Value::from(if open { "openmetrics" } else { "text" }));
        match dispatch(METRICS, Params::Named(params)) {
            Reply::Value(Value::String(text)) => {
                let content_type = if open { OPENMETRICS } else { PROMETHEUS };
                self.answer_plain(envelope, Status::Ok, content_type, text)
            }
            // A daemon without the built-in metrics (or one whose method
            // answers anything else) has none to show.
            other => {
                log::debug!("no metrics: {METRICS} answered {other:?}");
                let status = Status::NotFound;
                self.answer_plain(envelope, status, TEXT, status.error_text().to_string())
            }
        }
    }

    /// HTTP: answers a JSON-RPC or XML-RPC request, its head read and its
    /// body taken.
    fn answer_rpc(
        &mut self,
        content_type: Option<&str>,
        body: &[u8],
        envelope: Envelope,
        dispatch: &mut dyn FnMut(&str, Params) -> Reply,
    ) {
        match http::body_kind(content_type) {
            Some(BodyKind::Json) => {
                match jsonrpc::decode_bounded(body, self.limits.max_batch, self.limits.max_values) {
                    Ok(message) => self.run_json(message, envelope, dispatch),
                    // The body was delimited by its length, so the framing
                    // holds: answer the parse error and keep the connection.
                    Err(error) => {
                        self.run_json(Message::Single(Entry::Invalid { id: Value::Null, error }), envelope, dispatch)
                    }
                }
            }
            Some(BodyKind::Xml) => self.run_xml(body, envelope, dispatch),
            None => unreachable!("check_http refuses other content types"),
        }
    }
}

#[cfg(test)]
mod accept_tests {
    use super::wants_openmetrics;

    #[test]
    fn openmetrics_only_when_rated_above_the_text_format() {
        let cases = [
            (None, false),
            (Some("application/openmetrics-text; version=1.0.0; charset=utf-8"), true),
            (Some("application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1"), true),
            (Some("application/openmetrics-text;q=0"), false),
            (Some("text/plain;q=1,application/openmetrics-text;q=0.1"), false),
            (Some("text/plain"), false),
            (Some("*/*"), false),
        ];
        for (accept, want) in cases {
            assert_eq!(wants_openmetrics(accept), want, "{accept:?}");
        }
    }
}
