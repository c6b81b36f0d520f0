//! Checks of the control plane's allow-lists, shared by the builder's
//! setters and the console's flags so that both accept the same values and
//! say the same thing about the others. Each returns the value as the
//! daemon compares it: lowercase.

/// A name accepted in an HTTP `Host` header: letters, digits, `-` and `.`,
/// without a port (the daemon compares names without theirs).
pub(crate) fn host(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if ok {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(format!("invalid allowed host {name:?}: expected a name without a port, e.g. example.com"))
    }
}

/// A browser origin: `scheme://host[:port]`, nothing after it (no path, not
/// even `/`), the host a name or a bracketed IPv6 address.
pub(crate) fn origin(origin: &str) -> Result<String, String> {
    let err = || format!("invalid allowed origin {origin:?}: expected scheme://host[:port], e.g. https://example.com");
    let (scheme, rest) = origin.split_once("://").ok_or_else(err)?;
    let scheme_ok = scheme.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    let (host_ok, port) = match rest.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((ip, port)) => (ip.parse::<std::net::Ipv6Addr>().is_ok(), port),
            None => (false, ""),
        },
        None => {
            let (h, port) = rest.find(':').map_or((rest, ""), |i| rest.split_at(i));
            (host(h).is_ok(), port)
        }
    };
    let port_ok = match port.strip_prefix(':') {
        None => port.is_empty(),
        Some(p) => !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok_and(|p| p > 0),
    };
    if scheme_ok && host_ok && port_ok {
        Ok(origin.to_ascii_lowercase())
    } else {
        Err(err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(host("Example.COM"), Ok("example.com".into()));
        assert_eq!(host("my-box"), Ok("my-box".into()));
        for bad in ["", "example.com:80", "a b", "ex/ample", "[::1]"] {
            assert!(host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn origins() {
        assert_eq!(origin("https://Example.com"), Ok("https://example.com".into()));
        assert_eq!(origin("http://localhost:8080"), Ok("http://localhost:8080".into()));
        assert_eq!(origin("http://[::1]:3000"), Ok("http://[::1]:3000".into()));
        for bad in [
            "",
            "example.com",
            "https://",
            "https://example.com/",
            "https://example.com:0",
            "https://example.com:99999",
            "https://example.com:",
            "1http://x",
            "*",
            "null",
            "http://[zz]:1",
        ] {
            assert!(origin(bad).is_err(), "{bad:?}");
        }
    }
}
