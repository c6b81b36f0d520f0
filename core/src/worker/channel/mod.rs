//! The shared-memory channel between the daemon and one worker process.
//!
//! Each worker gets a region of a few KiB that the daemon creates before it
//! forks the worker, so both map it. On it lie the worker's state, its loop
//! count and heartbeat, its last error, a command mailbox (daemon to
//! worker), a reply mailbox (worker to daemon) and a small ring of events
//! the worker sends on its own (`Context::send`). A byte on the worker's
//! socket pair says "look at the channel"; the channel holds what to look
//! at. The memory carries the data and the socket carries the wake-up, so
//! neither side ever polls with sleeps, and a message never has to be framed
//! on a stream.
//!
//! Everything is lock-free, because the other side is another process that
//! may be killed at any instruction: a lock it held would never be released.
//! Each word or block has exactly one writer (see `layout`), single words are
//! plain atomics, blocks of words are seqlocks, and the event ring is a
//! single-producer single-consumer queue. So no side ever waits for the
//! other, and a worker that dies mid-write leaves at worst a block that reads
//! as [`ChannelError::Torn`].
//!
//! Every read validates what it finds — magic, layout version, lengths,
//! kinds, states — and turns anything wrong into a [`ChannelError`]. This
//! module must never panic on the contents of the region: a broken worker
//! must not take its daemon down with it.
//!
//! One command is in flight at a time: [`Channel::send_command`] refuses
//! with [`ChannelError::Busy`] until the previous command is acknowledged and
//! its reply taken, so a reply is never overwritten before the daemon has
//! read it. A daemon that needs to stop a worker that does not answer uses
//! signals, not the mailbox.

mod error;
mod layout;
mod message;
mod seqlock;
mod table;
#[cfg(test)]
mod tests;

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use forkd_os::{Instant, Region};
use serde_json::Value;

use layout::*;

pub use error::ChannelError;
pub use layout::{ERROR_MAX, EVENT_MAX, EVENT_SLOTS, PAYLOAD_MAX};
pub use message::{Command, PendingCommand, Reply, WorkerState};
pub use table::{Slot, Table};

/// The bytes of shared memory a channel needs: what to pass to
/// `Os::shm_create`.
pub const REGION_SIZE: usize = WORDS * 8;

/// A handle on a worker's channel. Cloning it copies the handle: the daemon
/// keeps one and moves a clone into the worker's entry.
///
/// The daemon calls the methods under "daemon side", the worker process
/// (`run_worker`) those under "worker side"; each field has a single writer,
/// so mixing them up breaks the protocol (though never memory safety).
#[derive(Clone, Debug)]
pub struct Channel {
    /// At least `REGION_SIZE` bytes: checked by `create` and `attach`, so
    /// that no index below can fall outside it.
    region: Region,
    /// The hot words: in a [`Table`], or at the start of `region`.
    hot: Slot,
}

impl Channel {
    /// Lays a channel out on a fresh region, as `Os::shm_create` makes it
    /// (zeroed, which every field's empty state is), with its slot at the
    /// region's start.
    ///
    /// # Panics
    /// If the region is smaller than [`REGION_SIZE`]: the daemon sizes it.
    pub fn create(region: Region) -> Channel {
        let hot = Slot::within(&region);
        Channel::create_in(region, hot)
    }

    /// Lays a channel out on a fresh region, with its hot words in `slot`
    /// (a slot of a [`Table`], which may have served another channel
    /// before). Only the slot is written, so that the pages of the region
    /// a worker never uses are never made resident in the daemon.
    ///
    /// # Panics
    /// If the region is smaller than [`REGION_SIZE`].
    pub fn create_in(region: Region, slot: Slot) -> Channel {
        check_size(&region);
        debug_assert!(
            (SLOT_WORDS..WORDS).all(|w| region.load(w, Relaxed) == 0),
            "a channel is laid out on a fresh, zeroed region"
        );
        for w in 1..SLOT_WORDS {
            slot.store(w, 0, Relaxed);
        }
        slot.store(S_STATE, WorkerState::Spinup.to_word(), Relaxed);
        slot.store(S_VERSION, VERSION, Relaxed);
        // The magic last, with release: whoever sees it sees the rest.
        slot.store(S_MAGIC, MAGIC, Release);
        Channel { region, hot: slot }
    }

