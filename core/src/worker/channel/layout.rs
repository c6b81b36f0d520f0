//! Where each field of a channel lives in its region, in 8-byte words.
//!
//! The layout is the channel's wire format between two processes that may
//! come from different builds only in theory (a worker is a fork of its
//! daemon), but it is still versioned: a region is recognised by its magic
//! word and refused when its layout version differs, rather than misread.
//! Changing anything here means bumping [`VERSION`].
//!
//! Each field has one writer. The slot's words (state, loops, heartbeat,
//! the counters of the mailboxes and of the event ring) are single atomic
//! words; the blocks of several words (last error, command,
//! reply) are seqlocks: a version word, odd while its writer is writing, then
//! the fields. The event ring is a single-producer single-consumer queue:
//! the worker owns `S_EV_HEAD` and the ring's entries it has not published
//! yet, the daemon owns `S_EV_TAIL` and `S_REP_TAKEN`.

/// "FORKDWRK" read as a little-endian word.
pub const MAGIC: u64 = u64::from_le_bytes(*b"FORKDWRK");
/// The layout version; bump it on any change to this file.
pub const VERSION: u64 = 2;

/// Longest last error kept, in bytes; longer ones are cut.
pub const ERROR_MAX: usize = 512;
/// Largest command or reply payload, in bytes of JSON.
pub const PAYLOAD_MAX: usize = 2048;
/// Largest event sent with `Context::send`, in bytes of JSON.
pub const EVENT_MAX: usize = 1024;
/// Events the worker may send before the daemon takes them.
pub const EVENT_SLOTS: usize = 8;

const fn words(bytes: usize) -> usize {
    bytes.div_ceil(8)
}

// --- the hot words: a slot of their own ----------------------------------
// What the daemon reads on every turn or wake-up lies in a slot of 16 words,
// apart from the rest of the channel: in a table that packs the slots of all
// workers into a few pages (`Table`), or in the first 16 words of the
// region for a channel on its own. So a thousand idle workers cost the
// daemon a few pages, not two pages each.

/// Words in a slot.
pub const SLOT_WORDS: usize = 16;
pub const S_MAGIC: usize = 0;
pub const S_VERSION: usize = 1;
/// Worker-owned: a `WorkerState` as a word.
pub const S_STATE: usize = 2;
/// Worker-owned: iterations of the loop body so far.
pub const S_LOOPS: usize = 3;
/// Worker-owned: the worker's clock, in nanoseconds, when it last beat.
pub const S_HEARTBEAT: usize = 4;
/// Worker-owned: the last error's seqlock version once it is written.
pub const S_ERR_VER: usize = 5;
/// Worker-owned: the sequence number of the last reply written, stored
/// after the reply's block.
pub const S_REP_SEQ: usize = 6;
/// Daemon-owned: the sequence number of the last reply taken.
pub const S_REP_TAKEN: usize = 7;
/// Worker-owned: events published so far (a free-running counter).
pub const S_EV_HEAD: usize = 8;
/// Daemon-owned: events taken so far (a free-running counter).
pub const S_EV_TAIL: usize = 9;
/// Worker-owned: non-zero once the worker is ready (its first loop began,
/// or it said so with `Context::ready`); what a rolling reload waits for.
pub const S_READY: usize = 10;
// Words 11..16 are reserved and zero.

// --- last error: worker-owned seqlock ----------------------------------------
/// After the slot a channel on its own keeps at its start.
pub const ERR_VER: usize = SLOT_WORDS;
pub const ERR_LEN: usize = ERR_VER + 1;
pub const ERR_BYTES: usize = ERR_VER + 2;

// --- command mailbox: daemon-owned seqlock -----------------------------------
pub const CMD_VER: usize = ERR_BYTES + words(ERROR_MAX);
/// The sequence number of the last command written, 0 before the first.
pub const CMD_SEQ: usize = CMD_VER + 1;
pub const CMD_KIND: usize = CMD_VER + 2;
pub const CMD_LEN: usize = CMD_VER + 3;
pub const CMD_BYTES: usize = CMD_VER + 4;

// --- reply mailbox: worker-owned seqlock -------------------------------------
pub const REP_VER: usize = CMD_BYTES + words(PAYLOAD_MAX);
/// The sequence number of the last command acknowledged.
pub const REP_SEQ: usize = REP_VER + 1;
pub const REP_RESULT: usize = REP_VER + 2;
pub const REP_LEN: usize = REP_VER + 3;
pub const REP_BYTES: usize = REP_VER + 4;

// --- event ring: slot i holds a length word, then the bytes --------------------
pub const EV_SLOT_WORDS: usize = 1 + words(EVENT_MAX);
pub const EV_SLOTS_AT: usize = REP_BYTES + words(PAYLOAD_MAX);

/// The first word of event slot `i` (its length); its bytes follow.
pub const fn ev_slot(i: usize) -> usize {
    EV_SLOTS_AT + (i % EVENT_SLOTS) * EV_SLOT_WORDS
}

/// Words a channel uses.
pub const WORDS: usize = EV_SLOTS_AT + EVENT_SLOTS * EV_SLOT_WORDS;

/// Reply result words.
pub const RESULT_OK: u64 = 0;
pub const RESULT_ERR: u64 = 1;

/// The byte offset of word `w`.
pub const fn byte(w: usize) -> usize {
    w * 8
}
