//! Worker-thread pool exhaustion: `def` routes, sync dependencies, `run_in_threadpool` and
//! `anyio.to_thread.run_sync` all run on AnyIO's worker threads behind one capacity limiter.
//! When every token is taken, further requests queue on the limiter while the event loop
//! idles: low CPU, low throughput, and nothing blocks the loop.
//!
//! A thread is an AnyIO worker when its stack holds `WorkerThread.run` in
//! `anyio._backends._asyncio` (anyio 3 and 4); it is idle when the frame it called is in the
//! `queue` module (waiting for work in `Queue.get`), busy otherwise. A sample of a process is
//! *saturated* when at least [`DEFAULT_LIMIT`] workers are busy and none is idle: the default
//! limiter is full and the pool cannot grow. Tasks queued on the limiter prove it full
//! ([`crate::analysis::tasks::limiter_queued`]): a sample between two task snapshots that saw
//! them is saturated with up to [`MAX_IDLE_WHILE_QUEUED`] of its 40+ workers idle (between
//! calls, waiting for a loop short of CPU to hand them the next). Saturated samples
//! separated by dips of at most 50 ms (a worker back in `Queue.get` for a moment between two
//! queued calls) form an *episode*.
//! Limits: a limiter raised at start-up is not read from the target, so a pool saturated
//! below 40 threads (a lowered limit) is not reported, and one whose raised limit is not yet
//! reached but whose 40+ threads are all busy is; pools of `concurrent.futures` executors
//! (`loop.run_in_executor`) are not examined.

use super::loops::{self, Activity};
use super::memo;
use crate::recording::frames::{self, Origin};
use crate::recording::{FrameDef, Recording, Sample};
use std::collections::BTreeMap;

/// The catalog id (and verdict kind) of an exhausted worker pool.
pub const CATEGORY: &str = "thread-pool-exhausted";

/// Tokens of AnyIO's default thread limiter (`anyio.to_thread.current_default_thread_limiter()`,
/// documented as 40 in anyio's "Working with threads"; Starlette and FastAPI use it).
pub const DEFAULT_LIMIT: usize = 40;

/// The longest dip below saturation that does not end an episode, ms.
const MAX_DIP_MS: f64 = 50.0;

/// One saturated stretch of a process's worker pool.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    /// Time of its first and last sample, µs since the recording started.
    pub t_us: (u64, u64),
    /// Its duration (midpoint coverage of its samples), ms.
    pub duration_ms: f64,
}

/// What the busy workers of a process did while its pool was saturated.
#[derive(Debug, Clone)]
pub struct Saturation {
    /// Process id.
    pub pid: u32,
    /// Most workers seen busy at once.
    pub max_busy: usize,
    /// Worker-thread count seen in the process (max over samples).
    pub workers: usize,
    /// Saturated stretches, in time order.
    pub episodes: Vec<Episode>,
    /// The process's sampled time, ms (the share's denominator).
    pub window_ms: f64,
    /// Busy worker stacks during saturation: (stack id, index of `WorkerThread.run`,
    /// activity) with the weight of each (ms of one sample's coverage, per thread).
    pub busy: Vec<(u32, usize, Activity, f64)>,
    /// What the busy workers waited on during saturation (string id), with the same weights.
    pub waits: Vec<(u32, f64)>,
}

impl Saturation {
    /// Saturated time, ms.
    pub fn saturated_ms(&self) -> f64 {
        self.episodes.iter().map(|e| e.duration_ms).sum()
    }
}

/// Index of the `WorkerThread.run` frame of an AnyIO worker stack (innermost first).
pub fn worker_anchor(rec: &Recording, stack: &[&FrameDef]) -> Option<usize> {
    stack.iter().position(|f| {
        frames::function_matches("WorkerThread.run", rec.str(f.name))
            && memo::module_of(rec, f).starts_with("anyio._backends")
    })
}

/// Whether a worker (anchor at `anchor`) is waiting for work.
fn idle(rec: &Recording, stack: &[&FrameDef], anchor: usize) -> bool {
    anchor == 0 || memo::module_of(rec, stack[anchor - 1]) == "queue"
}

