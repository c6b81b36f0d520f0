//! The benchmarks' own client: requests encoded once, up front, and
//! answers framed without being decoded, so that what is timed is the
//! daemon, not the client's JSON.
//!
//! Two framings, as the daemon speaks them: newline-delimited JSON-RPC (one
//! answer a line) and HTTP/1.1 with keep-alive (an answer is a head and a
//! `Content-Length` body). A [`Wire`] keeps what it read past one answer for
//! the next, so pipelined answers that arrive together are all found.
//! A `Wire` connects to a unix socket or to tcp (with `TCP_NODELAY`, as the
//! daemon sets on its side).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use forkd_os::Address;

/// How answers are delimited on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Line,
    Http,
}

/// The protocols the RPC figures use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// Newline-delimited JSON-RPC.
    Ndjson,
    /// JSON-RPC in HTTP/1.1 POSTs.
    HttpJson,
    /// XML-RPC in HTTP/1.1 POSTs.
    HttpXml,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Ndjson => "ndjson",
            Proto::HttpJson => "http-json",
            Proto::HttpXml => "http-xml",
        }
    }
}

/// An encoded request and how its answer is framed.
#[derive(Clone, Debug)]
pub struct Request {
    pub bytes: Vec<u8>,
    pub framing: Framing,
}

impl Request {
    /// A JSON-RPC request line; `params` is JSON text or empty for none.
    pub fn ndjson(method: &str, params: &str) -> Request {
        Request { bytes: format!("{}\n", json_body(method, params)).into_bytes(), framing: Framing::Line }
    }

    /// An HTTP/1.1 keep-alive POST of `body` to `path`.
    pub fn http(path: &str, content_type: &str, body: &str) -> Request {
        let bytes = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
        Request { bytes, framing: Framing::Http }
    }

    /// An XML-RPC call of `method` with string params.
    pub fn xmlrpc(path: &str, method: &str, params: &[&str]) -> Request {
        let params: String =
            params.iter().map(|p| format!("<param><value><string>{p}</string></value></param>")).collect();
        let body = format!(
            "<?xml version=\"1.0\"?><methodCall><methodName>{method}</methodName><params>{params}</params></methodCall>"
        );
        Request::http(path, "text/xml", &body)
    }

    /// `my.echo("hello")` in `proto`.
    pub fn echo(proto: Proto) -> Request {
        match proto {
            Proto::Ndjson => Request::ndjson("my.echo", r#"{"message":"hello"}"#),
            Proto::HttpJson => Request::http("/", "application/json", &json_body("my.echo", r#"{"message":"hello"}"#)),
            Proto::HttpXml => Request::xmlrpc("/", "my.echo", &["hello"]),
        }
    }

    /// This HTTP request with `Authorization: Bearer TOKEN`, the way a tcp
    /// client presents the daemon's token. Line requests are unchanged: a
    /// newline-delimited connection authenticates once, with
    /// [`Request::authenticate`].
    pub fn bearer(&self, token: &str) -> Request {
        if self.framing != Framing::Http {
            return self.clone();
        }
        let at = self.bytes.windows(2).position(|w| w == b"\r\n").map_or(self.bytes.len(), |i| i + 2);
        let mut bytes = self.bytes[..at].to_vec();
        bytes.extend_from_slice(format!("Authorization: Bearer {token}\r\n").as_bytes());
        bytes.extend_from_slice(&self.bytes[at..]);
        Request { bytes, framing: Framing::Http }
    }

    /// `rpc.authenticate(token)`, what a newline-delimited connection on tcp
    /// sends before anything else.
    pub fn authenticate(token: &str) -> Request {
        let line = format!(r#"{{"jsonrpc":"2.0","method":"rpc.authenticate","params":{{"token":"{token}"}},"id":0}}"#);
        Request { bytes: format!("{line}\n").into_bytes(), framing: Framing::Line }
    }

    /// `depth` copies of this request, to be written at once.
    pub fn repeated(&self, depth: usize) -> Vec<u8> {
        self.bytes.repeat(depth)
    }
}

fn json_body(method: &str, params: &str) -> String {
    if params.is_empty() {
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}"}}"#)
    } else {
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{params}}}"#)
    }
}

/// The largest answer a `Wire` buffers: `worker.list` of a few thousand
/// workers fits with room to spare.
const MAX_ANSWER: usize = 64 << 20;

/// A unix or tcp stream.
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(Some(timeout)).and_then(|()| s.set_write_timeout(Some(timeout))),
            Stream::Tcp(s) => s.set_read_timeout(Some(timeout)).and_then(|()| s.set_write_timeout(Some(timeout))),
        }
    }

    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_nonblocking(on),
            Stream::Tcp(s) => s.set_nonblocking(on),
        }
    }

    fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tcp(s) => s.as_raw_fd(),
        }
    }
}

