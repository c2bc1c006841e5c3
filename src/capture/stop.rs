//! Stopping one thread of the target with ptrace while its stack is read, and always letting
//! it go again.
//!
//! A [`StoppedThread`] is a thread seized (`PTRACE_SEIZE`) and interrupted
//! (`PTRACE_INTERRUPT`) by the calling thread; dropping it detaches, which resumes the thread.
//! Compared with `remoteprocess::ThreadLock` (which this replaces for our own locking) it
//! handles the cases that, under load, left a thread seized but running — after which every
//! later stop failed with `EPERM` and the target could later be left in a ptrace stop:
//! * a signal-delivery stop while waiting for the interrupt is a stop too: the stack is read
//!   there and the signal is handed back on detach (nothing is lost, nothing is delivered
//!   twice);
//! * `waitpid` interrupted by a signal (`EINTR`) is retried instead of giving up with the
//!   thread seized and an interrupt pending;
//! * if detaching fails because the thread is not in a stop, it is interrupted, waited for,
//!   and detached again;
//! * a thread found already seized by this very thread (a leak from an earlier failure) is
//!   taken over instead of failing forever.
//!
//! ptrace requests must come from the tracing thread, so a `StoppedThread` must be dropped on
//! the thread that created it (it is `!Send`).

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::marker::PhantomData;
use std::path::Path;

/// Why a thread could not be stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopError {
    /// The thread exited (nothing to read).
    Gone,
    /// The id names a live thread that is not one of the target's (`/proc/PID/task` does not
    /// list it): it was never stopped (or, when found only after seizing it, let go at once).
    NotInTarget {
        /// The target's pid.
        pid: u32,
        /// The thread id, as loopprof's pid namespace numbers it.
        tid: u32,
    },
    /// Another tracer (a second profiler or debugger) held the thread past
    /// `OTHER_TRACER_PATIENCE`: it was not stopped by loopprof, but it is stopped.
    HeldByOtherTracer,
    /// ptrace refused or failed (`EPERM`...).
    Failed(Errno),
}

impl std::fmt::Display for StopError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopError::Gone => f.write_str("the thread exited"),
            StopError::NotInTarget { pid, tid } => write!(
                f,
                "thread {tid} is not a thread of process {pid}; refusing to stop it"
            ),
            StopError::HeldByOtherTracer => f.write_str("held by another tracer"),
            StopError::Failed(e) => write!(f, "{e}: {}", e.desc()),
        }
    }
}

/// A thread in a ptrace stop; resumed when dropped.
#[derive(Debug)]
pub struct StoppedThread {
    tid: Pid,
    /// A signal caught while stopping it, re-injected on detach.
    signal: Option<Signal>,
    /// The thread exited while being stopped (or is left to `release_left_seized`):
    /// nothing to detach here.
    exited: bool,
    /// Interrupted, its stop not waited for yet.
    waiting: bool,
    _not_send: PhantomData<*const ()>,
}

/// The thread id of the caller.
fn gettid() -> i32 {
    nix::unistd::gettid().as_raw()
}

/// The tracer of `tid` (0 when none), from `/proc`.
fn tracer_of(tid: i32) -> Option<i32> {
    crate::capture::procfs::tracer_pid(tid as u32).map(|t| t as i32)
}

/// Whether `LOOPPROF_DEBUG_STOPS` is set: unusual ptrace outcomes are printed to stderr.
fn debug() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("LOOPPROF_DEBUG_STOPS").is_some())
}

/// How long a thread may take to reach its stop after an interrupt. A runnable thread on a
/// busy machine needs a scheduler slice; a thread that never stops (a ptrace state we do not
/// expect) must not hang the sampler.
const STOP_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

/// How long a thread held by another tracer (a second profiler) is waited for before the
/// tick gives up on it: the other's stops last a tenth of a millisecond to a few.
const OTHER_TRACER_PATIENCE: std::time::Duration = std::time::Duration::from_millis(10);

