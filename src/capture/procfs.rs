//! Small readers of `/proc`: process tree, command lines, CPU time, thread state and syscall.
//!
//! Each function does one read of one file and parses it. The sampler's hot path (thread
//! state, syscall, scheduler times, CPU time) goes through [`ProcFiles`] instead, which keeps
//! those files open and re-reads them with `pread` (no path lookup, open or close per tick).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::FileExt;

/// The fields of `/proc/<pid>/stat` loopprof uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Scheduler state letter (`R`, `S`, `D`, `Z`, `t`, ...).
    pub state: char,
    /// Parent pid.
    pub ppid: u32,
    /// User CPU time in clock ticks.
    pub utime: u64,
    /// System CPU time in clock ticks.
    pub stime: u64,
    /// Start time after boot in clock ticks.
    pub starttime: u64,
    /// Address of the bottom of the main thread's stack (field 28, `startstack`): set anew
    /// by every `execve` (with address-space randomisation, a new value), so a change tells
    /// that the process runs a new image. 0 when not shown.
    pub startstack: u64,
}

/// Parses the content of a `stat` file (the command name may hold spaces and parentheses).
pub fn parse_stat(buf: &[u8]) -> Option<Stat> {
    let close = buf.iter().rposition(|b| *b == b')')?;
    let rest = std::str::from_utf8(buf.get(close + 2..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    // Field 3 (state) is the first after the comm.
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    // Fields 14 and 15 (utime, stime) are 9 and 10 positions after ppid (field 4).
    let mut fields = fields.skip(9);
    let utime = fields.next()?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    // Field 22 (starttime) is 6 after stime.
    let starttime = fields.nth(6)?.parse().ok()?;
    // Field 28 (startstack) is 6 after starttime.
    let startstack = fields.nth(5).and_then(|f| f.parse().ok()).unwrap_or(0);
    Some(Stat {
        state,
        ppid,
        utime,
        stime,
        starttime,
        startstack,
    })
}

fn read_small(path: &str, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut f = fs::File::open(path)?;
    let mut n = 0;
    loop {
        let m = f.read(&mut buf[n..])?;
        if m == 0 || n + m == buf.len() {
            return Ok(n + m);
        }
        n += m;
    }
}

/// Reads `/proc/<pid>/stat`.
pub fn process_stat(pid: u32) -> std::io::Result<Stat> {
    let mut buf = [0u8; 1024];
    let n = read_small(&format!("/proc/{pid}/stat"), &mut buf)?;
    parse_stat(&buf[..n]).ok_or_else(|| std::io::Error::other("unparsable stat"))
}

/// Reads `/proc/<pid>/task/<tid>/stat`.
pub fn thread_stat(pid: u32, tid: u32) -> std::io::Result<Stat> {
    let mut buf = [0u8; 1024];
    let n = read_small(&format!("/proc/{pid}/task/{tid}/stat"), &mut buf)?;
    parse_stat(&buf[..n]).ok_or_else(|| std::io::Error::other("unparsable stat"))
}

/// What `/proc/<pid>/task/<tid>/syscall` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syscall {
    /// The thread runs in user space.
    Running,
    /// Blocked in this system call number.
    Nr(i64),
    /// Not in a system call (e.g. stopped by a signal), or unreadable.
    Unknown,
}

/// Parses the content of a `syscall` file.
pub fn parse_syscall(buf: &[u8]) -> Syscall {
    let s = std::str::from_utf8(buf).unwrap_or("");
    match s.split_ascii_whitespace().next() {
        Some("running") => Syscall::Running,
        Some(n) => match n.parse::<i64>() {
            Ok(nr) if nr >= 0 => Syscall::Nr(nr),
            _ => Syscall::Unknown,
        },
        None => Syscall::Unknown,
    }
}

/// The per-tick `/proc` files of one process, kept open between ticks and re-read from
/// offset 0 (`/proc` regenerates them on every read). A file whose read fails (its thread
/// exited; a reused thread id is a new task, which the old descriptor does not follow) is
/// closed and opened again by path once, so a read here gives what a fresh open would.
#[derive(Debug)]
pub struct ProcFiles {
    pid: u32,
    /// By (thread id, 0 for the process itself; which file).
    open: HashMap<(u32, ProcFile), fs::File>,
}

/// The files [`ProcFiles`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ProcFile {
    Stat,
    Syscall,
    Schedstat,
    Wchan,
}

