//! Closing descriptors: what a forked child inherited, and a set at once.

use std::path::Path;

use crate::{Fd, Os, Ready, Signal, SpawnOptions};

use super::{read_to_end, reap_n, wait_ready, write_all};

/// `close_inherited`: a child that closes what it inherited lets its
/// parent's pipe end while it still runs, and keeps what it was told to.
pub fn close_inherited_closes_all_but_what_it_keeps<O: Os>(os: &mut O, _dir: &Path) {
    let sig = os.install_signals(&[Signal::Chld]).unwrap();
    let (r, w) = os.pipe().unwrap();
    let (here, there) = os.socket_pair().unwrap();
    os.spawn(
        SpawnOptions::default(),
        Box::new(move |os: &mut O| {
            os.close_inherited(&[there]);
            write_all(os, there, b"kept");
            // Runs until the parent closes its end.
            let _ = read_to_end(os, there);
            0
        }),
    )
    .unwrap();
    os.close(w);
    os.close(there);
    let mut buf = [0u8; 4];
    let mut got = Vec::new();
    while got.len() < 4 {
        wait_ready(os, here, Ready::READ);
        let n = os.read(here, &mut buf).unwrap();
        assert!(n > 0, "the kept socket carries the child's word");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"kept");
    assert_eq!(read_to_end(os, r), b"", "the pipe ends while the child runs: it closed its copy");
    os.close(here);
    assert_eq!(reap_n(os, sig, 1).len(), 1);
    os.close(r);
}

/// `close_all`: the descriptors given are closed, in runs or alone, and
/// the others stay open; a number given twice or never handed out is
/// ignored, as `close` ignores it.
pub fn close_all_closes_exactly_what_it_is_given<O: Os>(os: &mut O, _dir: &Path) {
    let pairs: Vec<(Fd, Fd)> = (0..6).map(|_| os.socket_pair().unwrap()).collect();
    // Every other pair's first end, two of them twice, and a stray number.
    let mut closing: Vec<Fd> = pairs.iter().step_by(2).map(|p| p.0).collect();
    closing.extend([pairs[0].0, pairs[2].0, Fd(100_000)]);
    os.close_all(&closing);
    for (i, &(a, b)) in pairs.iter().enumerate() {
        if i % 2 == 0 {
            // A peer's end that was closed reads as end of file.
            assert!(read_to_end(os, b).is_empty(), "pair {i}: its first end was closed");
        } else {
            write_all(os, a, b"open");
            let mut buf = [0u8; 4];
            wait_ready(os, b, Ready::READ);
            assert_eq!(os.read(b, &mut buf).unwrap(), 4, "pair {i}: both ends still open");
            os.close(a);
        }
        os.close(b);
    }
}
