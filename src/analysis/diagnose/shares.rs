//! Every thread's time split: on CPU, native, waiting (per reason), GIL wait and, for
//! event loops, idle. Loop threads are weighted by the time each sample covers
//! ([`super::blocks::coverage_ms`]); other threads count samples.

use super::model::ThreadShares;
use crate::analysis::loops::{self, Activity, LoopThread, IDLE_LABEL, WAITING_LABEL_PREFIX};
use crate::analysis::stats::round1;
use crate::recording::Recording;
use std::collections::{BTreeMap, HashMap};

/// One thread's split being accumulated.
#[derive(Debug)]
struct Acc {
    name: String,
    event_loop: bool,
    /// Weight per activity label ([`Activity::label`], or [`IDLE_LABEL`]).
    parts: HashMap<String, f64>,
    total: f64,
}

/// The time splits of every thread, by (pid, tid).
#[derive(Debug, Default)]
pub(super) struct Shares(BTreeMap<(u32, u32), Acc>);

impl Shares {
    /// Adds a loop-thread sample covering `w` ms; `None` is an idle loop.
    pub(super) fn add_loop_sample(&mut self, lt: &LoopThread, activity: Option<Activity>, w: f64) {
        let acc = self.0.entry((lt.pid, lt.tid)).or_insert_with(|| Acc {
            name: lt.name.clone(),
            event_loop: true,
            parts: HashMap::new(),
            total: 0.0,
        });
        acc.total += w;
        let label = activity.map_or_else(|| IDLE_LABEL.to_owned(), Activity::label);
        *acc.parts.entry(label).or_default() += w;
    }

    /// Adds every sample of the threads that are not loops, one unit each.
    pub(super) fn add_other_threads(&mut self, rec: &Recording, loops_found: &[LoopThread]) {
        let loop_ids: Vec<(u32, u32)> = loops_found.iter().map(|l| (l.pid, l.tid)).collect();
        for s in &rec.samples {
            for t in &s.threads {
                if loop_ids.contains(&(s.pid, t.tid)) {
                    continue;
                }
                let acc = self.0.entry((s.pid, t.tid)).or_insert_with(|| Acc {
                    name: rec.thread_name(t).unwrap_or("").to_owned(),
                    event_loop: false,
                    parts: HashMap::new(),
                    total: 0.0,
                });
                if let Some(n) = rec.thread_name(t) {
                    acc.name = n.to_owned();
                }
                let label = loops::activity(rec, s, t).label();
                *acc.parts.entry(label).or_default() += 1.0;
                acc.total += 1.0;
            }
        }
    }

    /// The splits in percent, by (pid, tid).
    pub(super) fn finish(self, rec: &Recording) -> Vec<ThreadShares> {
        self.0
            .into_iter()
            .map(|((pid, tid), acc)| {
                let p = |k: &str| {
                    round1(100.0 * acc.parts.get(k).copied().unwrap_or(0.0) / acc.total.max(1e-9))
                };
                let samples = rec
                    .samples
                    .iter()
                    .filter(|s| s.pid == pid && s.threads.iter().any(|t| t.tid == tid))
                    .count();
                ThreadShares {
                    pid,
                    tid,
                    samples,
                    on_cpu_pct: p(Activity::OnCpu.name()),
                    native_pct: p(Activity::Native.name()),
                    waiting_pct: acc
                        .parts
                        .keys()
                        .filter_map(|k| k.strip_prefix(WAITING_LABEL_PREFIX))
                        .map(|r| (r.to_owned(), p(&format!("{WAITING_LABEL_PREFIX}{r}"))))
                        .collect(),
                    gil_wait_pct: p(Activity::GilWait.name()),
                    idle_pct: p(IDLE_LABEL),
                    name: acc.name,
                    event_loop: acc.event_loop,
                }
            })
            .collect()
    }
}