/// How long a thread found in uninterruptible sleep (`D`) is waited for: it cannot be
/// stopped before it leaves that sleep, and cannot run (or change its stack) until then.
const D_STATE_PATIENCE: std::time::Duration = std::time::Duration::from_millis(5);

/// Waits for `tid` to reach a ptrace stop after an interrupt: `(signal caught, exited)`.
/// Spins briefly (a stop usually lands within microseconds, and yielding the CPU on a busy
/// machine would cost a whole time slice), then naps, and gives up after [`STOP_PATIENCE`]
/// (a thread in uninterruptible sleep must not keep the others stopped).
fn wait_stop(tid: Pid) -> Result<(Option<Signal>, bool), Errno> {
    let started = std::time::Instant::now();
    let spin = std::time::Duration::from_micros(300);
    let mut nap = std::time::Duration::from_micros(50);
    loop {
        match waitpid(tid, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {
                let waited = started.elapsed();
                if waited > STOP_PATIENCE {
                    if debug() {
                        eprintln!("loopprof: thread {tid} did not stop within {STOP_PATIENCE:?}");
                    }
                    return Err(Errno::ETIMEDOUT);
                }
                if waited < spin {
                    std::hint::spin_loop();
                } else {
                    // A thread in uninterruptible sleep (disk or NFS I/O, a frozen cgroup)
                    // stops only when it leaves it: give up on it early rather than keep
                    // the other threads stopped.
                    if waited > D_STATE_PATIENCE && state_of(tid.as_raw()) == Some('D') {
                        if debug() {
                            eprintln!("loopprof: thread {tid} is in uninterruptible sleep");
                        }
                        return Err(Errno::ETIMEDOUT);
                    }
                    std::thread::sleep(nap);
                    nap = (nap * 2).min(std::time::Duration::from_millis(1));
                }
            }
            Ok(WaitStatus::PtraceEvent(_, _, _)) => return Ok((None, false)),
            // A signal-delivery stop is a stop: keep the signal to hand it back on detach.
            // (A seized thread reports our interrupt and group stops as ptrace events, so
            // any signal here was sent by someone else and must be delivered.)
            Ok(WaitStatus::Stopped(_, sig)) => {
                if debug() {
                    eprintln!("loopprof: thread {tid} stopped with signal {sig}");
                }
                return Ok((Some(sig), false));
            }
            Ok(st @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                if debug() {
                    eprintln!("loopprof: thread {tid}: {st:?}");
                }
                return Ok((None, true));
            }
            Ok(other) => {
                if debug() {
                    eprintln!("loopprof: thread {tid}: unexpected wait status {other:?}");
                }
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::ECHILD) => {
                if debug() {
                    eprintln!("loopprof: thread {tid}: ECHILD while waiting for its stop");
                }
                return Ok((None, true));
            }
            Err(e) => return Err(e),
        }
    }
}

