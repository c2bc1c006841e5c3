//! Source lines of sampled frames, read once per distinct (process, file) with the target's
//! own rights and inside the target's own root.
//!
//! loopprof usually runs as root; the file names come from the target's memory and the files
//! from a file system the target may control. A target must not be able to make loopprof read
//! for it what it could not read itself (a script replaced by a symlink to a root-only file, a
//! FIFO that blocks the reader, a multi-gigabyte device), so each file is read like this:
//! * the path is resolved inside the target's root (`/proc/PID/root`) with `openat2` and
//!   `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS` (openat2(2)): absolute symlinks and `..` stay
//!   inside the target's root, as they do for the target;
//! * on a short-lived thread whose file-system credentials are the target's (fsuid, fsgid and
//!   supplementary groups from `/proc/PID/status`, set with the raw per-thread syscalls;
//!   setfsuid(2): leaving fsuid 0 clears the file capabilities from the effective set, and a
//!   root target's missing `CAP_DAC_*` are dropped too), so the kernel checks every directory
//!   and the file as it would for the target. When loopprof cannot take those credentials
//!   (not root), it reads only for a target of its own uid;
//! * opened `O_PATH` first, then only a regular file is reopened for reading (never a FIFO,
//!   device or socket), with a size cap.
//!
//! A relative file name (the main script of `python app.py`) is resolved the same way inside
//! the target's current directory (`/proc/PID/cwd`, as of the read) taken as the root, so it
//! never reaches above that directory. Anything unreadable (and pseudo files such as
//! `<frozen ...>`, `<string>`) is remembered as missing. Limits: LSM policies (AppArmor, SELinux) are checked against
//! loopprof's own context; kernels before 5.6 (no `openat2`) give no source lines.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Files larger than this are not read (bytes).
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Lines recorded before and after the line of an application frame.
pub const CONTEXT_LINES: i32 = 3;
const MAX_LINE_CHARS: usize = 400;

/// Most files whose lines [`SourceCache`] keeps at once.
const MAX_CACHED_FILES: usize = 256;

/// Caches the lines of the source files read so far, per process (at most
/// `MAX_CACHED_FILES` files; a process's files are dropped when it exits).
#[derive(Default)]
pub struct SourceCache {
    files: HashMap<(u32, String), Option<Vec<String>>>,
    given: HashSet<(String, i32)>,
}

impl SourceCache {
    /// Like [`SourceCache::line`], but each (file, line) is returned only the first time.
    pub fn line_once(&mut self, pid: u32, file: &str, line: i32) -> Option<String> {
        if !self.given.insert((file.to_owned(), line)) {
            return None;
        }
        self.line(pid, file, line)
    }

    /// Forgets the files read for `pid` (call when it exits: a server restarting its workers
    /// would otherwise keep every worker's copy).
    pub fn forget(&mut self, pid: u32) {
        self.files.retain(|(p, _), _| *p != pid);
    }

    /// The text of `line` (1-based) of `file` as process `pid` sees it, trimmed of its newline
    /// and capped in length; `None` when unreadable by the target or by loopprof.
    pub fn line(&mut self, pid: u32, file: &str, line: i32) -> Option<String> {
        if line <= 0 {
            return None;
        }
        // Bounded: past this many files the cache starts again (a file needed again is
        // read again, once per new line).
        if self.files.len() >= MAX_CACHED_FILES && !self.files.contains_key(&(pid, file.to_owned()))
        {
            self.files.clear();
        }
        let lines = self
            .files
            .entry((pid, file.to_owned()))
            .or_insert_with(|| read_lines(pid, file))
            .as_ref()?;
        let text = lines.get(line as usize - 1)?;
        Some(if text.chars().count() > MAX_LINE_CHARS {
            text.chars().take(MAX_LINE_CHARS).collect()
        } else {
            text.clone()
        })
    }
}

/// File-system credentials of a process, from `/proc/PID/status` (proc(5)): the 4th `Uid:`
/// and `Gid:` fields are fsuid and fsgid, `Groups:` the supplementary groups, `CapEff:` the
/// effective capabilities (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// File-system user id.
    pub fsuid: u32,
    /// File-system group id.
    pub fsgid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Effective capability bits.
    pub cap_eff: u64,
}

/// `CAP_DAC_OVERRIDE` and `CAP_DAC_READ_SEARCH` (capability.h): what lets root read any file.
const CAP_DAC_MASK: u64 = (1 << 1) | (1 << 2);