impl Read for Stream {
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
        Ok(())
    }
}

/// A connection to a daemon that sends encoded requests and frames answers.
pub struct Wire {
    stream: Stream,
    framing: Framing,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Wire {
    /// Connects; reads time out after `timeout`.
    pub fn connect(address: &Address, framing: Framing, timeout: Duration) -> io::Result<Wire> {
        let stream = match address {
            Address::Unix(path) => Stream::Unix(UnixStream::connect(path)?),
            Address::Tcp(addr) => {
                let s = TcpStream::connect_timeout(addr, timeout)?;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
        };
        stream.set_timeouts(timeout)?;
        Ok(Wire { stream, framing, buf: vec![0; 16 * 1024], start: 0, end: 0 })
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// One round trip: the answer's body (an HTTP body, or a line without
    /// its newline).
    pub fn call(&mut self, request: &[u8]) -> io::Result<&[u8]> {
        self.send(request)?;
        self.recv()
    }

    /// Makes reads return `WouldBlock` instead of waiting, for [`Wire::drain`].
    /// Writes wait for room regardless (see [`Wire::send_all`]).
    pub fn set_nonblocking(&self) -> io::Result<()> {
        self.stream.set_nonblocking(true)
    }

    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.stream.raw_fd()
    }

    /// Writes all of `bytes` on a non-blocking stream, waiting for room
    /// when the socket buffer is full.
    pub fn send_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match self.stream.write(bytes) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "the daemon stopped reading")),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// On a non-blocking stream: reads what has arrived and consumes every
    /// whole answer in it; how many there were.
    pub fn drain(&mut self) -> io::Result<usize> {
        loop {
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            }
            self.make_room()?;
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the daemon closed the connection")),
                Ok(n) => {
                    self.end += n;
                    if self.end < self.buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let mut n = 0;
        while let Some((len, _)) = self.frame()? {
            self.start += len;
            n += 1;
        }
        Ok(n)
    }

    /// Makes room at the end of the buffer: moves the unread bytes to the
    /// front, or grows it.
    fn make_room(&mut self) -> io::Result<()> {
        if self.end < self.buf.len() {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        } else if self.buf.len() >= MAX_ANSWER {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "answer too large"));
        } else {
            let len = self.buf.len() * 2;
            self.buf.resize(len, 0);
        }
        Ok(())
    }

    /// The next answer's body.
    pub fn recv(&mut self) -> io::Result<&[u8]> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        loop {
            if let Some((len, body)) = self.frame()? {
                let range = self.start + body.start..self.start + body.end;
                self.start += len;
                return Ok(&self.buf[range]);
            }
            self.make_room()?;
            let n = self.stream.read(&mut self.buf[self.end..])?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the daemon closed the connection"));
            }
            self.end += n;
        }
    }

    /// A whole answer at the start of the buffered bytes: its length and
    /// its body's range, both relative to `start`.
    fn frame(&self) -> io::Result<Option<(usize, std::ops::Range<usize>)>> {
        let data = &self.buf[self.start..self.end];
        match self.framing {
            Framing::Line => Ok(data.iter().position(|&b| b == b'\n').map(|i| (i + 1, 0..i))),
            Framing::Http => {
                let Some(head_end) = data.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4) else {
                    return Ok(None);
                };
                let head = &data[..head_end];
                if !head.starts_with(b"HTTP/1.1 200") {
                    let line = String::from_utf8_lossy(head.split(|&b| b == b'\r').next().unwrap_or_default());
                    return Err(io::Error::new(io::ErrorKind::InvalidData, format!("HTTP answer: {line}")));
                }
                let length = content_length(head)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "HTTP answer without Content-Length"))?;
                if data.len() < head_end + length {
                    return Ok(None);
                }
                Ok(Some((head_end + length, head_end..head_end + length)))
            }
        }
    }
}