impl ProcFile {
    fn name(self) -> &'static str {
        match self {
            ProcFile::Stat => "stat",
            ProcFile::Syscall => "syscall",
            ProcFile::Schedstat => "schedstat",
            ProcFile::Wchan => "wchan",
        }
    }
}

/// The system call a kernel wait channel (the function a sleeping thread waits in, as
/// `/proc/<pid>/task/<tid>/wchan` names it: `poll_schedule_timeout.constprop.0`,
/// `do_epoll_wait`, `futex_wait_queue`, `hrtimer_nanosleep`, `do_select`) belongs to, for the
/// waits that Python's blocking calls make; `None` for any other (or `0`, where the kernel
/// hides it).
pub fn syscall_of_wchan(wchan: &str) -> Option<&'static str> {
    let w = wchan.trim();
    if w.contains("epoll") {
        Some("epoll_wait")
    } else if w.contains("poll") {
        Some("poll")
    } else if w.contains("select") {
        Some("select")
    } else if w.contains("futex") {
        Some("futex")
    } else if w.contains("nanosleep") {
        Some("clock_nanosleep")
    } else if w.contains("wait_consider_task") || w.contains("do_wait") {
        Some("wait4")
    } else {
        None
    }
}

/// Reads a small `/proc` file from offset 0 into `buf`. These files are generated whole on
/// each read, so a read that does not fill the buffer has everything (no second read to see
/// the end of the file: one syscall per file per tick).
fn pread_all(f: &fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    loop {
        let m = f.read_at(&mut buf[n..], n as u64)?;
        if m == 0 || m < buf.len() - n {
            return Ok(n + m);
        }
        n += m;
        if n == buf.len() {
            return Ok(n);
        }
    }
}

impl ProcFiles {
    /// No file open yet for process `pid`.
    pub fn new(pid: u32) -> Self {
        ProcFiles {
            pid,
            open: HashMap::new(),
        }
    }

    fn read(&mut self, tid: u32, file: ProcFile, buf: &mut [u8]) -> std::io::Result<usize> {
        let key = (tid, file);
        if let Some(f) = self.open.get(&key) {
            match pread_all(f, buf) {
                Ok(n) if n > 0 => return Ok(n),
                _ => {
                    self.open.remove(&key);
                }
            }
        }
        let path = if tid == 0 {
            format!("/proc/{}/{}", self.pid, file.name())
        } else {
            format!("/proc/{}/task/{tid}/{}", self.pid, file.name())
        };
        let f = fs::File::open(path)?;
        let n = pread_all(&f, buf)?;
        self.open.insert(key, f);
        Ok(n)
    }

    /// `/proc/<pid>/stat`.
    pub fn process_stat(&mut self) -> std::io::Result<Stat> {
        let mut buf = [0u8; 1024];
        let n = self.read(0, ProcFile::Stat, &mut buf)?;
        parse_stat(&buf[..n]).ok_or_else(|| std::io::Error::other("unparsable stat"))
    }

    /// `/proc/<pid>/task/<tid>/stat`.
    pub fn thread_stat(&mut self, tid: u32) -> std::io::Result<Stat> {
        let mut buf = [0u8; 1024];
        let n = self.read(tid, ProcFile::Stat, &mut buf)?;
        parse_stat(&buf[..n]).ok_or_else(|| std::io::Error::other("unparsable stat"))
    }

