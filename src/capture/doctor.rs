//! `loopprof doctor`: the pre-flight checks of the capture stage, run before an incident so
//! that `record` works when it matters. The host: privileges (root, `CAP_SYS_PTRACE`), Yama's
//! `ptrace_scope`, seccomp; with a target: it exists, is not traced already, can be attached,
//! its Python version and build (supported, free-threaded, libpython shared or static).
//! Each check says what it saw and, when it fails, how to fix it. What a short recording
//! says (the event loop, workers, readable sources) is checked by the CLI on top.

use super::procfs;
use super::sampler;
use super::source::Credentials;
use serde::Serialize;
use std::time::Duration;

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Recording works, but something is worth knowing (it may fail for some targets).
    Warn,
    /// Recording would fail.
    Fail,
}

/// Why a failed check makes recording fail, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailKind {
    /// ptrace is not allowed (exit 4).
    Permission,
    /// The target cannot be recorded (exit 3).
    Target,
}

/// One check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked (`privileges`, `ptrace_scope`, `python`...).
    pub name: &'static str,
    /// Its outcome.
    pub status: Status,
    /// What was seen.
    pub detail: String,
    /// How to fix it, when it is not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// For a failure: permission or target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fails: Option<FailKind>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
            fails: None,
        }
    }

    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
            fails: None,
        }
    }

    fn fail(
        name: &'static str,
        kind: FailKind,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
            fails: Some(kind),
        }
    }
}

/// `CAP_SYS_PTRACE` (capability.h).
const CAP_SYS_PTRACE: u64 = 1 << 19;

/// The oldest and newest CPython minor versions the vendored py-spy reads (3.8–3.15).
pub const PYTHON_MINORS: std::ops::RangeInclusive<u64> = 8..=15;

/// The host's checks: who loopprof runs as, Yama, seccomp.
pub fn host_checks() -> Vec<Check> {
    let me = Credentials::of(std::process::id());
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let cap = me.as_ref().is_some_and(|c| c.cap_eff & CAP_SYS_PTRACE != 0);
    let mut out = Vec::new();
    out.push(match (euid, cap) {
        (0, true) => Check::ok("privileges", "root, with CAP_SYS_PTRACE"),
        (0, false) => Check::warn(
            "privileges",
            "root, but without CAP_SYS_PTRACE (a container dropped it)",
            "run the container with the capability: docker run --cap-add SYS_PTRACE (Kubernetes: securityContext.capabilities.add: [\"SYS_PTRACE\"]); without it only processes of the same user can be read, and only with ptrace_scope 0",
        ),
        (_, true) => Check::ok("privileges", format!("user {euid}, with CAP_SYS_PTRACE")),
        (_, false) => Check::warn(
            "privileges",
            format!("user {euid}, without CAP_SYS_PTRACE: only your own processes can be read, and only with ptrace_scope 0"),
            "run loopprof as root (sudo loopprof ...), or give the binary the capability: sudo setcap cap_sys_ptrace+ep \"$(command -v loopprof)\"",
        ),
    });
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok());
    out.push(match scope {
        None => Check::ok("ptrace_scope", "no Yama (ptrace follows the usual rules)"),
        Some(0) => Check::ok("ptrace_scope", "0: any process of the same user"),
        Some(1) if cap => Check::ok("ptrace_scope", "1: restricted to descendants, but CAP_SYS_PTRACE lifts it"),
        Some(1) => Check::warn(
            "ptrace_scope",
            "1: only descendants may be traced without CAP_SYS_PTRACE",
            "run as root or with the capability, or allow it for your own processes: sudo sysctl kernel.yama.ptrace_scope=0",
        ),
        Some(2) if cap => Check::ok("ptrace_scope", "2: admin only, and loopprof has CAP_SYS_PTRACE"),
        Some(2) => Check::fail(
            "ptrace_scope",
            FailKind::Permission,
            "2: only CAP_SYS_PTRACE may trace",
            "run as root (sudo loopprof ...) or give the binary the capability: sudo setcap cap_sys_ptrace+ep \"$(command -v loopprof)\"",
        ),
        Some(s) => Check::fail(
            "ptrace_scope",
            FailKind::Permission,
            format!("{s}: ptrace is disabled for everyone, root included"),
            "it stays disabled until the next boot (kernel.yama.ptrace_scope=3 cannot be lowered); record on a host booted with a lower setting",
        ),
    });
    let seccomp = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Seccomp:"))
                .and_then(|v| v.trim().parse::<u8>().ok())
        });
    out.push(match seccomp {
        Some(2) => Check::warn(
            "seccomp",
            "a seccomp filter applies to loopprof (a container's default profile may forbid ptrace and process_vm_readv)",
            "if recording is refused while root: docker run --cap-add SYS_PTRACE (Docker then allows ptrace), or --security-opt seccomp=unconfined",
        ),
        _ => Check::ok("seccomp", "no seccomp filter on loopprof"),
    });
    out
}