fn content_length(head: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(head).ok()?;
    text.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
    })
}

/// Whether an answer body is a success (a JSON result, or an XML-RPC
/// response without a fault).
pub fn is_success(body: &[u8]) -> bool {
    let find = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    if body.first() == Some(&b'<') {
        find(b"<methodResponse>") && !find(b"<fault>")
    } else {
        find(b"\"result\"") && !find(b"\"error\"")
    }
}

/// The text inside the value of the XML-RPC struct member `name`, tags
/// stripped: `<name>pid</name><value><int>42</int></value>` gives `42`.
pub fn xml_member<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    let at = body.find(&format!("<name>{name}</name>"))?;
    let rest = &body[at..];
    let value = rest.find("<value>")? + "<value>".len();
    let end = rest[value..].find("</value>")? + value;
    let inner = rest[value..end].trim();
    // Strip one type tag, if any.
    let inner = match (inner.find('>'), inner.rfind("</")) {
        (Some(open), Some(close)) if inner.starts_with('<') && close > open => &inner[open + 1..close],
        _ => inner,
    };
    Some(inner)
}

/// How many times `needle` occurs in `haystack`.
pub fn count(haystack: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() || haystack.len() < needle.len() {
        return 0;
    }
    let mut n = 0;
    let mut i = 0;
    while i + needle.len() <= haystack.len() {
        if &haystack[i..i + needle.len()] == needle {
            n += 1;
            i += needle.len();
        } else {
            i += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_members_and_counts() {
        let body = "<struct><member><name>pid</name><value><int>42</int></value></member>\
                    <member><name>statename</name><value><string>RUNNING</string></value></member></struct>";
        assert_eq!(xml_member(body, "pid"), Some("42"));
        assert_eq!(xml_member(body, "statename"), Some("RUNNING"));
        assert_eq!(xml_member(body, "nope"), None);
        assert_eq!(count(b"a looping b looping", b"looping"), 2);
        assert!(is_success(br#"{"jsonrpc":"2.0","result":"hello","id":1}"#));
        assert!(!is_success(br#"{"jsonrpc":"2.0","error":{},"id":1}"#));
    }

    #[test]
    fn content_length_is_case_insensitive() {
        assert_eq!(content_length(b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n"), Some(12));
        assert_eq!(content_length(b"HTTP/1.1 200 OK\r\n\r\n"), None);
    }

    #[test]
    fn bearer_goes_after_the_request_line() {
        let r = Request::http("/", "application/json", "{}").bearer("ab12");
        let text = String::from_utf8(r.bytes).unwrap();
        assert!(text.starts_with("POST / HTTP/1.1\r\nAuthorization: Bearer ab12\r\nHost: localhost\r\n"), "{text}");
        assert!(text.ends_with("Content-Length: 2\r\n\r\n{}"), "{text}");
        let line = Request::ndjson("my.echo", "");
        assert_eq!(line.bearer("ab12").bytes, line.bytes);
        assert_eq!(
            Request::authenticate("ab12").bytes,
            b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.authenticate\",\"params\":{\"token\":\"ab12\"},\"id\":0}\n"
        );
    }
}