    /// `/proc/<pid>/task/<tid>/syscall` (needs ptrace permission on the target), with the
    /// call's six arguments when the thread is in one.
    pub fn thread_syscall_args(&mut self, tid: u32) -> (Syscall, Option<[u64; 6]>) {
        let mut buf = [0u8; 256];
        match self.read(tid, ProcFile::Syscall, &mut buf) {
            Ok(n) => {
                let sc = parse_syscall(&buf[..n]);
                let args = match sc {
                    Syscall::Nr(_) => std::str::from_utf8(&buf[..n])
                        .ok()
                        .and_then(super::waits::parse_args),
                    _ => None,
                };
                (sc, args)
            }
            Err(_) => (Syscall::Unknown, None),
        }
    }

    /// Cumulative (on-CPU ns, runnable-but-waiting-for-a-CPU ns, times it was run on a CPU)
    /// of a thread, from `/proc/<pid>/task/<tid>/schedstat` (the kernel's
    /// `se.sum_exec_runtime`, `sched_info.run_delay`, `sched_info.pcount`); `None` where the
    /// kernel does not provide it.
    pub fn thread_schedstat(&mut self, tid: u32) -> Option<[u64; 3]> {
        let mut buf = [0u8; 128];
        let n = self.read(tid, ProcFile::Schedstat, &mut buf).ok()?;
        parse_schedstat(&buf[..n])
    }

    /// The system call a thread sleeps in as its kernel wait channel names it
    /// (`/proc/<pid>/task/<tid>/wchan`, [`syscall_of_wchan`]); `None` when the file cannot be
    /// read or names no call we know. For a wait the kernel restarted after a stop, which
    /// the `syscall` file shows only as `restart_syscall`.
    pub fn thread_wchan_syscall(&mut self, tid: u32) -> Option<&'static str> {
        let mut buf = [0u8; 128];
        let n = self.read(tid, ProcFile::Wchan, &mut buf).ok()?;
        syscall_of_wchan(std::str::from_utf8(&buf[..n]).ok()?)
    }

    /// Closes the files of threads not in `keep` (the process's own files stay open).
    pub fn retain_threads(&mut self, keep: &HashSet<u32>) {
        self.open
            .retain(|(tid, _), _| *tid == 0 || keep.contains(tid));
    }

    /// Number of files held open.
    pub fn open_files(&self) -> usize {
        self.open.len()
    }
}

fn parse_schedstat(buf: &[u8]) -> Option<[u64; 3]> {
    let text = std::str::from_utf8(buf).ok()?;
    let mut it = text.split_ascii_whitespace();
    Some([
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    ])
}

/// The command line of a process (empty for kernel threads and zombies).
pub fn cmdline(pid: u32) -> std::io::Result<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline"))?;
    Ok(raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect())
}

/// The executable path of a process, if readable.
pub fn exe(pid: u32) -> String {
    fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// True when `/proc/<pid>` exists and the process is not a zombie.
/// `TracerPid` of `/proc/PID/status` (0: not traced); `None` when unreadable. `pid` may be a
/// thread id.
pub fn tracer_pid(pid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))?
        .trim()
        .parse()
        .ok()
}

/// The process tracing `pid` and its name, if any.
pub fn tracer_of(pid: u32) -> Option<(u32, String)> {
    let tracer = tracer_pid(pid).filter(|t| *t != 0)?;
    let comm = fs::read_to_string(format!("/proc/{tracer}/comm")).unwrap_or_default();
    Some((tracer, comm.trim().to_owned()))
}

/// The freezer cgroup holding `pid` when it is frozen (what `docker pause` and
/// `kubectl debug`-style pauses do), named for messages: `"cgroup v1 freezer /lp"` or
/// `"cgroup v2 /system.slice/x.scope"`; `None` when not frozen or unknown. Reads
/// `/proc/PID/cgroup`, then the v1 `freezer.state` (`FROZEN`/`FREEZING`) or the v2
/// `cgroup.events` (`frozen 1`) under `/sys/fs/cgroup` (or its `unified` mount) — the
/// kernel's cgroup-v1 freezer and cgroup-v2 freeze documents.
pub fn frozen_by(pid: u32) -> Option<String> {
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    frozen_in(&cgroups, |path| fs::read_to_string(path).ok())
}

