//! Listening, accepting and connecting stream sockets, unix and tcp.
//!
//! Every socket is made close-on-exec and non-blocking from its first
//! instant (`SOCK_CLOEXEC | SOCK_NONBLOCK`), so no exec or blocking read can
//! slip in between. The exception is `connect`, which blocks for the
//! connection itself and turns non-blocking once connected.
//!
//! A unix socket file gets its mode at its creation: `bind` creates it under
//! the process's umask, so the umask is set to let exactly the wanted bits
//! through for the duration of the call, and put back right after. A
//! `chmod` after `bind` would leave a moment in which the file has the
//! mode the old umask gave it, and would follow a symbolic link swapped in
//! for the socket. The umask is process-wide, which is safe here only
//! because a daemon runs one thread.
//!
//! Errors are the kernel's own (`EADDRINUSE` for an existing file, `ENOENT`
//! for a missing one, `ECONNREFUSED`): the caller adds what it was doing.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrLike, SockaddrStorage, UnixAddr};

use crate::real::sys::retry;
use crate::{Address, Fd, ListenOptions, Peer, Pid};

/// An `Address` as the kernel takes it.
enum SocketAddress {
    Unix(UnixAddr),
    Inet(AddressFamily, SockaddrStorage),
}

impl SocketAddress {
    fn new(addr: &Address) -> io::Result<SocketAddress> {
        Ok(match addr {
            Address::Unix(path) => SocketAddress::Unix(UnixAddr::new(path.as_path())?),
            Address::Tcp(sa) => {
                let family = if sa.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
                SocketAddress::Inet(family, SockaddrStorage::from(*sa))
            }
        })
    }

    fn family(&self) -> AddressFamily {
        match self {
            SocketAddress::Unix(_) => AddressFamily::Unix,
            SocketAddress::Inet(family, _) => *family,
        }
    }

    fn as_sockaddr(&self) -> &dyn SockaddrLike {
        match self {
            SocketAddress::Unix(a) => a,
            SocketAddress::Inet(_, a) => a,
        }
    }

    fn is_tcp(&self) -> bool {
        matches!(self, SocketAddress::Inet(..))
    }
}

fn stream_socket(family: AddressFamily, flags: SockFlag) -> io::Result<OwnedFd> {
    retry(|| socket::socket(family, SockType::Stream, flags | SockFlag::SOCK_CLOEXEC, None))
}

pub(super) fn listen(addr: &Address, opts: ListenOptions) -> io::Result<Fd> {
    let sockaddr = SocketAddress::new(addr)?;
    let fd = stream_socket(sockaddr.family(), SockFlag::SOCK_NONBLOCK)?;
    match addr {
        Address::Unix(path) => {
            bind_with_mode(&fd, &sockaddr, opts.unix_mode)?;
            if let Err(e) = listen_on(&fd, opts.backlog) {
                // The file is ours, made a moment ago: leave nothing behind.
                let _ = std::fs::remove_file(path);
                return Err(e);
            }
        }
        Address::Tcp(_) => {
            // A restarted daemon must be able to bind again while the
            // connections of its previous run linger in TIME_WAIT.
            retry(|| socket::setsockopt(&fd, sockopt::ReuseAddr, &true))?;
            retry(|| socket::bind(fd.as_raw_fd(), sockaddr.as_sockaddr()))?;
            listen_on(&fd, opts.backlog)?;
        }
    }
    Ok(Fd(fd.into_raw_fd()))
}

/// Binds a unix socket whose file is created with permission bits `mode`.
fn bind_with_mode(fd: &OwnedFd, sockaddr: &SocketAddress, mode: u32) -> io::Result<()> {
    let mask = !mode & 0o777;
    // Safety: umask cannot fail; it only swaps the process's mask.
    let previous = unsafe { libc::umask(mask as libc::mode_t) };
    let bound = retry(|| socket::bind(fd.as_raw_fd(), sockaddr.as_sockaddr()));
    // Safety: as above; the previous mask is back, whatever bind did.
    unsafe { libc::umask(previous) };
    bound
}

fn listen_on(fd: &OwnedFd, backlog: i32) -> io::Result<()> {
    // The raw call, so that the kernel clamps a large backlog to its own
    // maximum as it always has, where nix would refuse it.
    syscall!(listen(fd.as_raw_fd(), backlog))?;
    Ok(())
}

pub(super) fn accept(listener: Fd) -> io::Result<Fd> {
    // Safety: all zeroes is a valid sockaddr_storage.
    let mut peer: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // Safety: `peer` is valid for `len` bytes of writing.
    let raw = syscall!(accept4(
        listener.0,
        (&mut peer as *mut libc::sockaddr_storage).cast(),
        &mut len,
        libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
    ))?;
    // Safety: accept4 has just returned this descriptor, owned by no one.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let family = libc::c_int::from(peer.ss_family);
    if family == libc::AF_INET || family == libc::AF_INET6 {
        set_nodelay(&fd)?;
    }
    Ok(Fd(fd.into_raw_fd()))
}