thread_local! {
    /// Threads this thread interrupted that did not stop in time: still seized, they will
    /// stop when they leave their uninterruptible sleep and must then be let go.
    static LEFT_SEIZED: std::cell::RefCell<Vec<Pid>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Detaches threads that did not stop in time once they have stopped (call it regularly and
/// before the sampling thread ends; `wait` waits up to [`STOP_PATIENCE`] for each).
pub fn release_left_seized(wait: bool) {
    LEFT_SEIZED.with(|left| {
        left.borrow_mut().retain(|&tid| {
            let status = if wait {
                wait_stop(tid)
            } else {
                match waitpid(tid, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => return true,
                    Ok(WaitStatus::Stopped(_, sig)) => Ok((Some(sig), false)),
                    Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) | Err(_) => {
                        Ok((None, true))
                    }
                    Ok(_) => Ok((None, false)),
                }
            };
            match status {
                Ok((_, true)) => false,
                Ok((sig, false)) => {
                    let _ = ptrace::detach(tid, sig);
                    false
                }
                // Still not stopped: the kernel lets it go when loopprof exits.
                Err(_) => !wait,
            }
        })
    });
}

/// Whether `tid` (in loopprof's pid namespace) is a thread of process `pid`: the kernel
/// resolves `/proc/PID/task/TID` only for a thread of `PID`'s thread group.
pub fn is_thread_of(pid: u32, tid: u32) -> bool {
    // `access` is one path lookup; no file is opened.
    let path = format!("/proc/{pid}/task/{tid}\0");
    // SAFETY: the path is NUL-terminated and outlives the call.
    unsafe { libc::access(path.as_ptr().cast(), libc::F_OK) == 0 }
}

/// The scheduler state letter of a thread (`t` = ptrace stop), from `/proc`.
fn state_of(tid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{tid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

impl StoppedThread {
    /// Seizes and stops thread `tid` of process `pid`.
    ///
    /// Errors: [`StopError::NotInTarget`] when `tid` is not a thread of `pid` (checked before
    /// the seize and again after it, while the seized id can no longer be reused).
    pub fn stop(pid: u32, tid: u32) -> Result<StoppedThread, StopError> {
        let mut t = Self::begin(pid, tid)?;
        t.finish()?;
        Ok(t)
    }

    /// Stops every thread of `tids` of process `pid`: all are interrupted first, then waited
    /// for, so they stop together and the stop costs one scheduling delay rather than one per
    /// thread. Threads that exited are skipped. Returns the stopped threads and those that
    /// did not stop in time (in uninterruptible sleep, or past [`STOP_PATIENCE`]): they are
    /// left seized until they stop and are let go by [`release_left_seized`]; their stacks
    /// must not be trusted. A thread that is not `pid`'s is never stopped and fails the
    /// call, as does a ptrace refusal.
    pub fn stop_all(pid: u32, tids: &[u32]) -> Result<(Vec<StoppedThread>, Vec<u32>), String> {
        let mut pending = Vec::with_capacity(tids.len());
        // Each thread once: seizing a thread twice would be taken for a leaked seize, and two
        // waits for one stop leave the second waiting until it gives up.
        let mut seen = std::collections::HashSet::with_capacity(tids.len());
        let mut held = Vec::new();
        for &tid in tids {
            if !seen.insert(tid) {
                continue;
            }
            match Self::begin(pid, tid) {
                Ok(t) => pending.push(t),
                Err(StopError::Gone) => continue,
                // Held stopped by another tracer: read like a thread that did not stop in
                // time (checked afterwards not to have run), instead of failing the tick.
                Err(StopError::HeldByOtherTracer) => held.push(tid),
                Err(e) => return Err(format!("cannot stop thread {tid}: {e}")),
            }
        }
        let mut stopped = Vec::with_capacity(pending.len());
        let mut late = held;
        for mut t in pending {
            match t.finish() {
                Ok(()) => stopped.push(t),
                Err(StopError::Gone) => continue,
                Err(StopError::Failed(Errno::ETIMEDOUT)) => late.push(t.tid.as_raw() as u32),
                Err(e) => return Err(format!("cannot stop thread {}: {e}", t.tid)),
            }
        }
        Ok((stopped, late))
    }

    /// Seizes `tid` and asks it to stop (`PTRACE_INTERRUPT`), without waiting.
    ///
    /// `tid` is checked to be a thread of `tgid` before the seize, and again after it: a
    /// seized thread that exits stays a zombie until its tracer reaps it, so its id cannot be
    /// given to another process in between, and a thread that passes the second check is the
    /// target's. A thread that fails it is let go without ever being interrupted.
    fn begin(tgid: u32, tid: u32) -> Result<StoppedThread, StopError> {
        let not_ours = || {
            if Path::new(&format!("/proc/{tid}")).exists() {
                StopError::NotInTarget { pid: tgid, tid }
            } else {
                StopError::Gone
            }
        };
        if !is_thread_of(tgid, tid) {
            return Err(not_ours());
        }
        let pid = Pid::from_raw(tid as i32);
        let mut taken_over = false;
        let mut seized = ptrace::seize(pid, ptrace::Options::PTRACE_O_TRACEEXIT);
        // Held by another tracer for a moment (a second loopprof or py-spy reading it): wait
        // for it to let go, briefly, rather than lose the tick.
        // Whether another tracer was seen holding it during this attempt.
        let mut other_tracer = false;
        if seized == Err(Errno::EPERM) {
            let deadline = std::time::Instant::now() + OTHER_TRACER_PATIENCE;
            while std::time::Instant::now() < deadline {
                match tracer_of(tid as i32) {
                    Some(0) => {
                        seized = ptrace::seize(pid, ptrace::Options::PTRACE_O_TRACEEXIT);
                        if seized != Err(Errno::EPERM) {
                            break;
                        }
                    }
                    Some(t) if t == gettid() => break,
                    Some(_) => {
                        other_tracer = true;
                        std::thread::sleep(std::time::Duration::from_micros(50))
                    }
                    None => break,
                }
            }
        }
        match seized {
            Ok(()) => {}
            Err(Errno::ESRCH) => return Err(StopError::Gone),
            // Already traced by this very thread: an earlier stop leaked; take it over.
            Err(Errno::EPERM) if tracer_of(tid as i32) == Some(gettid()) => {
                if debug() {
                    eprintln!("loopprof: thread {tid} was still seized by us; taking it over");
                }
                LEFT_SEIZED.with(|l| l.borrow_mut().retain(|t| *t != pid));
                taken_over = true;
            }
            // Held past the patience, or taken by another tracer again between its release
            // and our seize: it was (and may still be) stopped by someone else.
            Err(Errno::EPERM) if other_tracer || tracer_of(tid as i32).is_some_and(|t| t != 0) => {
                return Err(StopError::HeldByOtherTracer)
            }
            Err(e) => {
                if debug() {
                    eprintln!(
                        "loopprof: seize {tid}: {e} (tracer {:?}, we are {})",
                        tracer_of(tid as i32),
                        gettid()
                    );
                }
                return Err(StopError::Failed(e));
            }
        }
        // From here on the thread is seized: every path must end in a detach.
        let mut guard = StoppedThread {
            tid: pid,
            signal: None,
            exited: false,
            waiting: true,
            _not_send: PhantomData,
        };
        if !is_thread_of(tgid, tid) {
            // Lost a race with the id's reuse (it needs the pid space to wrap within
            // microseconds). A seized thread stops for the tracer on every signal, so it
            // cannot be left seized: interrupt it and let the guard's drop wait for that stop
            // and detach at once, handing back any signal it caught.
            if ptrace::interrupt(pid).is_err() {
                guard.waiting = false;
            }
            drop(guard);
            return Err(not_ours());
        }
        if taken_over && state_of(tid as i32) == Some('t') {
            // Already in a ptrace stop whose report was consumed: nothing to wait for.
            guard.waiting = false;
            return Ok(guard);
        }
        match ptrace::interrupt(pid) {
            Ok(()) => Ok(guard),
            Err(Errno::ESRCH) => {
                guard.exited = state_of(tid as i32).is_none();
                guard.waiting = false;
                Err(StopError::Gone)
            }
            Err(e) => {
                guard.waiting = false;
                Err(StopError::Failed(e))
            }
        }
    }

    /// Waits for the stop requested by [`Self::begin`].
    fn finish(&mut self) -> Result<(), StopError> {
        if !self.waiting {
            return Ok(());
        }
        let r = wait_stop(self.tid);
        self.waiting = false;
        match r {
            Ok((signal, exited)) => {
                self.signal = signal;
                self.exited = exited;
                if exited {
                    return Err(StopError::Gone);
                }
                Ok(())
            }
            Err(e) => {
                // Interrupted but not stopped yet: it stays seized until it stops, then is
                // let go by `release_left_seized`.
                LEFT_SEIZED.with(|l| l.borrow_mut().push(self.tid));
                self.exited = true;
                Err(StopError::Failed(e))
            }
        }
    }
}

impl Drop for StoppedThread {
    fn drop(&mut self) {
        if self.waiting {
            // Dropped between begin and finish: wait for the stop, then detach.
            let _ = self.finish();
        }
        if self.exited {
            return;
        }
        match ptrace::detach(self.tid, self.signal) {
            Ok(()) => {}
            Err(_) if !is_seized_by_us(self.tid) => {}
            Err(e) => {
                if debug() {
                    eprintln!("loopprof: detach {}: {e}; stopping it to detach", self.tid);
                }
                // Not in a stop (so the detach failed): stop it, then detach. Bounded: a
                // thread that keeps failing is let go when loopprof exits (the kernel
                // detaches every tracee of an exiting tracer).
                for _ in 0..3 {
                    if ptrace::interrupt(self.tid).is_err() {
                        break;
                    }
                    match wait_stop(self.tid) {
                        Ok((sig, false)) => {
                            let sig = self.signal.or(sig);
                            if ptrace::detach(self.tid, sig).is_ok() {
                                return;
                            }
                        }
                        _ => return,
                    }
                }
            }
        }
    }
}

fn is_seized_by_us(tid: Pid) -> bool {
    tracer_of(tid.as_raw()) == Some(gettid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn state(pid: u32) -> char {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        s[s.rfind(')').unwrap() + 2..].chars().next().unwrap()
    }

    #[test]
    fn stops_and_resumes_a_process_and_survives_signals() {
        // A shell loop that counts; stopping it must freeze the count and dropping must
        // resume it, also when a signal arrives while it is stopped.
        let mut child = Command::new("sh")
            .args(["-c", "trap 'echo hup >&2' HUP; while :; do :; done"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        std::thread::sleep(std::time::Duration::from_millis(100));
        for round in 0..50 {
            let stopped = match StoppedThread::stop(pid, pid) {
                Ok(s) => s,
                Err(e) => panic!("round {round}: {e}"),
            };
            assert_eq!(state(pid), 't', "round {round}: stopped");
            if round % 5 == 0 {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGHUP);
            }
            drop(stopped);
            assert_eq!(tracer_of(pid as i32), Some(0), "round {round}: detached");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_ne!(state(pid), 't', "left running");
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn a_leaked_seize_is_taken_over() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        // Leak: seize without stopping or detaching.
        ptrace::seize(pid, ptrace::Options::empty()).unwrap();
        assert_eq!(tracer_of(pid.as_raw()), Some(gettid()));
        let stopped = StoppedThread::stop(child.id(), child.id()).expect("takes the leak over");
        assert_eq!(state(child.id()), 't');
        drop(stopped);
        assert_eq!(tracer_of(pid.as_raw()), Some(0), "detached");
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn a_thread_of_another_process_is_never_stopped() {
        let mut target = Command::new("sleep").arg("30").spawn().unwrap();
        let mut other = Command::new("sleep").arg("30").spawn().unwrap();
        assert!(is_thread_of(target.id(), target.id()));
        assert!(!is_thread_of(target.id(), other.id()));
        assert_eq!(
            StoppedThread::stop(target.id(), other.id()).unwrap_err(),
            StopError::NotInTarget {
                pid: target.id(),
                tid: other.id()
            }
        );
        let err = StoppedThread::stop_all(target.id(), &[target.id(), other.id()])
            .map(|_| ())
            .unwrap_err();
        assert!(err.contains("is not a thread of process"), "{err}");
        assert_eq!(tracer_of(other.id() as i32), Some(0), "never seized");
        assert_eq!(tracer_of(target.id() as i32), Some(0), "let go");
        assert_ne!(state(other.id()), 't', "never stopped");
        for c in [&mut target, &mut other] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    #[test]
    fn a_gone_thread_is_reported_as_gone() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(StoppedThread::stop(pid, pid).unwrap_err(), StopError::Gone);
    }
}