/// The most workers seen idle in a sample that tasks queued on the thread limiter on both
/// sides mark saturated: workers back in `Queue.get` for the moment the loop takes to hand them
/// the next queued call (a loop short of CPU takes milliseconds, and with 40 workers finishing
/// a call each few hundred ms one is nearly always between calls; beside two CPU hogs on 2
/// cores, 3 to 8 of 40 were seen idle with 20 requests queued on the limiter).
pub const MAX_IDLE_WHILE_QUEUED: usize = DEFAULT_LIMIT / 4;

/// How far (µs) a task snapshot may be from a sample to speak for it.
const QUEUE_SPAN_US: u64 = 2_000_000;

/// Whether the task snapshots of `pid` on both sides of `t_us` (each within
/// [`QUEUE_SPAN_US`]) saw tasks queued on the thread limiter. `queued` is
/// [`crate::analysis::tasks::limiter_queued`] (in recording order).
fn queued_around(queued: &[(u32, u64, usize)], pid: u32, t_us: u64) -> bool {
    let mine = || queued.iter().filter(|q| q.0 == pid);
    let before = mine()
        .filter(|q| q.1 <= t_us && t_us - q.1 <= QUEUE_SPAN_US)
        .max_by_key(|q| q.1);
    let after = mine()
        .filter(|q| q.1 >= t_us && q.1 - t_us <= QUEUE_SPAN_US)
        .min_by_key(|q| q.1);
    matches!((before, after), (Some(b), Some(a)) if b.2 > 0 && a.2 > 0)
}

/// Finds saturated worker pools, per process. `queued` is
/// [`crate::analysis::tasks::limiter_queued`] (empty without task snapshots): a sample between
/// two snapshots that saw requests queued on the thread limiter is saturated when the pool has
/// [`DEFAULT_LIMIT`] workers and at most [`MAX_IDLE_WHILE_QUEUED`] of them idle.
pub fn find(rec: &Recording, queued: &[(u32, u64, usize)]) -> Vec<Saturation> {
    let mut by_pid: BTreeMap<u32, Vec<&Sample>> = BTreeMap::new();
    for s in &rec.samples {
        by_pid.entry(s.pid).or_default().push(s);
    }
    let mut out = Vec::new();
    // Per stack id: the worker anchor and whether the worker is idle (None: not a worker).
    // A long recording has millions of thread samples but few distinct stacks.
    let kinds: Vec<Option<(usize, bool)>> = (0..rec.stacks.len() as u32)
        .map(|id| {
            let stack: Vec<&FrameDef> = rec.stack(id).collect();
            worker_anchor(rec, &stack).map(|a| (a, idle(rec, &stack, a)))
        })
        .collect();
    if kinds.iter().all(Option::is_none) {
        return out;
    }
    for (pid, samples) in by_pid {
        let times: Vec<u64> = samples.iter().map(|s| s.t_us).collect();
        let cover = super::diagnose::coverage_ms(&times);
        let mut sat = Saturation {
            pid,
            max_busy: 0,
            workers: 0,
            episodes: Vec::new(),
            window_ms: cover.iter().sum(),
            busy: Vec::new(),
            waits: Vec::new(),
        };
        let mut current: Option<Episode> = None;
        // Time since the current episode's last saturated sample: a worker that finished
        // waits in `Queue.get` until the loop hands it the next queued call, so a saturated
        // pool dips for a moment between calls; dips up to MAX_DIP_MS stay in the episode.
        let mut dip_ms = 0.0;
        for (s, w) in samples.iter().zip(&cover) {
            let mut busy = Vec::new();
            let mut idle_n = 0;
            for t in &s.threads {
                let Some((anchor, is_idle)) = kinds[t.stack as usize] else {
                    continue;
                };
                if is_idle {
                    idle_n += 1;
                } else {
                    busy.push((t.stack, anchor, loops::activity(rec, s, t), t.wait));
                }
            }
            sat.max_busy = sat.max_busy.max(busy.len());
            sat.workers = sat.workers.max(busy.len() + idle_n);
            let saturated = (busy.len() >= DEFAULT_LIMIT && idle_n == 0)
                || (busy.len() + idle_n >= DEFAULT_LIMIT
                    && idle_n <= MAX_IDLE_WHILE_QUEUED
                    && queued_around(queued, pid, s.t_us));
            if saturated {
                sat.waits
                    .extend(busy.iter().filter_map(|b| b.3).map(|id| (id, *w)));
                sat.busy
                    .extend(busy.into_iter().map(|(st, a, act, _)| (st, a, act, *w)));
                match current.as_mut() {
                    Some(e) => {
                        e.t_us.1 = s.t_us;
                        e.duration_ms += dip_ms + w;
                    }
                    None => {
                        current = Some(Episode {
                            t_us: (s.t_us, s.t_us),
                            duration_ms: *w,
                        })
                    }
                }
                dip_ms = 0.0;
            } else if current.is_some() {
                dip_ms += w;
                if dip_ms > MAX_DIP_MS {
                    sat.episodes.extend(current.take());
                    dip_ms = 0.0;
                }
            }
        }
        sat.episodes.extend(current.take());
        if !sat.episodes.is_empty() {
            out.push(sat);
        }
    }
    out
}

