//! The values a channel carries: the worker's state, commands and replies.

use std::fmt;

use serde_json::Value;

use super::ChannelError;

/// Where a worker process is in its life, as it writes it in its channel.
///
/// A channel fresh from `Channel::create` says `Spinup`: from the daemon's
/// side "not started yet" and "spinning up" are the same wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkerState {
    /// Running `Worker::spinup` (or not started yet).
    Spinup,
    /// Running the loop body every looptime.
    Looping,
    /// Paused by a command: alive and answering, the body does not run.
    Paused,
    /// Stopping: running `Worker::spindown`.
    Spindown,
    /// Done; the process exits (or has exited).
    Exited,
}

impl WorkerState {
    /// The state's word in the channel.
    pub fn to_word(self) -> u64 {
        match self {
            WorkerState::Spinup => 1,
            WorkerState::Looping => 2,
            WorkerState::Paused => 3,
            WorkerState::Spindown => 4,
            WorkerState::Exited => 5,
        }
    }

    /// The state a channel word names.
    pub fn from_word(w: u64) -> Result<WorkerState, ChannelError> {
        match w {
            1 => Ok(WorkerState::Spinup),
            2 => Ok(WorkerState::Looping),
            3 => Ok(WorkerState::Paused),
            4 => Ok(WorkerState::Spindown),
            5 => Ok(WorkerState::Exited),
            other => Err(ChannelError::BadState(other)),
        }
    }

    /// The lowercase name clients see.
    pub fn name(self) -> &'static str {
        match self {
            WorkerState::Spinup => "spinup",
            WorkerState::Looping => "looping",
            WorkerState::Paused => "paused",
            WorkerState::Spindown => "spindown",
            WorkerState::Exited => "exited",
        }
    }
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the daemon asks of a worker.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Stop running the body until `Resume`. Pausing a paused worker is a
    /// no-op that succeeds.
    Pause,
    /// Run the body again; due at once if its time passed while paused.
    Resume,
    /// Run `spindown` and exit with code 0.
    Stop,
    /// Hand a message to `Worker::on_message`; its result is the reply.
    Message(Value),
}

pub(super) const KIND_PAUSE: u64 = 1;
pub(super) const KIND_RESUME: u64 = 2;
pub(super) const KIND_STOP: u64 = 3;
pub(super) const KIND_MESSAGE: u64 = 4;

impl Command {
    pub(super) fn kind(&self) -> u64 {
        match self {
            Command::Pause => KIND_PAUSE,
            Command::Resume => KIND_RESUME,
            Command::Stop => KIND_STOP,
            Command::Message(_) => KIND_MESSAGE,
        }
    }

    /// The lowercase name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Stop => "stop",
            Command::Message(_) => "message",
        }
    }
}

/// A worker's answer to a command.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// The sequence number of the command it answers.
    pub seq: u64,
    /// `Ok(Value::Null)` for pause, resume and stop; the handler's result for
    /// a message; `Err` for a message the worker could not take.
    pub result: Result<Value, String>,
}

/// A command as the worker finds it in its mailbox.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingCommand {
    /// The command's sequence number, which its acknowledgement and reply
    /// carry back.
    pub seq: u64,
    /// The command, or why it cannot be read; the worker acknowledges either
    /// (the second with an error) so that the daemon is never left waiting.
    pub command: Result<Command, ChannelError>,
}