    /// A handle on a channel already laid out on `region` by `create` (in
    /// this process or before a fork). It checks nothing but the size: every
    /// read checks the magic and the layout version, since a worker may
    /// scribble over its region at any time.
    ///
    /// # Panics
    /// If the region is smaller than [`REGION_SIZE`].
    pub fn attach(region: Region) -> Channel {
        let hot = Slot::within(&region);
        Channel::attach_in(region, hot)
    }

    /// A handle on a channel laid out by `create_in` with `slot`.
    ///
    /// # Panics
    /// If the region is smaller than [`REGION_SIZE`].
    pub fn attach_in(region: Region, slot: Slot) -> Channel {
        check_size(&region);
        Channel { region, hot: slot }
    }

    /// The region under the channel.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The region back, to unmap it.
    pub fn into_region(self) -> Region {
        self.region
    }

    fn check_header(&self) -> Result<(), ChannelError> {
        let magic = self.hot.load(S_MAGIC, Acquire);
        if magic != MAGIC {
            return Err(ChannelError::BadMagic(magic));
        }
        let version = self.hot.load(S_VERSION, Relaxed);
        if version != VERSION {
            return Err(ChannelError::BadVersion(version));
        }
        Ok(())
    }

    // --- daemon side ----------------------------------------------------------

    /// The state the worker last wrote.
    pub fn state(&self) -> Result<WorkerState, ChannelError> {
        self.check_header()?;
        WorkerState::from_word(self.hot.load(S_STATE, Acquire))
    }

    /// How many times the loop body has run.
    pub fn loops(&self) -> Result<u64, ChannelError> {
        self.check_header()?;
        Ok(self.hot.load(S_LOOPS, Relaxed))
    }

    /// When the worker last showed it was alive: nanoseconds of the `Os`
    /// clock (`Instant(n)`), which the daemon and its workers share. Zero
    /// until the worker first beats.
    pub fn heartbeat(&self) -> Result<u64, ChannelError> {
        self.check_header()?;
        Ok(self.hot.load(S_HEARTBEAT, Relaxed))
    }

    /// Whether the worker is ready: its first loop began, or it said so
    /// from `spinup` with `Context::ready`. A rolling reload stops an old
    /// instance only once its replacement reads ready here.
    pub fn ready(&self) -> Result<bool, ChannelError> {
        self.check_header()?;
        Ok(self.hot.load(S_READY, Acquire) != 0)
    }

    /// The version of the last error: it changes (to an even number) each
    /// time the worker records one, so that a reader copies the text only
    /// when there is a new one.
    pub fn last_error_version(&self) -> u64 {
        self.hot.load(S_ERR_VER, Relaxed)
    }