/// [`frozen_by`] on the text of `/proc/PID/cgroup`, reading cgroup files through `read`.
pub fn frozen_in(cgroups: &str, read: impl Fn(&str) -> Option<String>) -> Option<String> {
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        // A path with `..` is not the target's to name (nor ours to follow).
        if path.split('/').any(|c| c == "..") {
            continue;
        }
        if controllers.split(',').any(|c| c == "freezer") {
            let state = read(&format!("/sys/fs/cgroup/freezer{path}/freezer.state"))?;
            if matches!(state.trim(), "FROZEN" | "FREEZING") {
                return Some(format!("cgroup v1 freezer {path}"));
            }
        } else if controllers.is_empty() {
            for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
                let path = path.trim_end_matches('/');
                if let Some(events) = read(&format!("{root}{path}/cgroup.events")) {
                    if events.lines().any(|l| l.trim() == "frozen 1") {
                        let shown = if path.is_empty() { "/" } else { path };
                        return Some(format!("cgroup v2 {shown}"));
                    }
                    break;
                }
            }
        }
    }
    None
}

/// Whether a process exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    matches!(process_stat(pid), Ok(s) if s.state != 'Z' && s.state != 'X')
}

/// The OS thread ids of a process.
pub fn thread_ids(pid: u32) -> std::io::Result<Vec<u32>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/task"))? {
        if let Some(tid) = entry?.file_name().to_str().and_then(|s| s.parse().ok()) {
            out.push(tid);
        }
    }
    Ok(out)
}

/// The `NSpid:` ids of a `/proc/.../status` text: the id in the pid namespace of the `/proc`
/// mount (loopprof's), then in each nested namespace down to the task's own (last). `None`
/// when the line is missing (kernels before 4.1) or malformed.
pub fn parse_nspid(status: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    let ids: Option<Vec<u32>> = line.split_whitespace().map(|v| v.parse().ok()).collect();
    ids.filter(|v| !v.is_empty())
}

/// Whether process `pid` lives in a pid namespace nested below loopprof's (a container
/// started without `--pid=host`, seen from the host): then the thread ids its interpreter
/// reports (`PyThreadState.native_thread_id`, glibc's `struct pthread.tid`) are that
/// namespace's, not ours. Read from `NSpid` in `/proc/PID/status` (proc(5)).
pub fn in_nested_pid_namespace(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| parse_nspid(&s))
        .is_some_and(|ids| ids.len() > 1)
}

/// The threads of process `pid`: thread id in the process's own pid namespace → thread id in
/// loopprof's (identical when both are the same namespace). Only threads listed in
/// `/proc/PID/task` appear, so every value is a thread of `pid`.
pub fn thread_ids_by_own_namespace(pid: u32) -> std::io::Result<HashMap<u32, u32>> {
    let mut out = HashMap::new();
    for tid in thread_ids(pid)? {
        let inner = fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))
            .ok()
            .and_then(|s| parse_nspid(&s))
            .and_then(|ids| ids.last().copied());
        // A thread that exited meanwhile has no status: leave it out.
        if let Some(inner) = inner {
            out.insert(inner, tid);
        }
    }
    Ok(out)
}

/// Every process's parent: pid → ppid.
pub fn process_parents() -> HashMap<u32, u32> {
    let mut out = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            if let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            {
                if let Ok(stat) = process_stat(pid) {
                    out.insert(pid, stat.ppid);
                }
            }
        }
    }
    out
}

/// A parent map kept up to date by repeated scans of `/proc` that read the `stat` of new
/// processes only (a full re-read every [`ParentScanner::FULL_EVERY`] catches a pid reused
/// between two scans). Rescanning for new workers four times a second then costs one directory
/// listing, not one file read per process on the machine.
#[derive(Debug)]
pub struct ParentScanner {
    parents: HashMap<u32, u32>,
    last_full: Option<std::time::Instant>,
}