/// Time at one call site, in all and per (stack id, anchor).
type SiteWeight = (f64, BTreeMap<(u32, usize), f64>);

/// The worker stack that stands for a saturation: the most frequent (by time) application
/// call site among the busy workers, as (stack id, anchor, majority activity).
pub fn representative(rec: &Recording, sat: &[&Saturation]) -> Option<(u32, usize, Activity)> {
    // Weight per call site (innermost application frame's file and function, else the
    // stack), then the heaviest stack of the heaviest site.
    let mut sites: BTreeMap<(String, String), SiteWeight> = BTreeMap::new();
    let mut acts: BTreeMap<Activity, f64> = BTreeMap::new();
    for s in sat {
        for &(stack_id, anchor, act, w) in &s.busy {
            let stack: Vec<&FrameDef> = rec.stack(stack_id).collect();
            let key = (0..anchor)
                .find(|&i| frames::origin(rec.str(stack[i].file)) == Origin::App)
                .map(|i| {
                    (
                        rec.str(stack[i].file).to_owned(),
                        rec.str(stack[i].name).to_owned(),
                    )
                })
                .unwrap_or_else(|| (String::new(), format!("stack {stack_id}")));
            let e = sites.entry(key).or_default();
            e.0 += w;
            *e.1.entry((stack_id, anchor)).or_default() += w;
            *acts.entry(act).or_default() += w;
        }
    }
    let (_, (_, stacks)) = sites
        .into_iter()
        .max_by(|a, b| a.1 .0.partial_cmp(&b.1 .0).unwrap().then(b.0.cmp(&a.0)))?;
    let ((stack_id, anchor), _) = stacks
        .into_iter()
        .max_by(|a, b| a.1.partial_cmp(&b.1).unwrap().then(b.0.cmp(&a.0)))?;
    let (act, _) = acts
        .into_iter()
        .max_by(|a, b| a.1.partial_cmp(&b.1).unwrap().then(b.0.cmp(&a.0)))?;
    Some((stack_id, anchor, act))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::testing::*;
    use crate::recording::RawFrame;

    const SP: &str = "/venv/lib/python3.11/site-packages";
    const ST: &str = "/usr/lib/python3.11";

    fn worker(busy: bool) -> Vec<RawFrame> {
        let mut v = if busy {
            vec![
                frame("SocketIO.readinto", &format!("{ST}/socket.py"), 706),
                frame("get", &format!("{SP}/requests/api.py"), 73),
                frame("fetch_quote", "/srv/app/main.py", 20),
                frame("get_quote", "/srv/app/main.py", 30),
            ]
        } else {
            vec![
                frame("Condition.wait", &format!("{ST}/threading.py"), 320),
                frame("Queue.get", &format!("{ST}/queue.py"), 171),
            ]
        };
        v.push(frame(
            "WorkerThread.run",
            &format!("{SP}/anyio/_backends/_asyncio.py"),
            836,
        ));
        v.push(frame(
            "Thread._bootstrap_inner",
            &format!("{ST}/threading.py"),
            1045,
        ));
        v
    }

    /// `n` samples at 100 Hz of a process with `workers(i)` = (busy, idle) worker threads.
    fn recording(n: u64, workers: impl Fn(u64) -> (usize, usize)) -> Recording {
        let mut b = RecordingBuilder::new(header(7, 100.0));
        for i in 0..n {
            let (busy, idle) = workers(i);
            let threads: Vec<_> = (0..busy + idle)
                .map(|k| {
                    thread(
                        100 + k as u32,
                        "AnyIO worker thread",
                        'S',
                        if k < busy { "recvfrom" } else { "futex" },
                        false,
                        worker(k < busy),
                    )
                })
                .collect();
            b.sample(7, i * 10_000, 0, &threads);
        }
        b.finish(end(n * 10_000, n))
    }

    #[test]
    fn a_full_default_pool_is_saturated_and_a_light_one_is_not() {
        let rec = recording(100, |i| {
            if (20..70).contains(&i) {
                (40, 0)
            } else {
                (12, 28)
            }
        });
        let found = find(&rec, &[]);
        assert_eq!(found.len(), 1);
        let s = &found[0];
        assert_eq!(s.episodes.len(), 1);
        assert!(
            (s.saturated_ms() - 500.0).abs() < 1.0,
            "{}",
            s.saturated_ms()
        );
        assert_eq!(s.max_busy, 40);
        let (stack, anchor, act) = representative(&rec, &[s]).unwrap();
        let frames: Vec<&FrameDef> = rec.stack(stack).collect();
        assert_eq!(rec.str(frames[anchor].name), "WorkerThread.run");
        assert_eq!(act, Activity::Waiting(loops::WaitReason::Socket));

        // Light load: every existing worker busy, but far from the limit.
        assert!(find(&recording(100, |_| (4, 0)), &[]).is_empty());
        // 40 busy with an idle one beside them: the pool still has room.
        assert!(find(&recording(100, |_| (40, 1)), &[]).is_empty());
    }

    /// Task snapshots every 250 ms of pid 7 with `n(t_us)` tasks queued on the limiter.
    fn snapshots(n: impl Fn(u64) -> usize) -> Vec<(u32, u64, usize)> {
        (0..=4).map(|k| (7, k * 250_000, n(k * 250_000))).collect()
    }

    #[test]
    fn requests_queued_on_the_limiter_mark_a_pool_with_workers_between_calls_saturated() {
        // A loop short of CPU: of 41 workers, 2 or 3 are always between calls.
        let rec = recording(100, |i| if i % 2 == 0 { (39, 2) } else { (38, 3) });
        assert!(find(&rec, &[]).is_empty(), "no queue seen: not saturated");
        let found = find(&rec, &snapshots(|_| 12));
        assert_eq!(found.len(), 1);
        assert!(
            found[0].saturated_ms() > 900.0,
            "{}",
            found[0].saturated_ms()
        );
        // Queued only from 500 ms on: the samples before are not saturated.
        let found = find(&rec, &snapshots(|t| usize::from(t >= 500_000) * 12));
        let ms = found[0].saturated_ms();
        assert!((400.0..600.0).contains(&ms), "{ms}");
        // Controls: a queue on some other limiter while many workers idle, a pool below the
        // limit, and snapshots of another process say nothing.
        let roomy = recording(100, |_| (28, 12));
        assert!(find(&roomy, &snapshots(|_| 12)).is_empty());
        let small = recording(100, |_| (20, 2));
        assert!(find(&small, &snapshots(|_| 12)).is_empty());
        let other: Vec<_> = snapshots(|_| 12)
            .into_iter()
            .map(|q| (8, q.1, q.2))
            .collect();
        assert!(find(&rec, &other).is_empty());
    }
}
