//! Choosing the process to record: by pid, by command-line pattern (like `pgrep -f`), or by
//! starting a command.
//!
//! When a pattern matches several processes, the root of their process tree is chosen (the
//! uvicorn or gunicorn master); unrelated matches are an error that lists them, so the user
//! can pass `--pid`. loopprof itself and its ancestors (the shell that runs it) never match.

use super::procfs;
use super::CaptureError;
use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// How the user named the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// A process id.
    Pid(u32),
    /// A regular expression matched against full command lines, like `pgrep -f`.
    Name(String),
    /// A command to start and record.
    Command(Vec<String>),
}

/// A process chosen by [`find_by_name`], with the other matches for the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameMatch {
    /// The chosen root pid.
    pub pid: u32,
    /// Every pid whose command line matched.
    pub matched: Vec<u32>,
}

/// Finds the root of the processes whose command line matches `pattern`.
pub fn find_by_name(pattern: &str) -> Result<NameMatch, CaptureError> {
    let re = regex::Regex::new(pattern).map_err(|e| CaptureError::BadPattern {
        pattern: pattern.to_owned(),
        why: e.to_string(),
    })?;
    let parents = procfs::process_parents();
    let me = std::process::id();
    let mut excluded = procfs::ancestors(me, &parents);
    excluded.push(me);
    let mut matched: Vec<u32> = parents
        .keys()
        .copied()
        .filter(|pid| !excluded.contains(pid))
        .filter(|pid| {
            procfs::cmdline(*pid)
                .map(|c| !c.is_empty() && re.is_match(&c.join(" ")))
                .unwrap_or(false)
        })
        .collect();
    matched.sort_unstable();
    choose_root(pattern, matched, &parents)
}

/// Picks the single tree root among matched pids (pure; split out for tests).
pub fn choose_root(
    pattern: &str,
    matched: Vec<u32>,
    parents: &HashMap<u32, u32>,
) -> Result<NameMatch, CaptureError> {
    if matched.is_empty() {
        return Err(CaptureError::NoMatch {
            pattern: pattern.to_owned(),
        });
    }
    let roots: Vec<u32> = matched
        .iter()
        .copied()
        .filter(|pid| {
            !procfs::ancestors(*pid, parents)
                .iter()
                .any(|a| matched.contains(a))
        })
        .collect();
    if roots.len() == 1 {
        return Ok(NameMatch {
            pid: roots[0],
            matched,
        });
    }
    let candidates = roots
        .iter()
        .map(|pid| {
            let cmd = procfs::cmdline(*pid).unwrap_or_default().join(" ");
            format!("  {pid}  {}", truncate(&cmd, 100))
        })
        .collect::<Vec<_>>()
        .join("\n");
    Err(CaptureError::AmbiguousName {
        pattern: pattern.to_owned(),
        candidates,
    })
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// Checks that `pid` exists.
pub fn check_pid(pid: u32) -> Result<(), CaptureError> {
    if procfs::is_alive(pid) {
        Ok(())
    } else {
        Err(CaptureError::NoSuchProcess { pid })
    }
}

/// Starts `command` in its own process group (so Ctrl-C reaches loopprof, which then stops
/// the command cleanly) with stdin closed and stdout/stderr inherited.
pub fn spawn(command: &[String]) -> Result<Child, CaptureError> {
    let (prog, args) = command.split_first().ok_or(CaptureError::EmptyCommand)?;
    Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|source| CaptureError::Spawn {
            command: command.join(" "),
            source,
        })
}

/// A command loopprof started, watched for exit without interfering with ptrace.
///
/// The sampler threads ptrace-stop the command's threads and `waitpid` for each stop. The
/// kernel reports a traced child's stops to *any* waiter in the tracer's thread group when the
/// tracer and the real parent are in the same group (`ptrace_reparented()` is false), even
/// with `__WNOTHREAD` — so a `waitpid` here could consume the stop a sampler waits for,
/// leaving the target stopped and the sampler blocked. Exit is therefore read from `/proc`
/// (the process turns zombie), and the child is reaped only once it is dead, when it can no
/// longer be in a ptrace stop.
pub struct Started {
    child: Child,
    reaped: bool,
}

impl Started {
    /// Wraps a spawned child.
    pub fn new(child: Child) -> Self {
        Started {
            child,
            reaped: false,
        }
    }

    /// The pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// True once the command has exited (a zombie, or gone). Never calls `waitpid` on a
    /// live process.
    pub fn has_exited(&mut self) -> bool {
        if self.reaped || !super::procfs::is_alive(self.child.id()) {
            self.reap();
            return true;
        }
        false
    }

    /// Reaps the dead child (its zombie can not be ptrace-stopped, so this steals nothing).
    fn reap(&mut self) {
        if self.reaped {
            return;
        }
        let mut status = 0;
        // SAFETY: waitpid writes only to `status`; the process is dead (zombie or gone).
        let r = unsafe { libc::waitpid(self.child.id() as i32, &mut status, libc::WNOHANG) };
        if r != 0 {
            self.reaped = true;
        }
    }

    /// Stops the command: SIGTERM to its process group, then SIGKILL after `grace`.
    pub fn terminate(&mut self, grace: std::time::Duration) {
        if self.has_exited() {
            return;
        }
        let pgid = self.child.id() as i32;
        // SAFETY: kill has no memory-safety preconditions; a negative pid names the group.
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if self.has_exited() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // SAFETY: as above.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        for _ in 0..100 {
            if self.has_exited() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_master_of_a_matching_tree() {
        // 100 = gunicorn master, 101/102 = its workers (same command line), 200 = unrelated.
        let parents: HashMap<u32, u32> = [(100, 1), (101, 100), (102, 100), (200, 1)]
            .into_iter()
            .collect();
        let m = choose_root("gunicorn", vec![100, 101, 102], &parents).unwrap();
        assert_eq!(m.pid, 100);
        assert_eq!(m.matched, vec![100, 101, 102]);
    }

    #[test]
    fn unrelated_matches_are_ambiguous_and_none_is_an_error() {
        let parents: HashMap<u32, u32> = [(100, 1), (200, 1)].into_iter().collect();
        assert!(matches!(
            choose_root("uvicorn", vec![100, 200], &parents),
            Err(CaptureError::AmbiguousName { .. })
        ));
        assert!(matches!(
            choose_root("uvicorn", vec![], &parents),
            Err(CaptureError::NoMatch { .. })
        ));
    }
}
