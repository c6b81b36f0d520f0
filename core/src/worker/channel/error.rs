//! What can go wrong reading or writing a channel.
//!
//! Most variants describe memory that does not hold what it should: the
//! other side is another process, which may have died mid-write or been
//! overwritten by a stray pointer, and the daemon must survive either. A
//! reader reports them and carries on; none of them is a panic.

use std::fmt;

/// An error of a channel operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelError {
    /// The region does not start with the channel magic: it is not a
    /// channel, or something overwrote it.
    BadMagic(u64),
    /// The region holds a channel of another layout version.
    BadVersion(u64),
    /// A mailbox was mid-write (or kept changing) over every retry of a
    /// read: its writer is slow, stopped, or died mid-write. Try again later.
    Torn,
    /// A length word is over its bound.
    BadLength {
        /// Which length word: the mailbox or record it sizes.
        field: &'static str,
        /// The length found, in bytes.
        len: u64,
        /// Its bound, in bytes.
        max: usize,
    },
    /// The state word names no `WorkerState`.
    BadState(u64),
    /// The command kind word names no command.
    BadKind(u64),
    /// The reply's result word is neither ok nor err.
    BadResult(u64),
    /// A payload is not valid JSON.
    BadPayload(String),
    /// Sequence or ring counters contradict each other.
    Inconsistent(&'static str),
    /// The previous command (this sequence number) is unacknowledged, or its
    /// reply has not been taken: one command is in flight at a time.
    Busy {
        /// The sequence number of the command still in flight.
        pending: u64,
    },
    /// A payload is over its mailbox's bound.
    TooLarge {
        /// The payload's length once encoded, in bytes.
        len: usize,
        /// The mailbox's bound, in bytes.
        max: usize,
    },
    /// The event ring is full: the daemon has not taken the earlier events.
    Full,
}

impl fmt::Display for ChannelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelError::BadMagic(v) => write!(f, "not a worker channel: magic {v:#018x}"),
            ChannelError::BadVersion(v) => {
                write!(f, "channel layout version {v}, expected {}", super::layout::VERSION)
            }
            ChannelError::Torn => f.write_str("torn read: the writer did not finish"),
            ChannelError::BadLength { field, len, max } => {
                write!(f, "{field} length {len} over {max}")
            }
            ChannelError::BadState(v) => write!(f, "unknown worker state {v}"),
            ChannelError::BadKind(v) => write!(f, "unknown command kind {v}"),
            ChannelError::BadResult(v) => write!(f, "unknown reply result {v}"),
            ChannelError::BadPayload(e) => write!(f, "bad payload: {e}"),
            ChannelError::Inconsistent(what) => write!(f, "inconsistent {what}"),
            ChannelError::Busy { pending } => write!(f, "busy with command {pending}"),
            ChannelError::TooLarge { len, max } => {
                write!(f, "payload of {len} bytes over {max}")
            }
            ChannelError::Full => f.write_str("event ring full"),
        }
    }
}

impl std::error::Error for ChannelError {}
