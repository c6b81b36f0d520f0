//! Socket addresses in the form the seed's `sockethandler` uses:
//! `unix:///abs/path.sock`, `unix://relative.sock`, `tcp://127.0.0.1:10042`,
//! `tcp://[::1]:10042`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where a daemon listens and a client connects.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// A unix socket file. A relative path is relative to the directory the
    /// daemon was launched from; `resolve` makes it absolute.
    Unix(PathBuf),
    /// A tcp socket address, IPv4 or IPv6, with a numeric host.
    Tcp(SocketAddr),
}

/// Why an address string was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressError {
    /// Neither `unix://` nor `tcp://`.
    UnknownScheme(String),
    /// `unix://` with nothing after it.
    EmptyPath,
    /// A `tcp://` address that is not `host:port` with a numeric host.
    BadTcp(String),
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressError::UnknownScheme(s) => {
                write!(f, "invalid address {s:?}: expected unix://PATH or tcp://HOST:PORT")
            }
            AddressError::EmptyPath => f.write_str("invalid address: unix:// needs a path"),
            AddressError::BadTcp(s) => write!(f, "invalid address {s:?}: expected tcp://IP:PORT"),
        }
    }
}

impl std::error::Error for AddressError {}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Address, AddressError> {
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(AddressError::EmptyPath);
            }
            Ok(Address::Unix(PathBuf::from(path)))
        } else if let Some(hostport) = s.strip_prefix("tcp://") {
            let hostport = hostport.trim_end_matches('/');
            hostport.parse::<SocketAddr>().map(Address::Tcp).map_err(|_| AddressError::BadTcp(s.to_string()))
        } else {
            Err(AddressError::UnknownScheme(s.to_string()))
        }
    }
}

impl Address {
    /// The address with a relative unix path made absolute against `base`.
    pub fn resolve(&self, base: &Path) -> Address {
        match self {
            Address::Unix(p) if p.is_relative() => Address::Unix(base.join(p)),
            other => other.clone(),
        }
    }

    /// The path of a unix address; `None` for tcp.
    ///
    /// ```
    /// use forkd_os::Address;
    /// use std::path::Path;
    ///
    /// let a: Address = "unix:///run/x.sock".parse().unwrap();
    /// assert_eq!(a.unix_path(), Some(Path::new("/run/x.sock")));
    /// let t: Address = "tcp://127.0.0.1:10042".parse().unwrap();
    /// assert_eq!(t.unix_path(), None);
    /// assert_eq!(t.to_string(), "tcp://127.0.0.1:10042");
    /// ```
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            Address::Unix(p) => Some(p),
            Address::Tcp(_) => None,
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix://{}", p.display()),
            Address::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_forms() {
        assert_eq!("unix:///run/x.sock".parse(), Ok(Address::Unix("/run/x.sock".into())));
        assert_eq!("unix://daemon.sock".parse(), Ok(Address::Unix("daemon.sock".into())));
        assert_eq!("tcp://127.0.0.1:10042".parse(), Ok(Address::Tcp("127.0.0.1:10042".parse().unwrap())));
        assert_eq!("tcp://[::1]:10042".parse(), Ok(Address::Tcp("[::1]:10042".parse().unwrap())));
        assert!("udp://x".parse::<Address>().is_err());
        assert!("unix://".parse::<Address>().is_err());
        assert!("tcp://localhost".parse::<Address>().is_err());
    }

    #[test]
    fn display_round_trips() {
        for s in ["unix:///a/b.sock", "unix://rel.sock", "tcp://127.0.0.1:1", "tcp://[::1]:2"] {
            assert_eq!(s.parse::<Address>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn resolve_only_touches_relative_unix_paths() {
        let base = Path::new("/srv");
        assert_eq!(Address::Unix("d.sock".into()).resolve(base), Address::Unix("/srv/d.sock".into()));
        assert_eq!(Address::Unix("/x.sock".into()).resolve(base), Address::Unix("/x.sock".into()));
    }
}
