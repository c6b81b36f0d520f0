//! Same seed, same run, bit for bit; another seed, another interleaving.

use forkd_os::contract::{read_to_end, reap_n, write_all};
use forkd_os::sim::{Report, SimOs, TraceEvent, World};
use forkd_os::{Os, Signal, SpawnOptions};

/// Four children race to write to one stream while the parent reads; who
/// writes when is up to the scheduler.
fn scenario(seed: u64) -> Report {
    World::new(seed).run(|os: &mut SimOs| {
        let sig = os.install_signals(&[Signal::Chld]).unwrap();
        let (here, there) = os.socket_pair().unwrap();
        for i in 0..4u8 {
            os.spawn(
                SpawnOptions::default(),
                Box::new(move |os: &mut SimOs| {
                    for round in 0..3u8 {
                        write_all(os, there, &[b'a' + i, b'0' + round]);
                    }
                    0
                }),
            )
            .unwrap();
        }
        os.close(there);
        let got = read_to_end(os, here);
        assert_eq!(got.len(), 24);
        reap_n(os, sig, 4);
        os.close(here);
        0
    })
}

#[test]
fn a_seed_replays_to_the_same_trace() {
    for seed in [1, 7, 42] {
        let a = scenario(seed);
        let b = scenario(seed);
        assert!(a.panics.is_empty(), "{:?}", a.panics);
        assert!(a.exits.len() == 5, "four children and the root exited: {:?}", a.exits);
        assert_eq!(a.trace, b.trace, "seed {seed} replayed differently");
        assert_eq!(a.trace_hash(), b.trace_hash());
    }
}

#[test]
fn different_seeds_interleave_differently() {
    let hashes: std::collections::BTreeSet<u64> = (0..8).map(|s| scenario(s).trace_hash()).collect();
    assert!(hashes.len() > 1, "eight seeds gave one interleaving");
    let (a, b) = (scenario(1), scenario(2));
    let order = |r: &Report| {
        r.trace.iter().filter(|l| matches!(l.event, TraceEvent::Write { .. })).map(|l| l.pid).collect::<Vec<_>>()
    };
    assert_ne!(order(&a), order(&b), "seeds 1 and 2 ran the writers in the same order");
}
