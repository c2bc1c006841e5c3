//! How far a recording can be trusted: what share of its ticks failed, how many thread
//! samples were lost, how close the achieved rate came to the requested one, how long the
//! target was stopped or frozen, and how many stacks were truncated.
//!
//! Every output states this ([`Quality`]); a recording that is mostly failures, or whose
//! target was frozen most of the window, gets an `inconclusive` verdict instead of a
//! confident one, and every `--fail-on` gate fails on it (nothing was measured). The limits
//! are documented in `docs/detection.md` ("Recording quality").

use crate::recording::{ProcessEventKind, Recording};
use serde::Serialize;
use std::collections::HashMap;

/// Above this share of failed ticks (percent), a recording cannot be trusted.
pub const MAX_FAILED_PCT: f64 = 50.0;
/// Above this share of thread samples lost (percent), a recording cannot be trusted.
pub const MAX_LOST_PCT: f64 = 50.0;
/// Above this share of the window frozen (percent), a recording cannot be trusted.
pub const MAX_FROZEN_PCT: f64 = 50.0;
/// Below this share of the requested rate (percent), the rate is worth a warning.
pub const MIN_RATE_PCT: f64 = 50.0;

/// The quality of one recording.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Quality {
    /// Whether a verdict may be drawn from the recording.
    pub trusted: bool,
    /// Successful ticks (samples), all processes.
    pub samples: u64,
    /// Failed ticks, all processes.
    pub failed_ticks: u64,
    /// Failed ticks, percent of all ticks.
    pub failed_pct: f64,
    /// Python threads left out of a tick because their stack could not be read.
    pub lost_threads: u64,
    /// Lost thread samples, percent of all thread samples (read and lost).
    pub lost_pct: f64,
    /// Requested sampling rate, Hz.
    pub rate_hz: f64,
    /// Achieved rate, Hz: samples per second of each process's sampled span, the lowest
    /// over processes (0 without samples).
    pub achieved_hz: f64,
    /// Time the target's threads were stopped for reading, percent of the recording
    /// (summed over processes).
    pub stopped_pct: f64,
    /// Stacks deeper than loopprof reads (kept truncated, under a `[truncated]` frame).
    pub truncated_stacks: u64,
    /// Ticks put off by the duty cycle (`--max-stop-pct`).
    pub throttled_ticks: u64,
    /// Seconds some sampled process was frozen by its freezer cgroup.
    pub frozen_s: f64,
    /// What froze it (the cgroup), when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frozen_by: Option<String>,
    /// The recording is a py-spy capture imported by `report` (`py-spy speedscope`, `py-spy
    /// raw (folded)`): untrusted, since its states and timing are made up. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imported: Option<&'static str>,
    /// Each problem in one sentence: first those that make the recording untrustworthy.
    pub problems: Vec<String>,
}

fn pct(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        (part * 1000.0 / whole).round() / 10.0
    } else {
        0.0
    }
}

/// The quality of `rec`. Pure: reads only the recording.
pub fn quality(rec: &Recording) -> Quality {
    let duration_us = rec.duration_us();
    let samples = rec.samples.len() as u64;
    let failed = rec.errors.len() as u64;
    let lost: u64 = rec.samples.iter().map(|s| u64::from(s.lost)).sum();
    let thread_samples: u64 = rec.samples.iter().map(|s| s.threads.len() as u64).sum();
    let stopped_us: u64 = rec.samples.iter().map(|s| u64::from(s.read_us)).sum();
    let end = rec.end.clone().unwrap_or_default();

    let (achieved_hz, processes) = achieved_rate(rec);
    let (frozen_us, frozen_by) = frozen_time(rec, duration_us);
    let frozen_us = frozen_us.min(duration_us.max(1) * processes.max(1) as u64);

    let mut q = Quality {
        trusted: true,
        samples,
        failed_ticks: failed,
        failed_pct: pct(failed as f64, (samples + failed) as f64),
        lost_threads: lost,
        lost_pct: pct(lost as f64, (thread_samples + lost) as f64),
        rate_hz: rec.header.rate_hz,
        achieved_hz: (achieved_hz * 10.0).round() / 10.0,
        stopped_pct: pct(stopped_us as f64, duration_us as f64),
        truncated_stacks: end.truncated,
        throttled_ticks: end.throttled,
        frozen_s: (frozen_us as f64 / 1e5).round() / 10.0,
        frozen_by,
        imported: rec.imported.map(|k| k.name()),
        problems: Vec::new(),
    };
    let (fatal, warn) = problems(&q, frozen_us, pct(frozen_us as f64, duration_us as f64));
    let mut fatal = fatal;
    if let Some(kind) = rec.imported {
        fatal.insert(
            0,
            format!(
                "imported from a {} capture: no thread states, system calls or timestamps (sample i of a thread is put at i/{} s, and idle time is missing unless py-spy ran with --idle), so stall lengths are not measured; findings name call sites by their share of samples",
                kind.name(),
                rec.header.rate_hz
            ),
        );
    }
    q.trusted = fatal.is_empty();
    q.problems = fatal.into_iter().chain(warn).collect();
    q
}

