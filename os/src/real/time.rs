//! The monotonic clock, and sleeping until a point on it.
//!
//! Deadlines are absolute instants, so the sleep is an absolute
//! `clock_nanosleep`: a signal that interrupts it is retried with the same
//! deadline, and the time spent in the handler is not slept again.

use nix::sys::time::TimeSpec;
use nix::time::{clock_gettime, clock_nanosleep, ClockId, ClockNanosleepFlags};

use crate::real::sys::retry;
use crate::Instant;

const NANOS_PER_SEC: u64 = 1_000_000_000;

pub(super) fn now() -> Instant {
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is always readable on linux");
    // The monotonic clock counts from boot: never negative.
    Instant::from_nanos(ts.tv_sec() as u64 * NANOS_PER_SEC + ts.tv_nsec() as u64)
}

pub(super) fn sleep_until(deadline: Instant) {
    let nanos = deadline.as_nanos();
    // u64::MAX nanoseconds is some 584 years: the seconds fit a time_t.
    let ts = TimeSpec::new((nanos / NANOS_PER_SEC) as libc::time_t, (nanos % NANOS_PER_SEC) as libc::c_long);
    // The loop only guards against an early return the kernel does not make:
    // `retry` already restarts a sleep a signal interrupted.
    while now() < deadline {
        retry(|| clock_nanosleep(ClockId::CLOCK_MONOTONIC, ClockNanosleepFlags::TIMER_ABSTIME, &ts))
            .expect("an absolute sleep on CLOCK_MONOTONIC cannot fail");
    }
}