/// The checks of a target process: it exists, is not traced, can be attached; its Python.
pub fn target_checks(pid: u32) -> Vec<Check> {
    let mut out = Vec::new();
    if !procfs::is_alive(pid) {
        out.push(Check::fail(
            "process",
            FailKind::Target,
            format!("no process with pid {pid} is running"),
            "check the pid: ps aux | grep uvicorn (inside a container, the pid as seen from where loopprof runs)",
        ));
        return out;
    }
    let cmdline = procfs::cmdline(pid).unwrap_or_default().join(" ");
    out.push(Check::ok("process", format!("{pid}: {cmdline}")));
    if let Some((t, comm)) = procfs::tracer_of(pid) {
        out.push(Check::fail(
            "tracer",
            FailKind::Permission,
            format!("already traced by process {t} ({comm})"),
            "a process has one tracer at a time: stop the debugger, py-spy or other loopprof first",
        ));
        return out;
    }
    let spy = match sampler::attach(pid, false, Duration::from_millis(500)) {
        Ok(spy) => spy,
        Err(e) => {
            let kind = if matches!(
                e,
                super::CaptureError::PermissionDenied { .. }
                    | super::CaptureError::AlreadyTraced { .. }
            ) {
                FailKind::Permission
            } else {
                FailKind::Target
            };
            // The error's first line says what happened; its fixes go on the `fix:` lines.
            let message = e.to_string();
            let detail = message.lines().next().unwrap_or_default().to_owned();
            out.push(Check::fail("attach", kind, detail, fix_of(&e)));
            return out;
        }
    };
    out.push(Check::ok("attach", "py-spy reads the interpreter"));
    out.push(python_check(pid, &spy.version));
    out
}

/// What to do about an attach error (its message already says most).
fn fix_of(e: &super::CaptureError) -> String {
    match e {
        super::CaptureError::PermissionDenied { help, .. } => help
            .lines()
            .map(|l| l.trim().trim_start_matches("- "))
            .collect::<Vec<_>>()
            .join("\n"),
        super::CaptureError::NotPython { .. } => {
            "pass the pid of the uvicorn/gunicorn process (or its master)".into()
        }
        _ => "see the message".into(),
    }
}

/// Whether process `pid` runs a free-threaded (no-GIL) build of CPython `v`: its executable
/// (`python3.13t`) or its libpython (`libpython3.13t.so`) says so.
fn free_threaded(pid: u32, v: &py_spy::Version, maps: &str, exe: &str) -> bool {
    let _ = pid;
    exe.ends_with('t')
        || maps
            .lines()
            .any(|l| l.contains(&format!("libpython{}.{}t", v.major, v.minor)))
}

/// Why loopprof does not sample process `pid`, which runs CPython `v` (py-spy attached to
/// it): a version outside 3.8-3.15 (py-spy also reads 2.7 and 3.3-3.7, which loopprof's
/// analyses do not cover) or a free-threaded build. `None` when it is supported.
pub fn unsupported_python(pid: u32, v: &py_spy::Version) -> Option<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let exe = procfs::exe(pid);
    if free_threaded(pid, v, &maps, &exe) {
        Some(format!("CPython {v} is a free-threaded (no-GIL) build"))
    } else if v.major != 3 || !PYTHON_MINORS.contains(&v.minor) {
        Some(format!("CPython {v} is older than 3.8"))
    } else {
        None
    }
}

/// The target's Python: version in the supported range, free-threaded or not, libpython
/// shared or linked in.
fn python_check(pid: u32, v: &py_spy::Version) -> Check {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let exe = procfs::exe(pid);
    let shared = maps.lines().any(|l| l.contains("/libpython"));
    let free_threaded = free_threaded(pid, v, &maps, &exe);
    let build = if shared {
        "libpython shared"
    } else {
        "libpython linked in (static)"
    };
    let detail = format!("CPython {v} ({build}) at {exe}");
    if free_threaded {
        Check::fail(
            "python",
            FailKind::Target,
            format!("{detail}: a free-threaded build"),
            "free-threaded (no-GIL) builds are not supported: py-spy 0.4.3 reads the GIL-based interpreter's structures",
        )
    } else if v.major != 3 || !PYTHON_MINORS.contains(&v.minor) {
        Check::fail(
            "python",
            FailKind::Target,
            detail,
            "loopprof reads CPython 3.8 to 3.15",
        )
    } else if v.minor >= 14 {
        Check::warn(
            "python",
            detail,
            "read by the engine but not tested by loopprof's suite (CPython 3.14/3.15 interpreters are not available to it)",
        )
    } else {
        Check::ok("python", detail)
    }
}
