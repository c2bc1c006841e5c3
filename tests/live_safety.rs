//! Live safety tests: loopprof never stops, reads or writes anything on behalf of anyone but
//! its target (docs/permissions.md).
//!
//! The pid-namespace case runs entirely inside a pid namespace of the test's own
//! (`unshare -p -f --mount-proc`), with decoy processes on the low pids that the target's
//! threads carry in its nested namespace; it never involves the host's real pids.

mod common;

use common::*;
use std::process::Command;

/// A target in a nested pid namespace (a container without `--pid=host`, seen from outside):
/// its interpreter reports thread ids 1 and 2, which in loopprof's namespace are decoys.
/// loopprof must stop and describe the target's own threads and never touch the decoys.
#[test]
fn a_target_in_a_nested_pid_namespace_is_read_and_nothing_else_is_stopped() {
    let py = venv("3.11").join("bin/python");
    let dir = out_dir("pidns");
    let out = Command::new("unshare")
        .args(["-p", "-f", "--mount-proc"])
        .arg(&py)
        .arg(root().join("tests/python/pidns_harness.py"))
        .arg(loopprof())
        .arg(&dir)
        .arg("2")
        .output()
        .expect("unshare (util-linux) runs; scripts/test.sh installs it");
    assert!(
        out.status.success(),
        "harness failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("harness JSON");
    eprintln!("{r:#}");
    let ids = |k: &str| -> Vec<u32> {
        r[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect()
    };
    // The setup is what the test is about: the target is pid 1 of its own namespace, and the
    // ids its threads carry there are decoys' pids in ours.
    assert_eq!(
        ids("target_nspid").last(),
        Some(&1),
        "target is its namespace's pid 1"
    );
    let decoys = ids("decoy_pids");
    assert!(decoys.contains(&2), "a decoy holds pid 2: {decoys:?}");
    assert_eq!(r["loopprof_exit"], 0, "loopprof record failed");

    let eintr = ids("decoy_eintr");
    assert!(
        eintr.iter().all(|n| *n == 0),
        "loopprof interrupted processes that are not its target (EINTR counts {eintr:?}, pids {decoys:?})"
    );

    let rec = loopprof::recording::load(std::path::Path::new(r["recording"].as_str().unwrap()))
        .expect("recording loads");
    let target_tids = ids("target_tids");
    let mut seen = std::collections::BTreeSet::new();
    for s in &rec.samples {
        for t in &s.threads {
            seen.insert(t.tid);
            assert_ne!(
                t.state, '?',
                "thread {} state unknown: ids not translated",
                t.tid
            );
        }
    }
    assert!(!rec.samples.is_empty());
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        target_tids,
        "recorded thread ids are the target's, in loopprof's namespace"
    );
    // The default mode stops only Python threads once their ids are known: no tick failed.
    let end = rec.end.as_ref().expect("complete recording");
    assert_eq!(end.errors, 0, "failed ticks: {:?}", rec.errors.first());
}

/// A target running as an unprivileged user replaces its own script with a symlink to a
/// root-only file after start-up. loopprof (root) must not copy lines of that file into the
/// recording; lines of a file the target may read (the control) are still recorded.
#[test]
fn source_lines_are_read_with_the_targets_rights_only() {
    use std::os::unix::fs::{chown, PermissionsExt};
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = base.path().join("secret.py");
    let secret_text: String = (1..=40)
        .map(|i| format!("ROOT_ONLY_SECRET_{i} = 'do not copy'\n"))
        .collect();
    std::fs::write(&secret, secret_text).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let app = base.path().join("app");
    std::fs::create_dir(&app).unwrap();
    let main = app.join("main.py");
    std::fs::write(
        app.join("helper.py"),
        "import time\n\n\ndef work():\n    time.sleep(0.002)  # HELPER_LINE\n",
    )
    .unwrap();
    std::fs::write(
        &main,
        format!(
            "import os, sys, time\nsys.path.insert(0, {dir:?})\nimport helper\nos.remove(__file__)\nos.symlink({secret:?}, __file__)\nopen({ready:?}, 'w').close()\n\n\ndef spin():\n    while True:\n        helper.work()\n\n\nspin()\n",
            dir = app.to_str().unwrap(),
            secret = secret.to_str().unwrap(),
            ready = app.join("ready").to_str().unwrap(),
        ),
    )
    .unwrap();
    for p in [&app, &main, &app.join("helper.py")] {
        chown(p, Some(65534), Some(65534)).unwrap();
    }
    let mut target = Proc::spawn(
        "unprivileged target",
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "/usr/bin/python3",
            ])
            .arg(&main),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !app.join("ready").exists() {
        assert!(std::time::Instant::now() < deadline, "target did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(std::fs::symlink_metadata(&main)
        .unwrap()
        .file_type()
        .is_symlink());
    let dir = out_dir("source-rights");
    let rec = record_pid(target.pid(), 1.5, &dir, &[]);
    let _ = target.child.kill();
    let _ = target.child.wait();
    let texts: Vec<&String> = rec.sources.values().collect();
    assert!(
        texts.iter().any(|t| t.contains("HELPER_LINE")),
        "control: a file the target may read gives its lines: {texts:?}"
    );
    assert!(
        !texts.iter().any(|t| t.contains("ROOT_ONLY_SECRET")),
        "lines of a root-only file were copied into the recording: {texts:?}"
    );
    // The frames of the replaced script are still there, without text.
    assert!(rec
        .frames
        .iter()
        .any(|f| rec.str(f.file) == main.to_str().unwrap()));
}

/// `record` and `dump` with stdout (and stderr) on a closed pipe: no panic, the normal exit
/// code, every file of `record` written.
#[test]
fn record_and_dump_end_quietly_on_a_closed_stdout() {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::process::Stdio;
    let mut target = Proc::spawn(
        "sleeping target",
        Command::new(venv("3.11").join("bin/python"))
            .args(["-c", "import time\nwhile True: time.sleep(0.01)"]),
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let closed = || {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two new fds, owned below.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        drop(r);
        w
    };
    let dir = out_dir("closed-stdout");
    let pid = target.pid().to_string();
    let w = closed();
    let out = Command::new(loopprof())
        .args(["record", "--pid", &pid, "--duration", "1", "-o"])
        .arg(&dir)
        .stdout(Stdio::from(w.try_clone().unwrap()))
        .stderr(Stdio::from(w))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "record with a closed stdout");
    for f in [
        "recording.jsonl.gz",
        "report.html",
        "report.md",
        "summary.json",
        "flame-wall.svg",
    ] {
        assert!(dir.join(f).exists(), "{f} written");
    }
    let w = closed();
    let out = Command::new(loopprof())
        .args(["dump", "--pid", &pid])
        .stdout(Stdio::from(w.try_clone().unwrap()))
        .stderr(Stdio::from(w))
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0) | Some(6)),
        "dump with a closed stdout: {:?}",
        out.status
    );
    let _ = target.child.kill();
    let _ = target.child.wait();
}
