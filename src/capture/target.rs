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
/// The sampler threads ptrace-stop the command's threads, and a `waitpid` from *any* thread
/// of loopprof could consume the stop notification a sampler is waiting for (leaving the
/// target stopped and the sampler blocked). So exits are polled with `__WNOTHREAD`, which
/// only reports children of the calling thread: the started command is a child of the thread
/// that spawned it, and that thread traces nothing. Call these from the spawning thread.
pub struct Started {
    child: Child,
    exited: bool,
}

impl Started {
    /// Wraps a spawned child.
    pub fn new(child: Child) -> Self {
        Started {
            child,
            exited: false,
        }
    }

    /// The pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    fn wait(&mut self, flags: i32) -> bool {
        if self.exited {
            return true;
        }
        let mut status = 0;
        // SAFETY: waitpid writes only to `status`.
        let r = unsafe {
            libc::waitpid(
                self.child.id() as i32,
                &mut status,
                flags | libc::__WNOTHREAD,
            )
        };
        let ended = r > 0 && (libc::WIFEXITED(status) || libc::WIFSIGNALED(status));
        let gone = r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD);
        if ended || gone {
            self.exited = true;
        }
        self.exited
    }

    /// True once the command has exited (reaps it).
    pub fn has_exited(&mut self) -> bool {
        self.wait(libc::WNOHANG)
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
        self.wait(0);
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