/// The lowest rate achieved by a process over its own sampled span, Hz, and how many
/// processes were sampled.
fn achieved_rate(rec: &Recording) -> (f64, usize) {
    let mut spans: HashMap<u32, (u64, u64, u64)> = HashMap::new();
    for s in &rec.samples {
        let e = spans.entry(s.pid).or_insert((s.t_us, s.t_us, 0));
        e.0 = e.0.min(s.t_us);
        e.1 = e.1.max(s.t_us);
        e.2 += 1;
    }
    let period_us = if rec.header.rate_hz > 0.0 {
        1e6 / rec.header.rate_hz
    } else {
        0.0
    };
    let achieved_hz = spans
        .values()
        .filter(|(_, _, n)| *n > 1)
        .map(|(a, b, n)| *n as f64 / (((b - a) as f64 + period_us) / 1e6))
        .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.min(r))))
        .unwrap_or(0.0);
    (achieved_hz, spans.len())
}

/// Time the processes were frozen (summed, µs), from the process events (a span still open
/// runs to the end), and by what (the first freezer named).
fn frozen_time(rec: &Recording, duration_us: u64) -> (u64, Option<String>) {
    let mut frozen_since: HashMap<u32, u64> = HashMap::new();
    let mut frozen_us = 0u64;
    let mut frozen_by = None;
    for ev in &rec.process_events {
        match ev.event {
            ProcessEventKind::Frozen => {
                frozen_since.entry(ev.process.pid).or_insert(ev.t_us);
                frozen_by = frozen_by.or_else(|| ev.detail.clone());
            }
            ProcessEventKind::Thawed | ProcessEventKind::Exited => {
                if let Some(t) = frozen_since.remove(&ev.process.pid) {
                    frozen_us += ev.t_us.saturating_sub(t);
                }
            }
            _ => {}
        }
    }
    frozen_us += frozen_since
        .values()
        .map(|t| duration_us.saturating_sub(*t))
        .sum::<u64>();
    (frozen_us, frozen_by)
}

/// The problems of a recording: (fatal ones, which make it untrusted; warnings).
fn problems(q: &Quality, frozen_us: u64, frozen_pct: f64) -> (Vec<String>, Vec<String>) {
    let (samples, failed, lost) = (q.samples, q.failed_ticks, q.lost_threads);
    let mut fatal = Vec::new();
    let mut warn = Vec::new();
    if samples == 0 {
        fatal.push("no tick could be read".to_owned());
    } else if samples == 1 {
        fatal.push(
            "only one tick could be read: nothing can be measured from a single sample".to_owned(),
        );
    } else if q.failed_pct > MAX_FAILED_PCT {
        fatal.push(format!(
            "{:.0}% of the ticks failed ({} of {})",
            q.failed_pct,
            failed,
            samples + failed
        ));
    } else if failed > 0 {
        warn.push(format!("{} ticks failed ({:.1}%)", failed, q.failed_pct));
    }
    if q.lost_pct > MAX_LOST_PCT {
        fatal.push(format!(
            "{:.0}% of the thread samples could not be read",
            q.lost_pct
        ));
    } else if lost > 0 {
        warn.push(format!(
            "{} thread samples could not be read ({:.1}%: threads exiting or starting while read)",
            lost, q.lost_pct
        ));
    }
    if frozen_pct > MAX_FROZEN_PCT {
        fatal.push(format!(
            "the target was frozen{} for {:.1} s of the window ({:.0}%): a frozen process runs no code, so nothing it does can be seen (thaw it: `docker unpause`, or write THAWED to the cgroup's freezer.state)",
            q.frozen_by.as_deref().map(|b| format!(" by its {b}")).unwrap_or_default(),
            q.frozen_s,
            frozen_pct
        ));
    } else if frozen_us > 0 {
        warn.push(format!(
            "the target was frozen{} for {:.1} s",
            q.frozen_by
                .as_deref()
                .map(|b| format!(" by its {b}"))
                .unwrap_or_default(),
            q.frozen_s
        ));
    }
    if samples > 1 && q.rate_hz > 0.0 && q.achieved_hz < q.rate_hz * MIN_RATE_PCT / 100.0 {
        warn.push(format!(
            "sampled at {:.0} Hz of the {:.0} Hz asked{}",
            q.achieved_hz,
            q.rate_hz,
            if q.throttled_ticks > 0 {
                " (ticks were put off to bound the time the target is stopped)"
            } else {
                ""
            }
        ));
    }
    if q.truncated_stacks > 0 {
        warn.push(format!(
            "{} stacks were deeper than 4096 frames: their innermost frames were kept, under a `[truncated]` frame",
            q.truncated_stacks
        ));
    }
    (fatal, warn)
}