impl Credentials {
    /// Parses a `/proc/PID/status` text; `None` when a field is missing or malformed.
    pub fn parse(status: &str) -> Option<Credentials> {
        let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name));
        let nth = |name: &str, n: usize| -> Option<u32> {
            field(name)?.split_whitespace().nth(n)?.parse().ok()
        };
        Some(Credentials {
            fsuid: nth("Uid:", 3)?,
            fsgid: nth("Gid:", 3)?,
            groups: field("Groups:")?
                .split_whitespace()
                .map(|g| g.parse().ok())
                .collect::<Option<Vec<u32>>>()?,
            cap_eff: u64::from_str_radix(field("CapEff:")?.trim(), 16).ok()?,
        })
    }

    /// The credentials of process `pid`.
    pub fn of(pid: u32) -> Option<Credentials> {
        Credentials::parse(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
    }
}

/// Reads the lines of `file` as process `pid` would (see the module docs).
fn read_lines(pid: u32, file: &str) -> Option<Vec<String>> {
    if file.is_empty() || file.starts_with('<') {
        return None;
    }
    let creds = Credentials::of(pid)?;
    // A relative name (`python app.py` names its script `app.py`) is resolved inside the
    // target's current directory as if it were `/`: never above it.
    let base = if file.starts_with('/') { "root" } else { "cwd" };
    let root = open_path(libc::AT_FDCWD, &format!("/proc/{pid}/{base}"), true)?;
    let bytes = read_in_root_as(&root, file, &creds)?;
    Some(
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|l| l.trim_end_matches('\r').to_owned())
            .collect(),
    )
}

/// `open(path, O_PATH | O_CLOEXEC [| O_DIRECTORY])` relative to `dirfd`.
fn open_path(dirfd: i32, path: &str, directory: bool) -> Option<OwnedFd> {
    let c = CString::new(path).ok()?;
    let flags = libc::O_PATH | libc::O_CLOEXEC | if directory { libc::O_DIRECTORY } else { 0 };
    // SAFETY: `c` is a valid NUL-terminated string; the returned fd is owned by the caller.
    let fd = unsafe { libc::openat(dirfd, c.as_ptr(), flags) };
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads at most [`MAX_FILE_BYTES`] of regular file `path`, resolved inside the directory
/// `root` as if it were `/`, with the file-system credentials `creds` (on a thread of its own,
/// so no other thread of loopprof ever runs with them). `None` when any step is refused.
pub fn read_in_root_as(root: &OwnedFd, path: &str, creds: &Credentials) -> Option<Vec<u8>> {
    let root_fd = root.as_raw_fd();
    let path = path.to_owned();
    let creds = creds.clone();
    std::thread::scope(|s| {
        s.spawn(move || {
            if !take_credentials(&creds) {
                return None;
            }
            read_regular_in_root(root_fd, &path)
        })
        .join()
        .ok()
        .flatten()
    })
}

/// Takes `creds` as this thread's file-system credentials. Returns false when it cannot (then
/// nothing may be read on the target's behalf), true when this thread now checks file access
/// as the target would, or when loopprof's own uid is the target's and it lacks the right to
/// switch (no privilege is crossed then).
fn take_credentials(creds: &Credentials) -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    // Raw syscalls: glibc's setgroups changes every thread of the process; the kernel's
    // changes only the calling thread, which is what this needs.
    // SAFETY: the pointer and length describe `creds.groups`, alive for the call.
    let groups_ok = unsafe {
        libc::syscall(
            libc::SYS_setgroups,
            creds.groups.len(),
            creds.groups.as_ptr(),
        )
    } == 0;
    if !groups_ok {
        // Not privileged: only a target of our own uid may be read, with our own rights.
        return creds.fsuid == euid;
    }
    // SAFETY: setfsgid/setfsuid take plain ids; each returns the previous id, so calling it
    // again with an invalid id (-1) reads back what is set now.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, creds.fsgid);
        libc::syscall(libc::SYS_setfsuid, creds.fsuid);
        let gid_now = libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32;
        let uid_now = libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32;
        if gid_now != creds.fsgid || uid_now != creds.fsuid {
            return false;
        }
    }
    // A target with fsuid 0 reads everything only with CAP_DAC_*; drop what it lacks.
    // (For fsuid != 0 the kernel already cleared them from this thread's effective set.)
    if creds.fsuid == 0 && creds.cap_eff & CAP_DAC_MASK != CAP_DAC_MASK {
        return drop_effective_caps(CAP_DAC_MASK & !creds.cap_eff);
    }
    true
}

