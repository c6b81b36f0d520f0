//! Signals turned into a readable descriptor and a set of pending signals.
//!
//! A handler may only do what is async-signal-safe, so ours do two things
//! through signal-hook and nothing else: set the signal's pending flag, then
//! write a byte to a self-pipe whose read end the event loop polls. The flag
//! says *which* signals came, the byte makes sure the loop wakes. Taking the
//! signals drains the pipe first and reads the flags second: a signal that
//! lands in between leaves both a flag (taken now) and a byte (a spurious
//! wake-up later), and one that lands after leaves a byte that wakes the next
//! poll. In the other order a signal could set its flag after it was read and
//! have its byte drained: lost.
//!
//! signal-hook takes ownership of the descriptor it writes to and closes it
//! when the action is unregistered, so each signal gets its own duplicate of
//! the pipe's write end.
//!
//! A forked child must start with the default disposition of every signal
//! its parent caught, and without the parent's actions, which would write to
//! the parent's pipe. signal-hook cannot restore a default itself (removing
//! the last action leaves its handler in place, which then ignores the
//! signal), so the child removes the actions and sets `SIG_DFL` with
//! `sigaction`. signal-hook's registry then still believes its handler is
//! installed and will not install it again if the child catches that signal
//! itself: [`SignalPipe::install`] therefore checks the kernel's disposition
//! after each registration and puts signal-hook's handler back when it is
//! missing.
//!
//! `SIGPIPE` is ignored once signals are installed: a write to a pipe whose
//! reader has gone must be an error for the writer, not its death.

use std::collections::BTreeMap;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use nix::fcntl::OFlag;
use signal_hook::SigId;

use crate::real::sys::retry;
use crate::{Fd, Signal, SignalSet};

/// The disposition signal-hook installs for every signal it handles (one
/// handler function for all of them), as first seen in this process or an
/// ancestor: what a signal whose disposition was reset must be given back.
static HOOK_ACTION: OnceLock<libc::sigaction> = OnceLock::new();

/// The self-pipe and the signals a `RealOs` catches.
pub(super) struct SignalPipe {
    read: OwnedFd,
    write: OwnedFd,
    installed: BTreeMap<Signal, Installed>,
}

struct Installed {
    pending: Arc<AtomicBool>,
    /// The flag's action, then the pipe's.
    ids: [SigId; 2],
}

impl SignalPipe {
    pub(super) fn new() -> io::Result<SignalPipe> {
        let (read, write) = retry(|| nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC))?;
        Ok(SignalPipe { read, write, installed: BTreeMap::new() })
    }

    /// The read end, which polls readable while a signal is pending.
    pub(super) fn fd(&self) -> Fd {
        Fd(self.read.as_raw_fd())
    }

    pub(super) fn install(&mut self, signals: &[Signal]) -> io::Result<()> {
        if !self.installed.contains_key(&Signal::Pipe) && !signals.contains(&Signal::Pipe) {
            set_action(libc::SIGPIPE, &action(libc::SIG_IGN))?;
        }
        for &signal in signals {
            if !self.installed.contains_key(&signal) {
                self.install_one(signal)?;
            }
        }
        Ok(())
    }

    fn install_one(&mut self, signal: Signal) -> io::Result<()> {
        if !Signal::CATCHABLE.contains(&signal) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("cannot catch {signal}")));
        }
        let number = signal.number();
        let wake = self.write.try_clone()?;
        let pending = Arc::new(AtomicBool::new(false));
        // The flag is registered first so that, with several threads, the
        // flag is already set when the byte wakes the reader.
        let flag_id = signal_hook::flag::register(number, Arc::clone(&pending))?;
        // From here on signal-hook owns `wake`, and closes it even on error.
        let pipe_id = match signal_hook::low_level::pipe::register_raw(number, wake.into_raw_fd()) {
            Ok(id) => id,
            Err(e) => {
                signal_hook::low_level::unregister(flag_id);
                return Err(e);
            }
        };
        self.installed.insert(signal, Installed { pending, ids: [flag_id, pipe_id] });
        ensure_hooked(signal)
    }

    /// Drains the pipe, then takes the pending flags (in that order: see the
    /// module documentation).
    pub(super) fn take(&mut self) -> io::Result<SignalSet> {
        let mut buf = [0u8; 64];
        loop {
            // Safety: `buf` is valid for `buf.len()` bytes of writing.
            match syscall!(read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())) {
                // The end of file cannot come while we hold the write end.
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(self
            .installed
            .iter()
            .filter(|(_, installed)| installed.pending.swap(false, Ordering::SeqCst))
            .map(|(&signal, _)| signal)
            .collect())
    }

    /// Removes every action and gives each signal its default disposition
    /// back. signal-hook closes its duplicates of the write end meanwhile.
    pub(super) fn uninstall(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        for (signal, installed) in std::mem::take(&mut self.installed) {
            for id in installed.ids {
                signal_hook::low_level::unregister(id);
            }
            if let Err(e) = set_action(signal.number(), &action(libc::SIG_DFL)) {
                result = result.and(Err(e));
            }
        }
        result
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        // Nothing to report to in a destructor; a failure here means a
        // signal keeps a handler without actions, which ignores it.
        let _ = self.uninstall();
    }
}

/// Makes sure `signal` has signal-hook's handler, which signal-hook only
/// installs the first time it sees a signal in a process (see the module
/// documentation).
fn ensure_hooked(signal: Signal) -> io::Result<()> {
    let number = signal.number();
    let current = get_action(number)?;
    if current.sa_sigaction != libc::SIG_DFL && current.sa_sigaction != libc::SIG_IGN {
        // signal-hook has just registered this signal, so a handler in place
        // is its own.
        HOOK_ACTION.get_or_init(|| current);
        return Ok(());
    }
    match HOOK_ACTION.get() {
        Some(hook) => set_action(number, hook),
        None => Err(io::Error::other(format!("install {signal}: signal-hook's handler is missing"))),
    }
}

/// A disposition with no flags and nothing masked.
fn action(handler: libc::sighandler_t) -> libc::sigaction {
    let mut action = zeroed_action();
    action.sa_sigaction = handler;
    // Safety: `sa_mask` is a valid sigset_t to initialise.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    action
}

fn zeroed_action() -> libc::sigaction {
    // Safety: sigaction is a plain C struct for which all zeroes is valid.
    unsafe { MaybeUninit::zeroed().assume_init() }
}

fn get_action(number: libc::c_int) -> io::Result<libc::sigaction> {
    let mut current = zeroed_action();
    // Safety: a null new action only queries; `current` is valid for writing.
    syscall!(sigaction(number, std::ptr::null(), &mut current))?;
    Ok(current)
}

fn set_action(number: libc::c_int, new: &libc::sigaction) -> io::Result<()> {
    // Safety: `new` is a valid action; the old one is not asked for.
    syscall!(sigaction(number, new, std::ptr::null_mut()))?;
    Ok(())
}