    /// The last error the worker recorded: an `Err` of `spinup` or `work`,
    /// or `panic: ...`. `None` if there was none.
    pub fn last_error(&self) -> Result<Option<String>, ChannelError> {
        self.check_header()?;
        let (len, bytes) = seqlock::read(&self.region, ERR_VER, |r| copy_bytes(r, ERR_LEN, ERR_BYTES, ERROR_MAX))?;
        if len > ERROR_MAX as u64 {
            return Err(ChannelError::BadLength { field: "last error", len, max: ERROR_MAX });
        }
        if len == 0 {
            return Ok(None);
        }
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Puts `command` in the mailbox and returns its sequence number, which
    /// the reply will carry. The caller then writes a byte on its end of the
    /// worker's socket pair to wake the worker.
    ///
    /// `Busy` while the previous command is unacknowledged or its reply not
    /// taken with [`take_reply`](Channel::take_reply).
    pub fn send_command(&self, command: Command) -> Result<u64, ChannelError> {
        self.check_header()?;
        let seq = self.region.load(CMD_SEQ, Relaxed);
        let acked = self.hot.load(S_REP_SEQ, Acquire);
        let taken = self.hot.load(S_REP_TAKEN, Relaxed);
        if acked > seq || taken > acked {
            return Err(ChannelError::Inconsistent("command sequence"));
        }
        if acked != seq || taken != seq {
            return Err(ChannelError::Busy { pending: seq });
        }
        let payload = match &command {
            Command::Message(v) => serde_json::to_vec(v).map_err(|e| ChannelError::BadPayload(e.to_string()))?,
            Command::Pause | Command::Resume | Command::Stop => Vec::new(),
        };
        if payload.len() > PAYLOAD_MAX {
            return Err(ChannelError::TooLarge { len: payload.len(), max: PAYLOAD_MAX });
        }
        // Only a scribbled word gets here: no daemon sends 2^64 commands.
        let next = seq.checked_add(1).ok_or(ChannelError::Inconsistent("command sequence"))?;
        seqlock::write(&self.region, CMD_VER, |r| {
            r.store(CMD_SEQ, next, Relaxed);
            r.store(CMD_KIND, command.kind(), Relaxed);
            r.store(CMD_LEN, payload.len() as u64, Relaxed);
            r.write_bytes(byte(CMD_BYTES), &payload);
        });
        Ok(next)
    }

    /// The reply to the command in flight, once the worker has written it;
    /// `None` before. Taking it frees the mailbox for the next command.
    ///
    /// A reply whose payload is unreadable is still a reply (the command was
    /// acknowledged): it comes back as `Err("bad reply: ...")`.
    pub fn take_reply(&self) -> Result<Option<Reply>, ChannelError> {
        self.check_header()?;
        let taken = self.hot.load(S_REP_TAKEN, Relaxed);
        if self.hot.load(S_REP_SEQ, Acquire) == taken {
            // Nothing new: the mailbox's pages are not touched.
            return Ok(None);
        }
        let seq = self.region.load(CMD_SEQ, Relaxed);
        let (acked, result, (len, bytes)) = seqlock::read(&self.region, REP_VER, |r| {
            (r.load(REP_SEQ, Relaxed), r.load(REP_RESULT, Relaxed), copy_bytes(r, REP_LEN, REP_BYTES, PAYLOAD_MAX))
        })?;
        if acked == taken {
            return Ok(None);
        }
        if acked != seq || taken > acked {
            return Err(ChannelError::Inconsistent("reply sequence"));
        }
        self.hot.store(S_REP_TAKEN, acked, Release);
        let result = decode_reply(result, len, &bytes).map_err(|e| format!("bad reply: {e}"));
        Ok(Some(Reply { seq: acked, result: result.and_then(|r| r) }))
    }

    /// The events the worker sent with `Context::send` since the last take,
    /// oldest first (at most [`EVENT_SLOTS`]).
    ///
    /// An unreadable event is reported on its own: the events before it come
    /// back first, and the next call returns its error and skips it. So each
    /// call makes progress and nothing readable is lost.
    pub fn take_events(&self) -> Result<Vec<Value>, ChannelError> {
        self.check_header()?;
        let head = self.hot.load(S_EV_HEAD, Acquire);
        let mut tail = self.hot.load(S_EV_TAIL, Relaxed);
        if head == tail {
            return Ok(Vec::new());
        }
        if head.wrapping_sub(tail) > EVENT_SLOTS as u64 {
            // Garbage counters: drop whatever they claim, start afresh.
            self.hot.store(S_EV_TAIL, head, Release);
            return Err(ChannelError::Inconsistent("event ring"));
        }
        let mut events = Vec::new();
        while tail != head {
            let slot = ev_slot((tail % EVENT_SLOTS as u64) as usize);
            match decode_event(&self.region, slot) {
                Ok(v) => events.push(v),
                Err(e) if events.is_empty() => {
                    self.hot.store(S_EV_TAIL, tail.wrapping_add(1), Release);
                    return Err(e);
                }
                Err(_) => break,
            }
            tail = tail.wrapping_add(1);
        }
        self.hot.store(S_EV_TAIL, tail, Release);
        Ok(events)
    }

    // --- worker side ------------------------------------------------------------

    /// Publishes the worker's state.
    pub fn set_state(&self, state: WorkerState) {
        self.hot.store(S_STATE, state.to_word(), Release);
    }

    /// Publishes that the worker is ready (it never becomes unready).
    pub fn set_ready(&self) {
        self.hot.store(S_READY, 1, Release);
    }

    /// Whether this worker has published that it is ready.
    pub fn is_ready(&self) -> bool {
        self.hot.load(S_READY, Relaxed) != 0
    }

    /// Publishes the loop count.
    pub fn set_loops(&self, loops: u64) {
        self.hot.store(S_LOOPS, loops, Relaxed);
    }

    /// Records that the worker is alive at `now`.
    pub fn beat(&self, now: Instant) {
        self.hot.store(S_HEARTBEAT, now.as_nanos(), Relaxed);
    }

    /// Records the last error, cut to [`ERROR_MAX`] bytes.
    pub fn set_last_error(&self, message: &str) {
        let message = truncate(message, ERROR_MAX);
        seqlock::write(&self.region, ERR_VER, |r| {
            r.store(ERR_LEN, message.len() as u64, Relaxed);
            r.write_bytes(byte(ERR_BYTES), message.as_bytes());
        });
        self.hot.store(S_ERR_VER, self.region.load(ERR_VER, Relaxed), Release);
    }

    /// Whether a command waits to be acknowledged: two atomic loads, cheap
    /// enough for a long loop body to call often.
    pub fn command_pending(&self) -> bool {
        self.region.load(CMD_SEQ, Acquire) != self.region.load(REP_SEQ, Relaxed)
    }

    /// Whether the waiting command is `Stop`.
    pub fn stop_pending(&self) -> bool {
        let acked = self.region.load(REP_SEQ, Relaxed);
        let read = seqlock::read(&self.region, CMD_VER, |r| (r.load(CMD_SEQ, Relaxed), r.load(CMD_KIND, Relaxed)));
        matches!(read, Ok((seq, message::KIND_STOP)) if seq != acked)
    }

    /// The command waiting to be acknowledged, if any.
    pub fn read_command(&self) -> Result<Option<PendingCommand>, ChannelError> {
        if !self.command_pending() {
            return Ok(None);
        }
        self.check_header()?;
        let acked = self.region.load(REP_SEQ, Relaxed);
        let (seq, kind, (len, bytes)) = seqlock::read(&self.region, CMD_VER, |r| {
            (r.load(CMD_SEQ, Relaxed), r.load(CMD_KIND, Relaxed), copy_bytes(r, CMD_LEN, CMD_BYTES, PAYLOAD_MAX))
        })?;
        if seq == acked {
            return Ok(None);
        }
        Ok(Some(PendingCommand { seq, command: decode_command(kind, len, &bytes) }))
    }

    /// Acknowledges command `seq` with `result`. A result that does not fit
    /// is replaced by an error saying so.
    pub fn write_reply(&self, seq: u64, result: &Result<Value, String>) {
        let (word, payload) = match result {
            Ok(v) => match serde_json::to_vec(v) {
                Ok(b) if b.len() <= PAYLOAD_MAX => (RESULT_OK, b),
                Ok(b) => (RESULT_ERR, format!("reply of {} bytes over {PAYLOAD_MAX}", b.len()).into_bytes()),
                Err(e) => (RESULT_ERR, format!("unencodable reply: {e}").into_bytes()),
            },
            Err(msg) => (RESULT_ERR, truncate(msg, PAYLOAD_MAX).as_bytes().to_vec()),
        };
        seqlock::write(&self.region, REP_VER, |r| {
            r.store(REP_SEQ, seq, Relaxed);
            r.store(REP_RESULT, word, Relaxed);
            r.store(REP_LEN, payload.len() as u64, Relaxed);
            r.write_bytes(byte(REP_BYTES), &payload);
        });
        // After the block, with release: the daemon that sees the number
        // sees the reply.
        self.hot.store(S_REP_SEQ, seq, Release);
    }

    /// Publishes an event for the daemon: `Full` while the daemon has not
    /// taken the earlier ones, `TooLarge` over [`EVENT_MAX`] bytes of JSON.
    pub fn push_event(&self, data: &Value) -> Result<(), ChannelError> {
        let bytes = serde_json::to_vec(data).map_err(|e| ChannelError::BadPayload(e.to_string()))?;
        if bytes.len() > EVENT_MAX {
            return Err(ChannelError::TooLarge { len: bytes.len(), max: EVENT_MAX });
        }
        let head = self.hot.load(S_EV_HEAD, Relaxed);
        let tail = self.hot.load(S_EV_TAIL, Acquire);
        if head.wrapping_sub(tail) >= EVENT_SLOTS as u64 {
            return Err(ChannelError::Full);
        }
        let slot = ev_slot((head % EVENT_SLOTS as u64) as usize);
        self.region.store(slot, bytes.len() as u64, Relaxed);
        self.region.write_bytes(byte(slot + 1), &bytes);
        // Release: the daemon that sees the new head sees the slot's bytes.
        self.hot.store(S_EV_HEAD, head.wrapping_add(1), Release);
        Ok(())
    }
}

fn check_size(region: &Region) {
    assert!(region.len() >= REGION_SIZE, "a worker channel needs {REGION_SIZE} bytes, the region has {}", region.len());
}

/// Copies a length word and at most `max` bytes: `len` may be garbage, the
/// copy never reads past the block.
fn copy_bytes(r: &Region, len_word: usize, bytes_word: usize, max: usize) -> (u64, Vec<u8>) {
    let len = r.load(len_word, Relaxed);
    let n = usize::try_from(len).map_or(max, |l| l.min(max));
    let mut bytes = vec![0u8; n];
    r.read_bytes(byte(bytes_word), &mut bytes);
    (len, bytes)
}

fn check_len(field: &'static str, len: u64, max: usize) -> Result<(), ChannelError> {
    if len > max as u64 {
        return Err(ChannelError::BadLength { field, len, max });
    }
    Ok(())
}

fn decode_command(kind: u64, len: u64, bytes: &[u8]) -> Result<Command, ChannelError> {
    check_len("command payload", len, PAYLOAD_MAX)?;
    match kind {
        message::KIND_PAUSE => Ok(Command::Pause),
        message::KIND_RESUME => Ok(Command::Resume),
        message::KIND_STOP => Ok(Command::Stop),
        message::KIND_MESSAGE => {
            serde_json::from_slice(bytes).map(Command::Message).map_err(|e| ChannelError::BadPayload(e.to_string()))
        }
        other => Err(ChannelError::BadKind(other)),
    }
}

/// The outer `Result` says whether the reply could be read, the inner one
/// is the worker's answer.
fn decode_reply(word: u64, len: u64, bytes: &[u8]) -> Result<Result<Value, String>, ChannelError> {
    check_len("reply payload", len, PAYLOAD_MAX)?;
    match word {
        RESULT_OK => serde_json::from_slice(bytes).map(Ok).map_err(|e| ChannelError::BadPayload(e.to_string())),
        RESULT_ERR => Ok(Err(String::from_utf8_lossy(bytes).into_owned())),
        other => Err(ChannelError::BadResult(other)),
    }
}

fn decode_event(r: &Region, slot: usize) -> Result<Value, ChannelError> {
    let (len, bytes) = copy_bytes(r, slot, slot + 1, EVENT_MAX);
    check_len("event", len, EVENT_MAX)?;
    serde_json::from_slice(&bytes).map_err(|e| ChannelError::BadPayload(e.to_string()))
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