/// Removes `bits` (capability numbers below 32) from this thread's effective set (capset(2),
/// `_LINUX_CAPABILITY_VERSION_3`).
fn drop_effective_caps(bits: u64) -> bool {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: header and a two-element data array, as capget(2) requires for version 3.
    unsafe {
        if libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) != 0 {
            return false;
        }
        data[0].effective &= !(bits as u32);
        libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) == 0
    }
}

/// On the calling thread (credentials already taken): resolves `path` inside `root_fd`,
/// checks it is a regular file of at most [`MAX_FILE_BYTES`], and reads it.
fn read_regular_in_root(root_fd: i32, path: &str) -> Option<Vec<u8>> {
    let c = CString::new(path).ok()?;
    // SAFETY: open_how is plain data; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: valid dirfd, NUL-terminated path and an open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root_fd,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a new fd from openat2, owned here.
    let opath = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let regular = |fd: i32| -> Option<(u64, u64, u64)> {
        // SAFETY: fstat writes into `st` only.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        (unsafe { libc::fstat(fd, &mut st) } == 0
            && st.st_mode & libc::S_IFMT == libc::S_IFREG
            && (st.st_size as u64) <= MAX_FILE_BYTES)
            .then_some((st.st_dev, st.st_ino, st.st_size as u64))
    };
    let id = regular(opath.as_raw_fd())?;
    // Reopen the very inode for reading: the kernel checks read permission with this
    // thread's credentials; O_NONBLOCK/O_NOCTTY in case it was swapped meanwhile.
    let reopen = CString::new(format!("/proc/self/fd/{}", opath.as_raw_fd())).ok()?;
    // SAFETY: NUL-terminated path; the returned fd is owned below.
    let rfd = unsafe {
        libc::open(
            reopen.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY,
        )
    };
    if rfd < 0 {
        return None;
    }
    // SAFETY: a new fd, owned by the File.
    let file = unsafe { File::from_raw_fd(rfd) };
    let (dev, ino, _) = regular(file.as_raw_fd())?;
    if (dev, ino) != (id.0, id.1) {
        return None;
    }
    let mut bytes = Vec::with_capacity(id.2 as usize);
    file.take(MAX_FILE_BYTES).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn root_of(dir: &std::path::Path) -> OwnedFd {
        open_path(libc::AT_FDCWD, dir.to_str().unwrap(), true).unwrap()
    }

    fn me() -> Credentials {
        Credentials::of(std::process::id()).unwrap()
    }

    fn nobody() -> Credentials {
        Credentials {
            fsuid: 65534,
            fsgid: 65534,
            groups: vec![],
            cap_eff: 0,
        }
    }

    #[test]
    fn relative_names_are_read_inside_the_targets_cwd_and_never_above_it() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path().join("srv");
        std::fs::create_dir(&cwd).unwrap();
        std::fs::write(cwd.join("main.py"), "x = 1\nprint(x)\n").unwrap();
        std::fs::write(dir.path().join("secret.py"), "password = 1\n").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.py"), cwd.join("link.py")).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(&cwd)
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut c = SourceCache::default();
        assert_eq!(c.line(pid, "main.py", 2).as_deref(), Some("print(x)"));
        assert_eq!(c.line(pid, "./main.py", 1).as_deref(), Some("x = 1"));
        // `..` and an absolute symlink stay inside the cwd taken as the root.
        assert_eq!(c.line(pid, "../secret.py", 1), None);
        assert_eq!(c.line(pid, "link.py", 1), None);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn reads_lines_through_proc_root_and_remembers_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("app.py");
        std::fs::write(&f, "import time\n    time.sleep(1)\r\n").unwrap();
        let mut c = SourceCache::default();
        let me = std::process::id();
        let file = f.to_str().unwrap();
        assert_eq!(c.line(me, file, 2).as_deref(), Some("    time.sleep(1)"));
        assert_eq!(c.line(me, file, 3), None);
        assert_eq!(c.line(me, "<frozen runpy>", 1), None);
        // Relative to this test process's cwd (the crate root), where no app.py is.
        assert_eq!(c.line(me, "app.py", 1), None);
        assert_eq!(c.line(me, "/nonexistent/x.py", 1), None);
    }

    #[test]
    fn parses_credentials() {
        let status = "Name:\tpython3\nUid:\t1000\t1000\t1000\t1001\nGid:\t100\t100\t100\t102\nGroups:\t4 24 27 \nCapEff:\t0000000000000006\n";
        assert_eq!(
            Credentials::parse(status),
            Some(Credentials {
                fsuid: 1001,
                fsgid: 102,
                groups: vec![4, 24, 27],
                cap_eff: 6
            })
        );
        assert_eq!(Credentials::parse("Uid:\t1\n"), None);
        assert!(me().groups.len() < 65536);
    }

    #[test]
    fn symlinks_and_dotdot_stay_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret.py");
        std::fs::write(&secret, "SECRET = 1\n").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("inside.py"), "ok = 1\n").unwrap();
        std::os::unix::fs::symlink(&secret, root.path().join("abs.py")).unwrap();
        let up = "../".repeat(20) + secret.to_str().unwrap().trim_start_matches('/');
        std::os::unix::fs::symlink(&up, root.path().join("rel.py")).unwrap();
        let r = root_of(root.path());
        assert_eq!(
            read_in_root_as(&r, "/inside.py", &me()).as_deref(),
            Some(&b"ok = 1\n"[..])
        );
        assert_eq!(
            read_in_root_as(&r, "/abs.py", &me()),
            None,
            "absolute symlink"
        );
        assert_eq!(read_in_root_as(&r, "/rel.py", &me()), None, "../ symlink");
        assert_eq!(
            read_in_root_as(&r, &format!("/..{}", secret.display()), &me()),
            None
        );
        // The same path outside the root exists and is readable: only the root stopped it.
        assert!(read_in_root_as(
            &root_of(std::path::Path::new("/")),
            secret.to_str().unwrap(),
            &me()
        )
        .is_some());
    }

    #[test]
    fn fifos_devices_and_huge_files_are_never_read() {
        let root = tempfile::tempdir().unwrap();
        let fifo = root.path().join("fifo.py");
        let c = CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        std::os::unix::fs::symlink("/dev/zero", root.path().join("zero.py")).unwrap();
        let big = File::create(root.path().join("big.py")).unwrap();
        big.set_len(MAX_FILE_BYTES + 1).unwrap();
        let r = root_of(root.path());
        let slash = root_of(std::path::Path::new("/"));
        let started = std::time::Instant::now();
        assert_eq!(read_in_root_as(&r, "/fifo.py", &me()), None);
        assert_eq!(read_in_root_as(&slash, "/dev/zero", &me()), None);
        assert_eq!(read_in_root_as(&r, "/big.py", &me()), None);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "never blocks"
        );
    }

    #[test]
    fn files_are_read_with_the_targets_rights() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            // Without root the switch is refused: only a same-uid target is read.
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("a.py"), "x\n").unwrap();
            let r = root_of(std::path::Path::new("/"));
            let p = dir.path().join("a.py");
            assert!(read_in_root_as(&r, p.to_str().unwrap(), &nobody()).is_none());
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let private = dir.path().join("private.py");
        std::fs::write(&private, "TOKEN = 'root only'\n").unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
        let public = dir.path().join("public.py");
        std::fs::write(&public, "x = 1\n").unwrap();
        std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644)).unwrap();
        let closed = dir.path().join("closed");
        std::fs::create_dir(&closed).unwrap();
        std::fs::write(closed.join("inner.py"), "y = 2\n").unwrap();
        std::fs::set_permissions(
            closed.join("inner.py"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
        let r = root_of(std::path::Path::new("/"));
        let s = |p: &std::path::Path| p.to_str().unwrap().to_owned();
        assert!(read_in_root_as(&r, &s(&public), &nobody()).is_some());
        assert_eq!(
            read_in_root_as(&r, &s(&private), &nobody()),
            None,
            "file mode"
        );
        assert_eq!(
            read_in_root_as(&r, &s(&closed.join("inner.py")), &nobody()),
            None,
            "directory search permission"
        );
        // Root without CAP_DAC_OVERRIDE/READ_SEARCH (a capability-dropped root target).
        let weak_root = Credentials {
            fsuid: 0,
            fsgid: 0,
            groups: vec![],
            cap_eff: 0,
        };
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o000)).unwrap();
        assert_eq!(read_in_root_as(&r, &s(&private), &weak_root), None);
        assert!(
            read_in_root_as(&r, &s(&private), &me()).is_some(),
            "root itself can"
        );
        // The calling thread kept its own rights.
        assert!(std::fs::read(&private).is_ok());
    }
}
