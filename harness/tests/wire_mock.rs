//! The harness's byte-stream helpers (`forkd_harness::wire`) against a
//! mocked `Os`: each test pins down the exact calls a helper makes around
//! short writes, `WouldBlock` and its deadline.

use std::io::ErrorKind;

use forkd_harness::wire::{self, Short};
use forkd_os::{Fd, Instant, Ready};
use mockall::Sequence;

#[path = "../../os/tests/support/mock_os.rs"]
mod mock_os;
use mock_os::MockOs;

fn at(ms: u64) -> Instant {
    Instant::from_nanos(ms * 1_000_000)
}

#[test]
fn write_all_goes_on_after_short_writes_and_would_block() {
    let mut os = MockOs::new();
    let mut seq = Sequence::new();
    os.expect_write().times(1).in_sequence(&mut seq).returning(|_, buf| {
        assert_eq!(buf, b"hello world");
        Ok(5)
    });
    os.expect_write().times(1).in_sequence(&mut seq).returning(|_, _| Err(ErrorKind::WouldBlock.into()));
    os.expect_now().times(1).in_sequence(&mut seq).return_const(at(1));
    os.expect_poll().times(1).in_sequence(&mut seq).returning(|fds, deadline| {
        assert_eq!((fds.len(), fds[0].fd, fds[0].interest), (1, Fd(7), Ready::WRITE));
        assert_eq!(deadline, Some(at(10)));
        fds[0].ready = Ready::WRITE;
        Ok(1)
    });
    os.expect_write().times(1).in_sequence(&mut seq).returning(|_, buf| {
        assert_eq!(buf, b" world", "the rest, not the whole buffer again");
        Ok(buf.len())
    });
    wire::write_all(&mut os, Fd(7), b"hello world", at(10)).unwrap();
}

#[test]
fn write_all_gives_up_at_its_deadline_and_says_how_much_went() {
    let mut os = MockOs::new();
    let mut seq = Sequence::new();
    os.expect_write().times(1).in_sequence(&mut seq).returning(|_, _| Ok(2));
    os.expect_write().times(1).in_sequence(&mut seq).returning(|_, _| Err(ErrorKind::WouldBlock.into()));
    os.expect_now().times(1).in_sequence(&mut seq).return_const(at(10));
    match wire::write_all(&mut os, Fd(7), b"abcd", at(10)) {
        Err((2, Short::Deadline)) => {}
        other => panic!("expected 2 bytes and the deadline, got {other:?}"),
    }
}

#[test]
fn read_some_takes_a_reset_for_the_end_of_file() {
    let mut os = MockOs::new();
    os.expect_read().times(1).returning(|_, _| Err(ErrorKind::ConnectionReset.into()));
    let mut buf = [0u8; 8];
    assert_eq!(wire::read_some(&mut os, Fd(3), &mut buf, at(5)).unwrap(), 0);
}