impl Quality {
    /// One line for text outputs: `quality: good`, `quality: usable: PROBLEMS` or
    /// `quality: CANNOT BE TRUSTED` (the verdict says why), with the figures.
    pub fn line(&self) -> String {
        let head = if !self.trusted {
            "quality: CANNOT BE TRUSTED"
        } else if self.problems.is_empty() {
            "quality: good"
        } else {
            "quality: usable"
        };
        let rate = format!(
            "{:.0} of {:.0} Hz achieved · {:.1}% of ticks failed · {:.1}% of thread samples lost · target stopped {:.1}% of the time",
            self.achieved_hz, self.rate_hz, self.failed_pct, self.lost_pct, self.stopped_pct
        );
        // An untrusted recording's first problem is its verdict's sentence already.
        if self.problems.is_empty() || !self.trusted {
            format!("{head} ({rate})")
        } else {
            format!("{head}: {} ({rate})", self.problems.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::testing::*;
    use crate::recording::*;

    fn thread() -> RawThread {
        RawThread {
            runs: None,
            tid: 7,
            name: Some("MainThread".into()),
            active: false,
            gil: false,
            state: 'S',
            syscall: Some("epoll_wait".into()),
            sched: None,
            wait: None,
            route: None,
            request: None,
            frames: vec![frame("select", "/usr/lib/python3.11/selectors.py", 468)],
            stopped: true,
        }
    }

    fn error(t_us: u64) -> Record {
        Record::SampleError(SampleError {
            pid: 7,
            t_us,
            kind: "read".into(),
            message: "Bad address".into(),
        })
    }

    #[test]
    fn a_clean_recording_is_good() {
        let mut b = RecordingBuilder::new(header(7, 100.0));
        for i in 0..100 {
            b.sample(7, i * 10_000, i * 100, &[thread()]);
        }
        let q = quality(&b.finish(end(1_000_000, 100)));
        assert!(q.trusted, "{q:?}");
        assert!(q.problems.is_empty(), "{:?}", q.problems);
        assert_eq!(q.achieved_hz, 100.0);
        assert!(q.line().starts_with("quality: good"), "{}", q.line());
    }

    #[test]
    fn mostly_failed_ticks_cannot_be_trusted() {
        let mut b = RecordingBuilder::new(header(7, 100.0));
        for i in 0..100 {
            if i % 4 == 0 {
                b.sample(7, i * 10_000, i * 100, &[thread()]);
            } else {
                b.record(error(i * 10_000));
            }
        }
        let q = quality(&b.finish(end(1_000_000, 25)));
        assert!(!q.trusted);
        assert_eq!(q.failed_pct, 75.0);
        assert!(
            q.problems[0].contains("75% of the ticks failed"),
            "{:?}",
            q.problems
        );
        // A few failures are a warning, not a lost recording.
        let mut b = RecordingBuilder::new(header(7, 100.0));
        for i in 0..100 {
            if i % 20 == 0 {
                b.record(error(i * 10_000));
            } else {
                b.sample(7, i * 10_000, i * 100, &[thread()]);
            }
        }
        let q = quality(&b.finish(end(1_000_000, 25)));
        assert!(q.trusted);
        assert!(q.problems[0].contains("5 ticks failed"), "{:?}", q.problems);
    }

    #[test]
    fn lost_threads_and_a_frozen_target_are_counted() {
        let mut b = RecordingBuilder::new(header(7, 100.0));
        let info = header(7, 100.0).processes[0].clone();
        b.record(Record::Process(ProcessEvent {
            t_us: 100_000,
            event: ProcessEventKind::Frozen,
            process: info.clone(),
            detail: Some("cgroup v1 freezer /paused".into()),
        }));
        for i in 0..100u64 {
            b.sample_lost(7, i * 10_000, &[thread()], (i % 2) as u32);
        }
        b.record(Record::Process(ProcessEvent {
            t_us: 900_000,
            event: ProcessEventKind::Thawed,
            process: info,
            detail: None,
        }));
        let q = quality(&b.finish(end(1_000_000, 100)));
        assert_eq!(q.lost_threads, 50);
        assert_eq!(q.lost_pct, 33.3);
        assert_eq!(q.frozen_s, 0.8);
        assert!(!q.trusted, "frozen 80% of the window: {q:?}");
        assert!(
            q.problems[0].contains("frozen by its cgroup v1 freezer /paused"),
            "{:?}",
            q.problems
        );
    }
}
