//! The contract's checks of what the control plane's security stands on:
//! private files, the pid file's refusals, peer credentials, random bytes,
//! socket modes and file kinds.

use super::*;

/// A private file reads back what was written, an absent one reads
/// `None`, the size limit is inclusive, and an existing file is never
/// overwritten.
pub fn private_file_round_trip<O: Os>(os: &mut O, dir: &Path) {
    let path = dir.join("secret.token");
    assert_eq!(os.read_private_file(&path, 64).unwrap(), None, "an absent file is none, not an error");
    os.write_private_file(&path, b"s3cr3t").unwrap();
    assert_eq!(os.read_private_file(&path, 64).unwrap().as_deref(), Some(&b"s3cr3t"[..]));
    assert_eq!(os.read_private_file(&path, 6).unwrap().as_deref(), Some(&b"s3cr3t"[..]), "a limit is inclusive");
    let err = os.read_private_file(&path, 5).unwrap_err();
    assert_eq!((err.kind(), err.to_string()), (ErrorKind::InvalidData, "larger than 5 bytes".to_string()));
    let err = os.write_private_file(&path, b"other").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "a private file is never overwritten");
    assert_eq!(os.read_private_file(&path, 64).unwrap().as_deref(), Some(&b"s3cr3t"[..]));
    os.remove_file(&path).unwrap();
}

/// A private file is made 0600, and one that others may read or write
/// (or reached through a symbolic link) is refused with `PermissionDenied`.
pub fn private_file_refused_when_others_may_read<O: Os + Tamper>(os: &mut O, dir: &Path) {
    let path = dir.join("open.token");
    os.write_private_file(&path, b"s3cr3t").unwrap();
    assert_eq!(os.mode_of(&path), Some(0o600), "a private file is made 0600");
    os.chmod(&path, 0o640);
    let err = os.read_private_file(&path, 64).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    assert_eq!(err.to_string(), "readable or writable by others (mode 0640)");
    let link = dir.join("link.token");
    os.chmod(&path, 0o600);
    os.symlink(&path, &link);
    let err = os.read_private_file(&link, 64).unwrap_err();
    assert_eq!((err.kind(), err.to_string()), (ErrorKind::PermissionDenied, "is a symbolic link".to_string()));
    let err = os.write_private_file(&link, b"x").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "nor is one written through a link");
    assert_eq!(os.content_of(&path).as_deref(), Some(&b"s3cr3t"[..]));
    os.remove_file(&link).unwrap();
    os.remove_file(&path).unwrap();
}

/// A pid file that is a symbolic link is refused as unsafe, and its
/// target is left untouched.
pub fn pid_file_through_a_symlink_is_refused<O: Os + Tamper>(os: &mut O, dir: &Path) {
    let target = dir.join("precious");
    let link = dir.join("daemon.pid");
    os.write_file(&target, b"precious data\n");
    os.symlink(&target, &link);
    match os.lock_pid_file(&link) {
        Err(PidFileError::Unsafe(why)) => assert_eq!(why, "is a symbolic link"),
        other => panic!("locked a pid file through a symbolic link: {other:?}"),
    }
    assert_eq!(os.content_of(&target).as_deref(), Some(&b"precious data\n"[..]), "the link's target is untouched");
    // A dangling link is refused too, and creates nothing at its target.
    os.remove_file(&target).unwrap();
    assert!(matches!(os.lock_pid_file(&link), Err(PidFileError::Unsafe(_))));
    assert!(!os.file_exists(&target), "nothing was created through the link");
    os.remove_file(&link).unwrap();
}

/// The peer of a unix stream, from a socket pair or a connect, is the
/// process that made it, with its uid and gid.
pub fn unix_peer_is_the_connecting_process<O: Os>(os: &mut O, dir: &Path) {
    let sig = os.install_signals(&[Signal::Chld]).unwrap();
    let (me, uid) = (os.pid(), os.uid());
    let (a, b) = os.socket_pair().unwrap();
    assert!(matches!(os.peer(a).unwrap(), Peer::Unix { pid, uid: u, .. } if pid == me && u == uid));
    os.close(a);
    os.close(b);

    let addr = Address::Unix(dir.join("peer.sock"));
    let listener = os.listen(&addr, ListenOptions::default()).unwrap();
    let child_addr = addr.clone();
    let child = os
        .spawn(
            SpawnOptions::default(),
            Box::new(move |os: &mut O| {
                let fd = os.connect(&child_addr).unwrap();
                // From the connecting side, the peer is whoever listened.
                let ok = matches!(os.peer(fd).unwrap(), Peer::Unix { pid, uid: u, .. } if pid == me && u == uid);
                os.close(fd);
                i32::from(!ok)
            }),
        )
        .unwrap();
    wait_ready(os, listener, Ready::READ);
    let server = os.accept(listener).unwrap();
    match os.peer(server).unwrap() {
        Peer::Unix { pid, uid: u, .. } => assert_eq!((pid, u), (child, uid), "the peer is the process that connected"),
        other => panic!("a unix peer told as {other:?}"),
    }
    assert_eq!(reap_n(os, sig, 1), vec![(child, ExitStatus::Exited(0))], "the child saw the listener as its peer");
    os.close(server);
    os.close(listener);
    os.remove_file(addr.unix_path().unwrap()).unwrap();
}

