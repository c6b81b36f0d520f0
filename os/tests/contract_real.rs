//! The contract suite against the kernel. Each check forks, so each runs in
//! a single-threaded process forked from its test thread (`isolated`).

use forkd_os::for_each_check;
use forkd_os::real::RealOs;

fn run(name: &str, check: fn(&mut RealOs, &std::path::Path)) {
    let dir = std::env::temp_dir().join(format!("forkd-contract-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let check_dir = dir.clone();
    forkd_os::real::isolated(std::time::Duration::from_secs(30), move || {
        let mut os = RealOs::new().expect("real os");
        check(&mut os, &check_dir);
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

macro_rules! real_check {
    ($name:ident) => {
        #[test]
        fn $name() {
            run(stringify!($name), forkd_os::contract::$name::<RealOs>);
        }
    };
}

mod real {
    use super::*;
    for_each_check!(real_check);
}