impl Default for ParentScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl ParentScanner {
    /// How often every process's parent is read again.
    pub const FULL_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

    /// A scanner that has read nothing yet.
    pub fn new() -> Self {
        ParentScanner {
            parents: HashMap::new(),
            last_full: None,
        }
    }

    /// The parent of every process now in `/proc`.
    pub fn scan(&mut self) -> &HashMap<u32, u32> {
        let full = self
            .last_full
            .is_none_or(|t| t.elapsed() >= Self::FULL_EVERY);
        if full {
            self.parents = process_parents();
            self.last_full = Some(std::time::Instant::now());
            return &self.parents;
        }
        let mut present = HashSet::new();
        if let Ok(dir) = fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<u32>().ok())
                else {
                    continue;
                };
                present.insert(pid);
                if let std::collections::hash_map::Entry::Vacant(slot) = self.parents.entry(pid) {
                    if let Ok(stat) = process_stat(pid) {
                        slot.insert(stat.ppid);
                    }
                }
            }
        }
        self.parents.retain(|pid, _| present.contains(pid));
        &self.parents
    }
}

/// The descendants of `root` (children first, breadth-first), from a parent map.
pub fn descendants(root: u32, parents: &HashMap<u32, u32>) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, ppid) in parents {
        children.entry(*ppid).or_default().push(*pid);
    }
    let mut out = Vec::new();
    let mut queue = vec![root];
    while let Some(p) = queue.pop() {
        if let Some(kids) = children.get(&p) {
            let mut kids = kids.clone();
            kids.sort_unstable();
            for k in kids {
                if k != root && !out.contains(&k) {
                    out.push(k);
                    queue.push(k);
                }
            }
        }
    }
    out
}

/// The ancestors of `pid` (parent first), from a parent map.
pub fn ancestors(pid: u32, parents: &HashMap<u32, u32>) -> Vec<u32> {
    let mut out = Vec::new();
    let mut cur = pid;
    while let Some(&pp) = parents.get(&cur) {
        if pp == 0 || out.contains(&pp) {
            break;
        }
        out.push(pp);
        cur = pp;
    }
    out
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), used to convert CPU times.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as u64
    } else {
        100
    }
}