pub(super) fn connect(addr: &Address) -> io::Result<Fd> {
    let sockaddr = SocketAddress::new(addr)?;
    let fd = stream_socket(sockaddr.family(), SockFlag::empty())?;
    connect_blocking(fd.as_raw_fd(), sockaddr.as_sockaddr())?;
    // Safety: F_GETFL and F_SETFL take and return plain flags.
    let flags = syscall!(fcntl(fd.as_raw_fd(), libc::F_GETFL))?;
    syscall!(fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK))?;
    if sockaddr.is_tcp() {
        set_nodelay(&fd)?;
    }
    Ok(Fd(fd.into_raw_fd()))
}

/// A blocking connect. It is not retried on EINTR: an interrupted connect
/// goes on in the background, and calling it again fails with `EALREADY`.
/// Waiting for the socket to turn writable and reading its error instead is
/// what completes it.
fn connect_blocking(fd: RawFd, addr: &dyn SockaddrLike) -> io::Result<()> {
    match socket::connect(fd, addr) {
        Ok(()) => Ok(()),
        Err(Errno::EINTR) => {
            let mut pollfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
            // Safety: one valid pollfd.
            syscall!(poll(&mut pollfd, 1, -1))?;
            // Safety: `fd` stays open for the duration of the call.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            match retry(|| socket::getsockopt(&fd, sockopt::SocketError))? {
                0 => Ok(()),
                errno => Err(io::Error::from_raw_os_error(errno)),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Small requests and replies go out at once instead of waiting to be
/// coalesced by Nagle's algorithm.
fn set_nodelay(fd: &impl AsFd) -> io::Result<()> {
    retry(|| socket::setsockopt(fd, sockopt::TcpNoDelay, &true))
}

pub(super) fn socket_pair() -> io::Result<(Fd, Fd)> {
    let (a, b) = retry(|| {
        socket::socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        )
    })?;
    Ok((Fd(a.into_raw_fd()), Fd(b.into_raw_fd())))
}

/// Who is at the other end of a connected stream: for unix, the
/// credentials the kernel took when the peer connected (`SO_PEERCRED`),
/// which the peer cannot forge; for tcp, its address.
pub(super) fn peer(fd: Fd) -> io::Result<Peer> {
    let local: SockaddrStorage = retry(|| socket::getsockname(fd.0))?;
    match local.family() {
        Some(AddressFamily::Unix) => {
            // Safety: `fd` stays open for the duration of the call.
            let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd.0) };
            let cred = retry(|| socket::getsockopt(&borrowed, sockopt::PeerCredentials))?;
            Ok(Peer::Unix { pid: Pid(cred.pid()), uid: cred.uid(), gid: cred.gid() })
        }
        Some(AddressFamily::Inet | AddressFamily::Inet6) => {
            let remote: SockaddrStorage = retry(|| socket::getpeername(fd.0))?;
            if let Some(sin) = remote.as_sockaddr_in() {
                Ok(Peer::Tcp(std::net::SocketAddr::from(*sin)))
            } else if let Some(sin6) = remote.as_sockaddr_in6() {
                Ok(Peer::Tcp(std::net::SocketAddr::from(*sin6)))
            } else {
                Err(io::Error::new(io::ErrorKind::InvalidInput, "peer address of an unknown family"))
            }
        }
        _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "not a unix or tcp socket")),
    }
}

/// Sends one datagram from a fresh unbound socket, which is closed again:
/// to a socket file, or with a leading `@` to an abstract name.
pub(super) fn send_datagram(to: &std::ffi::OsStr, data: &[u8]) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let sock = UnixDatagram::unbound()?;
    let addr = match to.as_encoded_bytes().strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(to)?,
    };
    sock.send_to_addr(data, &addr)?;
    Ok(())
}

/// Connects to a unix socket within `timeout`: a listener whose backlog is
/// full (a daemon with every slot taken) makes a blocking connect wait for
/// ever, and a non-blocking one fail with `EAGAIN` at once, so the connect
/// is tried again every few milliseconds until the deadline, then fails
/// with `TimedOut`. For clients outside a daemon's `Os`.
pub fn connect_unix_timeout(
    path: &std::path::Path,
    timeout: std::time::Duration,
) -> io::Result<std::os::unix::net::UnixStream> {
    let addr = Address::Unix(path.to_path_buf());
    let sockaddr = SocketAddress::new(&addr)?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let fd = stream_socket(sockaddr.family(), SockFlag::SOCK_NONBLOCK)?;
        match socket::connect(fd.as_raw_fd(), sockaddr.as_sockaddr()) {
            Ok(()) => {
                let stream = std::os::unix::net::UnixStream::from(fd);
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(Errno::EAGAIN) | Err(Errno::EINTR) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(Errno::EAGAIN) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no connection within {timeout:?}: the daemon takes none (all its slots busy?)"),
                ))
            }
            Err(e) => return Err(e.into()),
        }
    }
}
