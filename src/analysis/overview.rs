//! A factual summary of a recording: per process and per thread, what the samples say.
//!
//! This does not interpret stacks (that is the diagnosis); it counts what was observed so a
//! user can check a recording is complete and sensible: achieved sampling rate, time the
//! target was stopped per sample, process CPU, and per thread the share of samples in each OS
//! state, in each syscall, holding the GIL, and the most frequent innermost frames.

use super::stats::percentile;
use crate::recording::frames::short_file;
use crate::recording::Recording;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// The whole overview.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// Duration covered, seconds.
    pub duration_s: f64,
    /// Requested rate.
    pub rate_hz: f64,
    /// Why the recording ended (`None` if cut short).
    pub end_reason: Option<crate::recording::EndReason>,
    /// Failed ticks.
    pub errors: usize,
    /// Warnings met while reading.
    pub warnings: Vec<String>,
    /// How far the recording can be trusted.
    pub quality: super::quality::Quality,
    /// One entry per sampled process.
    pub processes: Vec<ProcessOverview>,
}

/// One process.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessOverview {
    /// Pid.
    pub pid: u32,
    /// Command line, joined.
    pub cmdline: String,
    /// Python version.
    pub python_version: String,
    /// Samples of this process.
    pub samples: usize,
    /// Samples per second actually achieved.
    pub achieved_hz: f64,
    /// Median stack-read (stop) time, microseconds.
    pub read_us_p50: u32,
    /// 99th percentile stack-read time, microseconds.
    pub read_us_p99: u32,
    /// Process CPU used over its sampled span, percent of one core.
    pub cpu_pct: f64,
    /// Threads, by tid.
    pub threads: Vec<ThreadOverview>,
}

/// One thread of one process.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadOverview {
    /// OS thread id.
    pub tid: u32,
    /// Thread name.
    pub name: String,
    /// Samples in which the thread appeared.
    pub samples: usize,
    /// Percent of its samples holding the GIL.
    pub gil_pct: f64,
    /// Percent of its samples per OS state letter.
    pub states: BTreeMap<String, f64>,
    /// Percent of its samples per syscall (`running` = user space).
    pub syscalls: Vec<(String, f64)>,
    /// Most frequent innermost frames: (`function (file:line)`, percent).
    pub top_leaves: Vec<(String, f64)>,
}

fn pct(n: usize, d: usize) -> f64 {
    if d == 0 {
        0.0
    } else {
        100.0 * n as f64 / d as f64
    }
}

fn top(counts: HashMap<String, usize>, total: usize, n: usize) -> Vec<(String, f64)> {
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter()
        .take(n)
        .map(|(k, c)| (k, pct(c, total)))
        .collect()
}

/// Summarises a recording.
pub fn overview(rec: &Recording) -> Overview {
    #[derive(Default)]
    struct T {
        name: String,
        samples: usize,
        gil: usize,
        states: HashMap<String, usize>,
        syscalls: HashMap<String, usize>,
        leaves: HashMap<String, usize>,
    }
    let mut procs = Vec::new();
    for p in &rec.processes {
        let samples: Vec<_> = rec.samples.iter().filter(|s| s.pid == p.pid).collect();
        let mut threads: BTreeMap<u32, T> = BTreeMap::new();
        let mut reads: Vec<u32> = samples.iter().map(|s| s.read_us).collect();
        reads.sort_unstable();
        for s in &samples {
            for t in &s.threads {
                let e = threads.entry(t.tid).or_default();
                if let Some(n) = rec.thread_name(t) {
                    e.name = n.to_owned();
                }
                e.samples += 1;
                e.gil += t.gil as usize;
                *e.states.entry(t.state.to_string()).or_default() += 1;
                *e.syscalls
                    .entry(t.syscall.as_deref().unwrap_or("?").to_owned())
                    .or_default() += 1;
                let leaf = match rec.stack(t.stack).next() {
                    Some(f) => format!(
                        "{} ({}:{})",
                        rec.str(f.name),
                        short_file(rec.str(f.file)),
                        f.line
                    ),
                    None => "(no Python frames)".into(),
                };
                *e.leaves.entry(leaf).or_default() += 1;
            }
        }
        let (span_us, cpu_us) = match (samples.first(), samples.last()) {
            (Some(a), Some(b)) => (
                b.t_us.saturating_sub(a.t_us),
                b.cpu_us.saturating_sub(a.cpu_us),
            ),
            _ => (0, 0),
        };
        procs.push(ProcessOverview {
            pid: p.pid,
            cmdline: p.cmdline.join(" "),
            python_version: p.python_version.clone(),
            samples: samples.len(),
            achieved_hz: if span_us > 0 {
                (samples.len().saturating_sub(1)) as f64 / (span_us as f64 / 1e6)
            } else {
                0.0
            },
            read_us_p50: percentile(&reads, 0.5),
            read_us_p99: percentile(&reads, 0.99),
            cpu_pct: if span_us > 0 {
                100.0 * cpu_us as f64 / span_us as f64
            } else {
                0.0
            },
            threads: threads
                .into_iter()
                .map(|(tid, t)| ThreadOverview {
                    tid,
                    name: t.name,
                    samples: t.samples,
                    gil_pct: pct(t.gil, t.samples),
                    states: t
                        .states
                        .iter()
                        .map(|(k, v)| (k.clone(), pct(*v, t.samples)))
                        .collect(),
                    syscalls: top(t.syscalls, t.samples, 4),
                    top_leaves: top(t.leaves, t.samples, 3),
                })
                .collect(),
        });
    }
    Overview {
        duration_s: rec.duration_us() as f64 / 1e6,
        rate_hz: rec.header.rate_hz,
        end_reason: rec.end.as_ref().map(|e| e.reason),
        errors: rec.errors.len(),
        warnings: rec.warnings.clone(),
        quality: super::quality::quality(rec),
        processes: procs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::testing::tiny_recording;

    #[test]
    fn counts_states_syscalls_and_leaves_per_thread() {
        let rec = tiny_recording();
        let o = overview(&rec);
        assert_eq!(o.processes.len(), 1);
        let p = &o.processes[0];
        assert_eq!(p.samples, 4);
        // 3 intervals of 10 ms -> 100 Hz; CPU 15 ms over 30 ms -> 50 %.
        assert!((p.achieved_hz - 100.0).abs() < 1e-6);
        assert!((p.cpu_pct - 50.0).abs() < 1e-6);
        let main = &p.threads[0];
        assert_eq!(main.name, "MainThread");
        assert_eq!(main.samples, 4);
        assert_eq!(main.gil_pct, 25.0);
        assert_eq!(main.states["S"], 75.0);
        assert_eq!(main.syscalls[0], ("clock_nanosleep".to_string(), 50.0));
        assert_eq!(main.top_leaves[0].0, "rate_limited (app/views.py:12)");
    }
}