/// Random bytes fill the whole buffer, whatever its length, and two
/// draws differ.
pub fn random_bytes_fill_and_differ<O: Os>(os: &mut O, _dir: &Path) {
    let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
    os.random_bytes(&mut a).unwrap();
    os.random_bytes(&mut b).unwrap();
    assert_ne!(a, [0u8; 32], "32 random bytes are not all zero");
    assert_ne!(a, b, "two draws differ");
    let mut odd = [0u8; 13];
    os.random_bytes(&mut odd).unwrap();
    assert_ne!(odd[8..], [0u8; 5], "a length that is not a multiple of 8 is filled to its end");
}

/// A unix socket file gets the mode asked for whatever the umask, and
/// `listen` puts the umask back.
pub fn unix_socket_mode_ignores_the_umask<O: Os + Tamper>(os: &mut O, dir: &Path) {
    let path = dir.join("mode.sock");
    let addr = Address::Unix(path.clone());
    for (umask, mode) in [(0o077, 0o660), (0o000, 0o600), (0o022, 0o660), (0o777, 0o600)] {
        let previous = os.set_umask(umask);
        let listener = os.listen(&addr, ListenOptions { unix_mode: mode, ..ListenOptions::default() });
        let during = os.set_umask(previous);
        let listener = listener.unwrap();
        assert_eq!(during, umask, "listen puts the umask back as it found it");
        assert_eq!(os.mode_of(&path), Some(mode), "a socket asked for {mode:04o} under umask {umask:03o}");
        os.close(listener);
        os.remove_file(&path).unwrap();
    }
}

/// `file_kind` tells regular files, sockets and symbolic links apart
/// (dangling ones too) without following links, and `None` for nothing.
pub fn file_kind_tells_kinds_apart<O: Os + Tamper>(os: &mut O, dir: &Path) {
    let (file, sock, link, dangling) =
        (dir.join("kind.file"), dir.join("kind.sock"), dir.join("kind.link"), dir.join("kind.dangling"));
    assert_eq!(os.file_kind(&file), None);
    os.write_private_file(&file, b"x").unwrap();
    let listener = os.listen(&Address::Unix(sock.clone()), ListenOptions::default()).unwrap();
    os.symlink(&file, &link);
    os.symlink(&dir.join("nothing"), &dangling);
    assert_eq!(os.file_kind(&file), Some(FileKind::Regular));
    assert_eq!(os.file_kind(&sock), Some(FileKind::Socket));
    assert_eq!(os.file_kind(&link), Some(FileKind::Symlink), "a link is not followed");
    assert_eq!(os.file_kind(&dangling), Some(FileKind::Symlink), "a dangling link is still there");
    os.close(listener);
    for path in [&file, &sock, &link, &dangling] {
        os.remove_file(path).unwrap();
        assert_eq!(os.file_kind(path), None);
    }
}

/// A daemon died, but a process it forked still holds the lock it inherited
/// (a stray worker): the lock is held, the pid the file names is gone.
pub fn pid_file_held_by_an_heir_is_locked_by_other<O: Os>(os: &mut O, dir: &Path) {
    let sig = os.install_signals(&[Signal::Chld]).unwrap();
    let path = dir.join("heir.pid");
    let (here, there) = os.socket_pair().unwrap();
    let child_path = path.clone();
    let child = os
        .spawn(
            SpawnOptions::default(),
            Box::new(move |os: &mut O| {
                os.close(here);
                let Ok(lock) = os.lock_pid_file(&child_path) else { return 1 };
                let heir = os.spawn(
                    SpawnOptions::default(),
                    Box::new(move |os: &mut O| {
                        // Holds the inherited lock until told to let go,
                        // then says it has, and waits for the end.
                        write_all(os, there, b"h");
                        let mut buf = [0u8; 1];
                        wait_ready(os, there, Ready::READ);
                        if os.read(there, &mut buf).ok() != Some(1) {
                            return 1;
                        }
                        os.close(lock);
                        write_all(os, there, b"r");
                        read_to_end(os, there);
                        0
                    }),
                );
                i32::from(heir.is_err())
            }),
        )
        .unwrap();
    let mut buf = [0u8; 1];
    wait_ready(os, here, Ready::READ);
    assert_eq!(os.read(here, &mut buf).unwrap(), 1, "the heir is up");
    assert_eq!(reap_n(os, sig, 1), vec![(child, ExitStatus::Exited(0))]);
    match os.lock_pid_file(&path) {
        Err(PidFileError::LockedByOther(Some(pid))) => assert_eq!(pid, child.0, "the file names the dead locker"),
        other => panic!("a lock held by an heir of a dead daemon: {other:?}"),
    }
    write_all(os, here, b"g");
    wait_ready(os, here, Ready::READ);
    assert_eq!(os.read(here, &mut buf).unwrap(), 1, "the heir let go");
    let lock = os.lock_pid_file(&path).expect("the lock, once the heir let go");
    os.close(lock);
    os.close(here);
    os.remove_file(&path).unwrap();
}
