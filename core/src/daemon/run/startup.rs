//! What a daemon does before its loop turns: the default listeners, the
//! checks and the token a start needs, binding the control socket.

use super::*;

pub(crate) fn install_default_listeners(bus: &mut crate::event::Bus<Ctl>) {
    bus.subscribe_named(Topic::Signal(Signal::Term), defaults::STOP_ON_TERM, |ctl, _| ctl.stop("SIGTERM"));
    bus.subscribe_named(Topic::Signal(Signal::Int), defaults::STOP_ON_INT, |ctl, _| ctl.stop("SIGINT"));
    bus.subscribe_named(Topic::Signal(Signal::Chld), defaults::WATCHDOG, |ctl, _| ctl.reap_children());
    bus.subscribe_named(Topic::Signal(Signal::Usr1), defaults::REOPEN_LOG, |ctl, _| ctl.reopen_log());
    bus.subscribe_named(Topic::Signal(Signal::Hup), defaults::RELOAD_ON_HUP, |ctl, _| {
        if let Err(e) = ctl.reload(None, None, None) {
            log::warn!("SIGHUP: no reload: {}", e.message);
        }
    });
    bus.subscribe_named(Topic::Signal(Signal::Usr2), defaults::UPGRADE_ON_USR2, |ctl, _| ctl.upgrade(None));
}

/// What is checked and made before the socket is bound: the cap on worker
/// processes, and on tcp the token (or the explicit opt-out, which is
/// refused on a non-loopback address). A socket handed over by a service
/// manager may be tcp whatever the address says, so it gets a token too.
/// Returns the token, and its file if this start made it.
pub(super) fn start_checks<O: Os>(
    os: &mut O,
    config: &Config,
    workers: &[(crate::supervisor::WorkerSpec, crate::daemon::WorkerFactory)],
) -> Result<(Option<String>, Option<std::path::PathBuf>), StartError> {
    let configured: usize = workers.iter().map(|(spec, _)| spec.instances as usize).sum();
    if configured > config.max_workers {
        return Err(StartError::TooManyWorkers { configured, max: config.max_workers });
    }
    // A new master takes the token its predecessor handed over.
    if let Some(h) = &config.handed_over {
        return Ok((h.token.clone(), h.token_made.then(|| config.token_path())));
    }
    let tcp = match &config.address {
        Address::Tcp(addr) => Some(*addr),
        Address::Unix(_) if config.listen_fd.is_some() => None,
        Address::Unix(_) => return Ok((None, None)),
    };
    let named = tcp.map_or_else(|| "the socket handed over".to_string(), |a| format!("tcp://{a}"));
    if config.tcp_without_token {
        if tcp.is_some_and(|a| !a.ip().is_loopback()) {
            return Err(StartError::Insecure(format!(
                "refusing to serve {named} without a token: it is not a loopback address"
            )));
        }
        log::warn!("serving {named} without a token: every local user can control this daemon");
        return Ok((None, None));
    }
    if tcp.is_some_and(|a| !a.ip().is_loopback()) {
        log::warn!("{named} is reachable from other machines; calls need the token");
    }
    let path = config.token_path();
    let (token, made) = load_or_make_token(os, &path).map_err(|e| StartError::Token(path.clone(), e))?;
    log::info!("token for tcp clients in {}", path.display());
    if tcp.is_none() {
        log::debug!("the socket handed over may be unix or tcp: unix peers are judged by their credentials");
    }
    Ok((Some(token), made.then_some(path)))
}

/// The token in `path` if a private file of this user's holds one, or a new
/// random one written there (mode 0600); `true` when it was made now.
pub(super) fn load_or_make_token<O: Os>(os: &mut O, path: &std::path::Path) -> io::Result<(String, bool)> {
    if let Some(bytes) = os.read_private_file(path, 1024)? {
        let text = String::from_utf8(bytes).map_err(|_| io::Error::new(ErrorKind::InvalidData, "not text"))?;
        let token = text.trim();
        if token.len() < 32 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(io::Error::new(ErrorKind::InvalidData, "holds no token (32 or more printable characters)"));
        }
        return Ok((token.to_string(), false));
    }
    let mut bytes = [0u8; TOKEN_BYTES];
    os.random_bytes(&mut bytes)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    os.write_private_file(path, format!("{token}\n").as_bytes())?;
    Ok((token, true))
}

/// Binds the control socket. A unix socket file nobody answers on is stale
/// and removed; one that answers belongs to a live daemon and is an error.
pub(super) fn bind<O: Os>(os: &mut O, config: &Config) -> Result<Fd, StartError> {
    if let Some(fd) = config.listen_fd {
        return Ok(fd);
    }
    let opts = ListenOptions { backlog: 128, unix_mode: config.socket_mode };
    match os.listen(&config.address, opts) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.kind() == ErrorKind::AddrInUse => {
            if let Address::Unix(path) = &config.address {
                // Only a socket file is ever removed, and only once its
                // connect was refused: anything else at the path is not
                // ours to touch.
                if os.file_kind(path) != Some(FileKind::Socket) {
                    return Err(StartError::SocketPathTaken(path.clone()));
                }
                match os.connect(&config.address) {
                    Ok(fd) => {
                        os.close(fd);
                        return Err(StartError::AddressAnswers(config.address.clone()));
                    }
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                        log::info!("removing stale socket {}", path.display());
                        let _ = os.remove_file(path);
                    }
                    Err(e) => return Err(StartError::Listen(config.address.clone(), e)),
                }
            } else {
                return Err(StartError::Listen(config.address.clone(), e));
            }
        }
        Err(e) => return Err(StartError::Listen(config.address.clone(), e)),
    }
    os.listen(&config.address, opts).map_err(|e| StartError::Listen(config.address.clone(), e))
}

/// The token: 32 random bytes, kept as 64 lowercase hex digits.
pub(super) const TOKEN_BYTES: usize = 32;