/// True when the process maps a Python interpreter (its executable or a libpython).
/// A cheap pre-check before the expensive py-spy attach.
pub fn looks_like_python(pid: u32) -> bool {
    if exe(pid)
        .rsplit('/')
        .next()
        .is_some_and(|n| n.contains("python"))
    {
        return true;
    }
    match fs::read_to_string(format!("/proc/{pid}/maps")) {
        Ok(maps) => maps.lines().any(|l| {
            l.rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with("libpython") || n.starts_with("python"))
        }),
        // Unreadable maps (permission): let py-spy try and report the real error.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_channels_name_the_call_a_restarted_wait_is_in() {
        // Read off Linux 6.18 for a thread in poll() after a SIGSTOP/SIGCONT, and others.
        assert_eq!(
            syscall_of_wchan("poll_schedule_timeout.constprop.0"),
            Some("poll")
        );
        assert_eq!(syscall_of_wchan("do_epoll_wait"), Some("epoll_wait"));
        assert_eq!(syscall_of_wchan("futex_wait_queue\n"), Some("futex"));
        assert_eq!(
            syscall_of_wchan("hrtimer_nanosleep"),
            Some("clock_nanosleep")
        );
        assert_eq!(syscall_of_wchan("do_select"), Some("select"));
        assert_eq!(syscall_of_wchan("do_wait"), Some("wait4"));
        assert_eq!(syscall_of_wchan("0"), None);
        assert_eq!(syscall_of_wchan("pipe_read"), None);
    }

    /// Vendored py-spy patch 12 (`image_exec_map`): the image's text mapping is found whatever
    /// other mappings of the binary exist (py-spy issue #865).
    #[test]
    fn the_image_text_mapping_is_chosen_over_a_second_mapping_of_the_file() {
        use py_spy::python_process_info::image_exec_map;
        // A PIE python: header, text, rodata, data.
        let image = [
            (0x5555_0000, 0x0, false),
            (0x5555_1000, 0x1000, true),
            (0x5565_0000, 0x100_0000, false),
            (0x5575_0000, 0x120_0000, false),
        ];
        assert_eq!(image_exec_map(&image), Some(1));
        // libffi's trampoline page mapped from the executable, after the image ...
        let mut after = image.to_vec();
        after.push((0x7f00_0000_0000, 0x9000, true));
        assert_eq!(image_exec_map(&after), Some(1));
        // ... or before it (address order used to decide: py-spy issue #865), even at the
        // text segment's own file offset.
        let mut before = vec![(0x4000_0000, 0x1000, true)];
        before.extend(image);
        assert_eq!(image_exec_map(&before), Some(2));
        // A non-PIE binary loaded at 0x400000 with its text at file offset 0x1000.
        let fixed = [(0x40_0000, 0x0, false), (0x40_1000, 0x1000, true)];
        assert_eq!(image_exec_map(&fixed), Some(1));
        // An old layout whose first segment is the text itself (header and code together).
        assert_eq!(image_exec_map(&[(0x40_0000, 0x0, true)]), Some(0));
        // No header mapping seen: the lowest file offset.
        assert_eq!(
            image_exec_map(&[(0x7000_0000, 0x9000, true), (0x5555_1000, 0x1000, true)]),
            Some(1)
        );
        assert_eq!(image_exec_map(&[(0x5555_0000, 0x0, false)]), None);
    }

    #[test]
    fn a_frozen_cgroup_is_found_in_v1_and_v2() {
        let files = |path: &str| -> Option<String> {
            match path {
                "/sys/fs/cgroup/freezer/paused/freezer.state" => Some("FROZEN\n".into()),
                "/sys/fs/cgroup/freezer/running/freezer.state" => Some("THAWED\n".into()),
                "/sys/fs/cgroup/unified/app/cgroup.events" => {
                    Some("populated 1\nfrozen 1\n".into())
                }
                "/sys/fs/cgroup/other/cgroup.events" => Some("populated 1\nfrozen 0\n".into()),
                _ => None,
            }
        };
        assert_eq!(
            frozen_in("6:freezer:/paused\n0::/\n", files).as_deref(),
            Some("cgroup v1 freezer /paused")
        );
        assert_eq!(frozen_in("6:freezer:/running\n", files), None);
        assert_eq!(
            frozen_in("0::/app\n", files).as_deref(),
            Some("cgroup v2 /app")
        );
        assert_eq!(frozen_in("0::/other\n", files), None);
        assert_eq!(frozen_in("6:freezer:/../paused\n", files), None);
        assert_eq!(frozen_in("garbage", files), None);
    }

    #[test]
    fn parses_nspid() {
        let status = "Name:\tpython3\nTgid:\t4242\nNSpid:\t4242\t1\nNSsid:\t1\n";
        assert_eq!(parse_nspid(status), Some(vec![4242, 1]));
        assert_eq!(parse_nspid("NSpid:\t77\n"), Some(vec![77]));
        assert_eq!(parse_nspid("Name:\tx\n"), None);
        assert_eq!(parse_nspid("NSpid:\t12\tx\n"), None);
        let me = std::process::id();
        let map = thread_ids_by_own_namespace(me).unwrap();
        assert!(map.values().any(|t| *t == me), "{map:?}");
        if !in_nested_pid_namespace(me) {
            assert_eq!(map.get(&me), Some(&me));
        }
    }

    #[test]
    fn parses_stat_with_spaces_in_comm() {
        let s = b"1234 (my (weird) proc) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 3 0 98765 1000 10 18446744073709551615";
        let st = parse_stat(s).unwrap();
        assert_eq!(st.state, 'S');
        assert_eq!(st.ppid, 1);
        assert_eq!(st.utime, 250);
        assert_eq!(st.stime, 31);
        assert_eq!(st.starttime, 98765);
    }

    #[test]
    fn parses_syscall_file() {
        assert_eq!(parse_syscall(b"running\n"), Syscall::Running);
        assert_eq!(
            parse_syscall(b"230 0x1 0x0 0x7ffd 0x0 0x0 0x0 0x7ffd 0x7f\n"),
            Syscall::Nr(230)
        );
        assert_eq!(parse_syscall(b"-1 0x7ffd 0x7f\n"), Syscall::Unknown);
        assert_eq!(parse_syscall(b""), Syscall::Unknown);
    }

    #[test]
    fn walks_the_tree() {
        let parents: HashMap<u32, u32> = [(10, 1), (11, 10), (12, 10), (13, 11), (20, 1)]
            .into_iter()
            .collect();
        let mut d = descendants(10, &parents);
        d.sort();
        assert_eq!(d, vec![11, 12, 13]);
        assert_eq!(ancestors(13, &parents), vec![11, 10, 1]);
    }

    #[test]
    fn proc_files_reread_open_files_and_follow_thread_exits() {
        let pid = std::process::id();
        let mut files = ProcFiles::new(pid);
        assert!(files.process_stat().is_ok());
        // A thread that exits: its files read while it lives, then reads fail and are closed.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            done_rx.recv().unwrap();
        });
        let tid = rx.recv().unwrap();
        assert!(files.thread_stat(tid).is_ok());
        assert!(files.thread_schedstat(tid).is_some());
        // Burn some CPU: the re-read of the open stat file must see the time move.
        let before = files.process_stat().unwrap();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(60) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let after = files.process_stat().unwrap();
        assert!(
            after.utime + after.stime > before.utime + before.stime,
            "{before:?} {after:?}"
        );
        done_tx.send(()).unwrap();
        t.join().unwrap();
        // join() returns when the thread leaves user space; the kernel drops the task just after.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while files.thread_stat(tid).is_ok() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(
            files.thread_stat(tid).is_err(),
            "an exited thread cannot be read"
        );
        assert!(files.thread_schedstat(tid).is_none());
        files.retain_threads(&HashSet::new());
        assert_eq!(
            files.open_files(),
            1,
            "only the process's own stat stays open"
        );
    }

    #[test]
    fn parent_scanner_sees_new_children_without_a_full_rescan() {
        let me = std::process::id();
        let mut scanner = ParentScanner::new();
        assert_eq!(
            scanner.scan().get(&me),
            process_stat(me).ok().map(|s| s.ppid).as_ref()
        );
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        // Well within FULL_EVERY: only the new pid's stat is read.
        let parents = scanner.scan().clone();
        assert_eq!(parents.get(&child.id()), Some(&me));
        assert!(descendants(me, &parents).contains(&child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            !scanner.scan().contains_key(&child.id()),
            "exited processes are dropped"
        );
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        let st = process_stat(me).unwrap();
        assert!(st.state == 'R' || st.state == 'S');
        assert!(!cmdline(me).unwrap().is_empty());
        assert!(thread_ids(me).unwrap().contains(&me));
        assert!(is_alive(me));
    }

    /// Memory of a made-up process: regions at fixed addresses.
    struct FakeMemory(Vec<(usize, Vec<u8>)>);

    impl remoteprocess::ProcessMemory for FakeMemory {
        fn read(&self, addr: usize, buf: &mut [u8]) -> Result<(), remoteprocess::Error> {
            for (start, bytes) in &self.0 {
                if addr >= *start && addr + buf.len() <= start + bytes.len() {
                    buf.copy_from_slice(&bytes[addr - start..addr - start + buf.len()]);
                    return Ok(());
                }
            }
            Err(remoteprocess::Error::Other(format!("unmapped {addr:#x}")))
        }
    }

    /// Vendored py-spy patch 14: on 3.13+ the garbage collector's state is found through the
    /// interpreter's own `_Py_DebugOffsets`, so a patch release that moves `PyInterpreterState`
    /// fields (3.14.5 moved `imports.modules`) is still read right. A synthetic 3.14 image puts
    /// the GC state 64 bytes after where the bindings say, and a wrong value where they say.
    #[test]
    fn gc_state_is_found_through_the_debug_offsets() {
        use py_spy::python_bindings::v3_14_0 as py;
        use py_spy::python_process_info::PythonProcessLayout;
        use std::mem::{offset_of, size_of};
        let runtime = 0x1000usize;
        let interp = 0x10_0000usize;
        let bound_gc = offset_of!(py::_is, gc);
        let moved_gc = bound_gc + 64;
        // SAFETY: the bindings are plain C data; all-zero is a valid value.
        let mut o: py::_Py_DebugOffsets = unsafe { std::mem::zeroed() };
        // The runtime's interpreter pointer, just past the offsets table.
        let head = size_of::<py::_Py_DebugOffsets>().next_multiple_of(8);
        o.runtime_state.interpreters_head = head as u64;
        o.interpreter_state.gc = moved_gc as u64;
        o.interpreter_state.imports_modules = 0x40;
        o.interpreter_state.ceval_gil = 0x48;
        let collecting = offset_of!(py::_gc_runtime_state, collecting);
        o.gc.collecting = collecting as u64;
        // SAFETY: reading the bytes of a plain struct.
        let offsets = unsafe {
            std::slice::from_raw_parts(
                (&o as *const py::_Py_DebugOffsets).cast::<u8>(),
                size_of::<py::_Py_DebugOffsets>(),
            )
        }
        .to_vec();
        let mut rt = offsets;
        rt.resize(head + 8, 0);
        rt[head..head + 8].copy_from_slice(&interp.to_ne_bytes());
        let mut is = vec![0u8; moved_gc + size_of::<py::_gc_runtime_state>() + 64];
        let stats = offset_of!(py::_gc_runtime_state, generation_stats);
        let stat = size_of::<py::gc_generation_stats>();
        let counter = offset_of!(py::gc_generation_stats, collections);
        for (state, (gen0, gen2, flag)) in
            [(moved_gc, (7u64, 3u64, 1i32)), (bound_gc, (999, 999, 0))]
        {
            is[state + stats + counter..][..8].copy_from_slice(&gen0.to_ne_bytes());
            is[state + stats + 2 * stat + counter..][..8].copy_from_slice(&gen2.to_ne_bytes());
            is[state + collecting..][..4].copy_from_slice(&flag.to_ne_bytes());
        }
        let mem = FakeMemory(vec![(runtime, rt), (interp, is)]);
        let version = py_spy::Version {
            major: 3,
            minor: 14,
            patch: 5,
            release_flags: String::new(),
            build_metadata: None,
        };
        let layout = PythonProcessLayout::from_debug_offsets(
            runtime,
            &mem,
            &version,
            &py_spy::Config::default(),
        )
        .unwrap();
        assert_eq!(layout.interpreter_address, interp);
        assert_eq!(layout.imports_modules_address, interp + 0x40);
        assert_eq!(layout.gc_address, Some(interp + moved_gc));
        let gc = py_spy::python_spy::read_gc_state(&mem, &version, &layout)
            .unwrap()
            .unwrap();
        assert_eq!(gc.collections, [7, 0, 3]);
        assert!(gc.collecting);
        // Without the debug offsets (an older layout) the bindings' offset is used.
        let bound = PythonProcessLayout {
            gc_address: None,
            gc_collecting_offset: None,
            ..layout
        };
        let gc = py_spy::python_spy::read_gc_state(&mem, &version, &bound)
            .unwrap()
            .unwrap();
        assert_eq!(gc.collections, [999, 0, 999]);
    }
}
