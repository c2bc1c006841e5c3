//! Live robustness tests: targets that do odd things (tests/python/hostile.py). Each must cost
//! loopprof at most the samples of the thread concerned, never the recording, and every
//! output must say how good the recording is (docs/detection.md, "Recording quality").
//!
//! The frozen cases use a cgroup-v1 freezer group of the test's own under
//! /sys/fs/cgroup/freezer (what `docker pause` uses), thawed and removed when the test ends.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Starts `hostile.py MODE ARGS...` under Python 3.11 and waits for its "ready".
fn start_hostile(args: &[&str]) -> Proc {
    let py = venv("3.11").join("bin/python");
    let mut p = Proc::spawn(
        "hostile",
        Command::new(py)
            .arg(root().join("tests/python/hostile.py"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let mut line = String::new();
    BufReader::new(p.child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "hostile.py {args:?} did not start");
    p
}

/// The event loop's thread (the main thread) in every sample of `rec`.
fn loop_thread_share(rec: &loopprof::recording::Recording, pid: u32) -> f64 {
    let with = rec
        .samples
        .iter()
        .filter(|s| s.threads.iter().any(|t| t.tid == pid))
        .count();
    with as f64 / rec.samples.len().max(1) as f64
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap()
}

/// A thread that starts and ends while it is read costs at most its own sample: the main
/// thread's samples are all there, and (nearly) no tick fails. Measured before the fix: a
/// process starting batches of 20 short threads lost 17 of 30 ticks, because a thread state
/// created for a thread not started yet carries its creator's id, which was stopped twice.
#[test]
fn threads_starting_and_ending_cost_only_their_own_samples() {
    let target = start_hostile(&["churn"]);
    let dir = out_dir("robust-churn");
    let rec = record_pid(target.pid(), 3.0, &dir, &[]);
    let ticks = rec.samples.len() + rec.errors.len();
    eprintln!(
        "{} samples, {} failed: {:?}",
        rec.samples.len(),
        rec.errors.len(),
        rec.errors.iter().take(3).collect::<Vec<_>>()
    );
    // Ticks put off by the duty cycle are not lost ones: on a loaded machine stopping 20
    // threads takes long enough to lower the rate (the old reader too: 87 ticks + 60 put off
    // in 3 s beside two CPU hogs).
    let throttled = rec.end.as_ref().map_or(0, |e| e.throttled) as usize;
    assert!(
        ticks + throttled >= 100,
        "only {ticks} ticks (+{throttled} put off by the duty cycle) in 3 s at 100 Hz"
    );
    assert!(
        rec.errors.len() * 20 <= ticks,
        "{} of {ticks} ticks failed: {:?}",
        rec.errors.len(),
        rec.errors.iter().take(3).collect::<Vec<_>>()
    );
    assert!(loop_thread_share(&rec, target.pid()) > 0.99);
    let q = &summary(&dir)["quality"];
    assert_eq!(q["trusted"], true, "{q}");
    assert!(
        rec.samples.iter().any(|s| s.threads.len() > 2),
        "short threads seen"
    );
}

/// A second executable mapping of the python binary and of libpython (what libffi's static
/// trampolines do in python-build-standalone after the first ctypes callback) does not stop
/// the attach. Measured with the previous build (715cb9a): "not a Python process ... Bad
/// address (os error 14)", because py-spy took the libpython mapping with the lowest file
/// offset (py-spy issue #865).
#[test]
fn a_second_mapping_of_the_interpreter_binary_is_not_taken_for_it() {
    let target = start_hostile(&["remap"]);
    let dir = out_dir("robust-remap");
    let rec = record_pid(target.pid(), 1.0, &dir, &[]);
    assert!(rec.samples.len() >= 20, "{} samples", rec.samples.len());
    assert!(loop_thread_share(&rec, target.pid()) > 0.99);
    let s = summary(&dir);
    let loops = s["threads"].as_array().unwrap();
    assert!(
        loops.iter().any(|t| t["event_loop"] == true),
        "the loop is found: {loops:?}"
    );
}

/// A stack deeper than py-spy's 4,096-frame limit is truncated and marked, and counted; it
/// no longer fails the attach (measured with the previous build, 530739c: "is not a Python
/// process ... Failed to find a python interpreter") or every tick.
#[test]
fn a_stack_deeper_than_4096_frames_is_truncated_and_marked() {
    let target = start_hostile(&["deep", "5000"]);
    // The deep stack exists before loopprof attaches (the thread dives after 1 s).
    std::thread::sleep(Duration::from_millis(1500));
    let dir = out_dir("robust-deep");
    let rec = record_pid(target.pid(), 2.0, &dir, &[]);
    assert!(
        rec.errors.len() * 20 <= rec.samples.len(),
        "{:?}",
        rec.errors.first()
    );
    assert!(loop_thread_share(&rec, target.pid()) > 0.99);
    let deep = rec
        .samples
        .iter()
        .flat_map(|s| s.threads.iter())
        .filter(|t| names(&rec, t.stack).iter().any(|n| n == "dive"))
        .collect::<Vec<_>>();
    assert!(!deep.is_empty(), "the deep thread was read");
    for t in &deep {
        let stack = names(&rec, t.stack);
        assert_eq!(stack.len(), 4097, "4096 frames and the marker");
        assert_eq!(stack.last().unwrap(), loopprof::recording::TRUNCATED_FRAME);
        assert_eq!(stack[0], "dive", "the innermost frames are the ones kept");
    }
    let end = rec.end.as_ref().unwrap();
    assert_eq!(
        end.truncated,
        deep.len() as u64,
        "every truncated stack counted"
    );
    let q = &summary(&dir)["quality"];
    assert_eq!(q["truncated_stacks"], deep.len() as u64);
    assert!(
        q["problems"]
            .to_string()
            .contains("deeper than 4096 frames"),
        "{q}"
    );
}

/// A cgroup-v1 freezer group of the test's own, thawed and removed when dropped.
struct Freezer(PathBuf);

impl Freezer {
    fn new(name: &str) -> Freezer {
        let base = Path::new("/sys/fs/cgroup/freezer");
        assert!(
            base.join("freezer.state").exists() || base.is_dir(),
            "this test needs the cgroup-v1 freezer at {} (root in a container or VM with cgroup v1 mounted)",
            base.display()
        );
        let dir = base.join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a freezer cgroup (needs root)");
        Freezer(dir)
    }

    /// Moves one thread (`tasks`) or a whole process (`cgroup.procs`) in.
    fn add(&self, id: u32, whole_process: bool) {
        let file = if whole_process {
            "cgroup.procs"
        } else {
            "tasks"
        };
        std::fs::write(self.0.join(file), id.to_string()).unwrap();
    }

    fn set(&self, state: &str) {
        std::fs::write(self.0.join("freezer.state"), state).unwrap();
        for _ in 0..100 {
            let now = std::fs::read_to_string(self.0.join("freezer.state")).unwrap();
            if now.trim() == state {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("freezer did not reach {state}");
    }
}

impl Drop for Freezer {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("freezer.state"), "THAWED");
        std::thread::sleep(Duration::from_millis(50));
        // Move the tasks back to the root group so the directory can go.
        if let Ok(tasks) = std::fs::read_to_string(self.0.join("tasks")) {
            for t in tasks.lines() {
                let _ = std::fs::write("/sys/fs/cgroup/freezer/tasks", t);
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn state(tid: u32) -> char {
    let s = std::fs::read_to_string(format!("/proc/{tid}/stat")).unwrap();
    s[s.rfind(')').unwrap() + 2..].chars().next().unwrap()
}

/// A target frozen by its cgroup (`docker pause`) is read without stopping it, said to be
/// frozen, and gets no verdict; `dump` says it cannot tell (exit 8). Reported before (issue
/// 14): 4.5 s for `record --duration 2`, no sample, "no event loop was found", `dump` exit 0.
#[test]
fn a_frozen_target_is_said_to_be_frozen_and_gets_no_verdict() {
    let target = start_hostile(&["loop"]);
    let freezer = Freezer::new("loopprof-frozen");
    freezer.add(target.pid(), true);
    freezer.set("FROZEN");
    let dir = out_dir("robust-frozen");
    let out = record_output(
        target.pid(),
        2.0,
        &dir,
        &["--fail-on", "loop_blocked_pct > 5"],
    );
    let said = text(&out);
    assert_eq!(out.status.code(), Some(7), "every gate fails: {said}");
    assert!(said.contains("cannot be trusted"), "{said}");
    assert!(said.contains("frozen by its cgroup v1 freezer"), "{said}");
    let s = summary(&dir);
    assert_eq!(s["verdict"]["kind"], "inconclusive", "{}", s["verdict"]);
    assert_eq!(s["quality"]["trusted"], false);
    let rec = loopprof::recording::load(&dir).unwrap();
    assert!(
        rec.samples.len() >= 100,
        "read while frozen: {}",
        rec.samples.len()
    );
    for report in ["report.md", "report.html"] {
        let body = std::fs::read_to_string(dir.join(report)).unwrap();
        assert!(
            body.contains("CANNOT BE TRUSTED"),
            "{report} states the quality"
        );
    }

    let dump = run_loopprof(
        &["dump", "--pid", &target.pid().to_string()],
        Duration::from_secs(30),
    );
    assert_eq!(dump.status.code(), Some(8), "{}", text(&dump));
    assert!(String::from_utf8_lossy(&dump.stdout).contains("frozen"));

    // Never left in a ptrace stop: thawed, it runs.
    drop(freezer);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        matches!(state(target.pid()), 'S' | 'R'),
        "target runs after thawing"
    );
    let tracer = std::fs::read_to_string(format!("/proc/{}/status", target.pid())).unwrap();
    assert!(tracer.contains("TracerPid:\t0"), "no tracer left");
}

/// A thread in uninterruptible sleep (here: one thread of the target frozen on its own) is
/// read without a stop; it does not hold the other threads stopped or fail the ticks.
/// Measured with the previous build (530739c): 0 samples and 5 failed ticks in 2 s, each
/// tick waiting 500 ms for it with the other threads stopped.
#[test]
fn a_thread_in_uninterruptible_sleep_costs_no_tick() {
    let target = start_hostile(&["threads", "3"]);
    let tids: Vec<u32> = std::fs::read_dir(format!("/proc/{}/task", target.pid()))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
        .filter(|t| *t != target.pid())
        .collect();
    let frozen_tid = tids[0];
    let freezer = Freezer::new("loopprof-d-state");
    freezer.add(frozen_tid, false);
    freezer.set("FROZEN");
    assert_eq!(
        state(frozen_tid),
        'D',
        "the thread is in uninterruptible sleep"
    );
    let dir = out_dir("robust-d-state");
    let rec = record_pid(target.pid(), 2.0, &dir, &[]);
    let ticks = rec.samples.len() + rec.errors.len();
    assert!(
        rec.errors.len() * 20 <= ticks,
        "{} of {ticks} failed: {:?}",
        rec.errors.len(),
        rec.errors.first()
    );
    assert!(
        rec.samples.len() >= 100,
        "ticks went on at the rate: {} samples in 2 s at 100 Hz",
        rec.samples.len()
    );
    let seen = rec
        .samples
        .iter()
        .filter(|s| {
            s.threads
                .iter()
                .any(|t| t.tid == frozen_tid && t.state == 'D')
        })
        .count();
    assert!(
        seen * 10 >= rec.samples.len() * 9,
        "the frozen thread was read: {seen}"
    );
    assert!(loop_thread_share(&rec, target.pid()) > 0.99);
    drop(freezer);
    std::thread::sleep(Duration::from_millis(100));
    let status = std::fs::read_to_string(format!("/proc/{frozen_tid}/status")).unwrap();
    assert!(status.contains("TracerPid:\t0"), "the thread was let go");
}

/// The disk filling up in the middle of a recording: a clear error naming the cause, what was
/// recorded so far stays readable, and the target runs on.
#[test]
fn a_full_disk_ends_the_recording_cleanly() {
    let mnt = out_dir("robust-disk-full");
    std::fs::create_dir_all(&mnt).unwrap();
    let mount = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=96k", "tmpfs"])
        .arg(&mnt)
        .status()
        .expect("mount runs (util-linux)");
    assert!(mount.success(), "mounting a small tmpfs needs root");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let target = start_hostile(&["churn"]);
    let dir = mnt.join("out");
    // An uncompressed recording of a busy target fills 96 KiB within seconds.
    let out = record_output(
        target.pid(),
        20.0,
        &dir,
        &["--rate", "200", "--uncompressed"],
    );
    let said = text(&out);
    assert_eq!(out.status.code(), Some(5), "{said}");
    assert!(
        said.contains("No space left on device") && said.contains("free disk space"),
        "{said}"
    );
    let rec = loopprof::recording::load(&dir).expect("what was written stays readable");
    assert!(!rec.samples.is_empty());
    assert!(
        !rec.warnings.is_empty(),
        "the reader says the recording was cut short"
    );
    // No half-written output is left under a final name.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            name.starts_with("recording.jsonl"),
            "only the recording may be there, not {name}"
        );
    }
    assert!(matches!(state(target.pid()), 'S' | 'R'), "target unharmed");
}

/// A target with a thousand Python threads (about 20 ms to stop and read): the duty cycle puts
/// ticks off so the target is held stopped at most `--max-stop-pct` (default 10%) of the time,
/// beyond a 50 ms burst, and the lowered rate is said. Reported before the duty cycle (issue
/// 14): stopped 54-58% of the recording, ticks back to back.
#[test]
fn many_threads_are_read_within_the_duty_cycle() {
    let target = start_hostile(&["threads", "1000"]);
    let dir = out_dir("robust-1000-threads");
    let rec = record_pid(target.pid(), 4.0, &dir, &[]);
    let q = summary(&dir)["quality"].clone();
    eprintln!("{q}");
    let stopped_pct = q["stopped_pct"].as_f64().unwrap();
    // 10% of 4 s, the 50 ms burst (1.25%) and one tick past the budget.
    assert!(
        stopped_pct <= 13.0,
        "target stopped {stopped_pct}% of the time"
    );
    // Whether the rate is lowered by the duty cycle (ticks put off) or because reading a
    // thousand threads takes longer than the interval on a slow or loaded machine (CI saw 17 Hz
    // with no tick put off and 4.5% stopped), a rate below the one asked is said.
    let end = rec.end.as_ref().unwrap();
    let achieved = q["achieved_hz"].as_f64().unwrap();
    if achieved < 90.0 {
        assert!(
            q["problems"].to_string().contains("Hz of the 100 Hz asked"),
            "the lowered rate is said: {q}"
        );
    }
    if end.throttled > 0 {
        assert!(
            q["problems"].to_string().contains("put off"),
            "ticks put off are said: {q}"
        );
    }
    assert!(
        rec.samples.iter().all(|s| s.threads.len() > 1000),
        "every thread read in every sample"
    );
}

/// A target that `execve`s a new Python is followed: the exec is recorded as a process event
/// and the new image is sampled. Measured with the previous build (530739c): 278 of 401
/// ticks failed, every one after the exec ("Bad address").
#[test]
fn a_target_that_execs_is_attached_again() {
    let target = start_hostile(&["exec"]);
    let dir = out_dir("robust-exec");
    let rec = record_pid(target.pid(), 4.0, &dir, &[]);
    let exec = rec
        .process_events
        .iter()
        .find(|e| e.event == loopprof::recording::ProcessEventKind::Exec)
        .expect("the exec is recorded");
    assert!(
        exec.process.cmdline.iter().any(|a| a == "exec'd"),
        "the event describes the new image: {:?}",
        exec.process
    );
    let ticks = rec.samples.len() + rec.errors.len();
    assert!(
        rec.errors.len() * 20 <= ticks,
        "{} of {ticks} ticks failed: {:?}",
        rec.errors.len(),
        rec.errors.first()
    );
    let after = rec
        .samples
        .iter()
        .filter(|s| s.t_us > exec.t_us + 500_000)
        .filter(|s| {
            s.threads
                .iter()
                .any(|t| names(&rec, t.stack).iter().any(|n| n == "main"))
        })
        .count();
    // (Re-attaching takes longer on a loaded machine: any steady sampling will do.)
    assert!(after >= 20, "the new image was sampled: {after} samples");
    assert_eq!(summary(&dir)["quality"]["trusted"], true);
}

/// A target that forks: the parent is sampled without a failed tick, and the child (a
/// Python process with its own loop) is picked up as a new process.
#[test]
fn a_target_that_forks_keeps_being_sampled_and_its_child_is_found() {
    let target = start_hostile(&["fork"]);
    let dir = out_dir("robust-fork");
    let rec = record_pid(target.pid(), 4.0, &dir, &[]);
    assert!(
        rec.errors.len() * 20 <= rec.samples.len(),
        "{:?}",
        rec.errors.first()
    );
    let child = rec
        .process_events
        .iter()
        .find(|e| e.event == loopprof::recording::ProcessEventKind::Started)
        .expect("the child is found");
    assert_eq!(child.process.ppid, target.pid());
    let child_samples = rec
        .samples
        .iter()
        .filter(|s| s.pid == child.process.pid)
        .count();
    assert!(child_samples >= 20, "child sampled: {child_samples}");
    let parent = rec.samples.iter().filter(|s| s.pid == target.pid()).count();
    assert!(parent >= 300, "parent sampled through the fork: {parent}");
}

/// Names and paths that are not UTF-8 (a lone surrogate from `os.fsdecode`) or carry markup
/// are read (as U+FFFD) and escaped: the frame and every thread name survive, and the report
/// holds no markup from the target. Measured with the previous build (530739c): the frame
/// was dropped and every thread of the process lost its name.
#[test]
fn names_and_paths_that_are_not_utf8_are_read_and_escaped() {
    let base = out_dir("robust-names");
    std::fs::create_dir_all(&base).unwrap();
    let target = start_hostile(&["names", base.to_str().unwrap()]);
    let dir = base.join("out");
    let rec = record_pid(target.pid(), 2.0, &dir, &[]);
    let thread_names: Vec<String> = rec
        .samples
        .iter()
        .flat_map(|s| s.threads.iter())
        .filter_map(|t| t.name.map(|n| rec.str(n).to_owned()))
        .collect();
    assert!(
        thread_names.iter().any(|n| n == "MainThread"),
        "{thread_names:?}"
    );
    assert!(
        thread_names
            .iter()
            .any(|n| n == "odd-\u{FFFD}-<script>alert(1)</script>"),
        "{thread_names:?}"
    );
    let odd = rec
        .samples
        .iter()
        .flat_map(|s| s.threads.iter())
        .filter(|t| names(&rec, t.stack).first().map(String::as_str) == Some("odd_sleep"))
        .count();
    assert!(
        odd * 10 >= rec.samples.len() * 9,
        "the frame in the odd path is read: {odd}"
    );
    for file in [
        "report.html",
        "report.md",
        "flame-wall.svg",
        "flame-off-cpu.svg",
    ] {
        let body = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(
            !body.contains("<script>alert"),
            "{file}: markup from the target is escaped"
        );
    }
    let flame = std::fs::read_to_string(dir.join("flame-wall.svg")).unwrap();
    assert!(
        flame.contains("odd_sleep (odd-\u{FFFD}\u{FFFD}/odd_mod.py:5)"),
        "the frame in the odd path is shown"
    );
}

/// Two recorders on one target at once (two engineers, or a CI gate beside a manual run):
/// each keeps its rate and neither loses ticks to the other's stops. Reported before (issue
/// 14): 1 sample/s with a second recorder attached.
#[test]
fn two_recorders_at_once_both_keep_their_rate() {
    let target = start_hostile(&["churn"]);
    let first_dir = out_dir("robust-two-recorders-1");
    let pid = target.pid().to_string();
    let first_args = [
        "record",
        "--pid",
        pid.as_str(),
        "--duration",
        "4",
        "-o",
        first_dir.to_str().unwrap(),
    ];
    let mut first = spawn_loopprof(&first_args);
    std::thread::sleep(Duration::from_millis(500));
    let second_dir = out_dir("robust-two-recorders-2");
    let second = record_pid(target.pid(), 2.0, &second_dir, &[]);
    assert!(
        first.wait_timeout(Duration::from_secs(30)).is_some(),
        "the first recorder ends"
    );
    let first = loopprof::recording::load(&first_dir).expect("first recording");
    for (name, rec, secs) in [("first", &first, 4.0), ("second", &second, 2.0)] {
        let ticks = rec.samples.len() + rec.errors.len();
        // On a loaded machine stops take longer and the duty cycle lowers the rate (said in
        // the report); what must not happen is ticks lost to the other recorder's stops.
        let throttled = rec.end.as_ref().map_or(0, |e| e.throttled);
        assert!(
            rec.samples.len() as f64 >= 0.5 * 100.0 * secs || throttled > 0,
            "{name}: {} samples in {secs} s at 100 Hz, none put off by the duty cycle",
            rec.samples.len()
        );
        assert!(
            rec.errors.len() * 20 <= ticks,
            "{name}: {} of {ticks} ticks failed: {:?}",
            rec.errors.len(),
            rec.errors.first()
        );
    }
}

/// A live thread restarted in poll() after a stop: the `syscall` file says only
/// `restart_syscall` (219 on x86-64), the wait channel still says poll.
#[test]
fn a_stopped_and_resumed_poll_is_named_by_its_wait_channel() {
    use std::time::{Duration, Instant};
    let Ok(mut child) = std::process::Command::new("python3")
        .args(["-c", "import select; select.poll().poll(30000)"])
        .spawn()
    else {
        panic!("python3 is needed")
    };
    let pid = child.id();
    let mut files = loopprof::capture::procfs::ProcFiles::new(pid);
    let until = |what: &mut dyn FnMut() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !what() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    until(&mut || files.thread_wchan_syscall(pid) == Some("poll"));
    unsafe {
        libc::kill(pid as i32, libc::SIGSTOP);
        libc::kill(pid as i32, libc::SIGCONT);
    }
    let mut restarted = false;
    until(&mut || {
        restarted = matches!(files.thread_syscall_args(pid).0, loopprof::capture::procfs::Syscall::Nr(n) if n != 7);
        restarted
    });
    let named = files.thread_wchan_syscall(pid);
    let _ = child.kill();
    let _ = child.wait();
    assert!(restarted, "the syscall file names the restart, not poll");
    assert_eq!(named, Some("poll"));
}
