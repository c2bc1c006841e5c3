//! Blocks: the loop threads' samples walked in time order, consecutive busy samples at one
//! call site joined into a [`Block`] timed from the samples' timestamps, and the window's
//! time split accumulated on the way ([`Walk`]).

use super::attribute::{api_name, endpoint, package, user_or_leaf};
use super::shares::Shares;
use crate::analysis::catalog::Catalog;
use crate::analysis::loops::{self, Activity, LoopState, LoopThread};
use crate::analysis::memo;
use crate::recording::{FrameDef, Recording, Sample, ThreadSample};
use std::collections::HashMap;

/// A thread seen holding the GIL while the loop waited for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Holder {
    /// OS thread id.
    pub(super) tid: u32,
    /// Thread name.
    pub(super) name: String,
    /// Its stack id.
    pub(super) stack: u32,
}

/// Everything one pass over the loop threads' samples yields.
#[derive(Debug, Default)]
pub(super) struct Walk {
    /// Every block, per loop thread in time order.
    pub(super) blocks: Vec<Block>,
    /// Loop time analysed, ms (sum over loop threads).
    pub(super) window_ms: f64,
    /// Loop time per process, ms.
    pub(super) window_by_pid: HashMap<u32, f64>,
    /// Loop time in a callback (busy), ms.
    pub(super) busy_ms: f64,
    /// Loop time waiting for the GIL, ms.
    pub(super) gil_ms: f64,
    /// Loop time runnable without a CPU while running code, or waiting for the GIL while its
    /// holder was runnable without a CPU, ms.
    pub(super) starved_ms: f64,
}

/// Walks every loop thread's samples: blocks, the window's times, and each loop thread's
/// time split (added to `shares`).
pub(super) fn walk(
    rec: &Recording,
    catalog: &Catalog,
    loops_found: &[LoopThread],
    shares: &mut Shares,
) -> Walk {
    let mut walk = Walk::default();
    for lt in loops_found {
        walk_thread(rec, catalog, lt, shares, &mut walk);
    }
    walk
}

/// One loop sample, classified: its block key (none when idle), its activity, the anchor
/// frame index and the GIL holder when it waited for the GIL.
struct Classified {
    key: Option<SiteKey>,
    activity: Option<Activity>,
    anchor: usize,
    holder: Option<Holder>,
}

/// Classifies one loop-thread sample; `None` when the stack holds no loop.
fn classify(
    rec: &Recording,
    catalog: &Catalog,
    lt: &LoopThread,
    s: &Sample,
    t: &ThreadSample,
    stack: &[&FrameDef],
) -> Option<Classified> {
    let c = match loops::classify(rec, lt, s, t) {
        LoopState::NotLoop => return None,
        LoopState::Idle | LoopState::Overhead => Classified {
            key: None,
            activity: None,
            anchor: 0,
            holder: None,
        },
        // Waiting for the GIL, idle-looking or inside a callback: what matters is who
        // holds it, so such samples are grouped by the holder.
        LoopState::GilWait
        | LoopState::Busy {
            activity: Activity::GilWait,
            ..
        } => {
            let holder = gil_holder(rec, s, lt.tid);
            let key = SiteKey::Gil {
                holder: holder
                    .as_ref()
                    .map(|h| h.name.clone())
                    .unwrap_or_else(|| UNSEEN_HOLDER.into()),
                function: holder
                    .as_ref()
                    .and_then(|h| user_or_leaf(rec, h.stack))
                    .map(|c| c.function)
                    .unwrap_or_default(),
            };
            Classified {
                key: Some(key),
                activity: Some(Activity::GilWait),
                anchor: stack.len(),
                holder,
            }
        }
        LoopState::Busy { activity, anchor } => Classified {
            key: Some(site_of(rec, catalog, stack, anchor, activity)),
            activity: Some(activity),
            anchor,
            holder: None,
        },
    };
    // A garbage collection holds the GIL: the loop either runs it (on CPU) or waits for the
    // thread that does. Such samples are the collector's, never the code that happened to
    // allocate. (Native code without the GIL is not held by it.)
    let collecting = s.gc.is_some_and(|g| g.collecting)
        && matches!(c.activity, Some(Activity::OnCpu | Activity::GilWait));
    Some(if collecting {
        Classified {
            key: Some(SiteKey::Gc),
            ..c
        }
    } else {
        c
    })
}

/// The blocks being built on one loop thread: the current callback's, and a garbage
/// collection running inside it.
#[derive(Default)]
struct Open {
    current: Option<Block>,
    gc_inside: Option<Block>,
}

impl Open {
    /// Closes both open blocks into `out`.
    fn close(&mut self, out: &mut Vec<Block>) {
        out.extend(self.current.take());
        out.extend(self.gc_inside.take());
    }
}

fn walk_thread(
    rec: &Recording,
    catalog: &Catalog,
    lt: &LoopThread,
    shares: &mut Shares,
    walk: &mut Walk,
) {
    let samples = loops::samples_of(rec, lt);
    let times: Vec<u64> = samples.iter().map(|s| s.t_us).collect();
    let cover = coverage_ms(&times);
    let sched = sched_fractions(&samples, lt.tid);
    let mut open = Open::default();
    for (i, ((s, &w), sched)) in samples.iter().zip(&cover).zip(&sched).enumerate() {
        let t = s.threads.iter().find(|t| t.tid == lt.tid).unwrap();
        let stack: Vec<&FrameDef> = rec.stack(t.stack).collect();
        let Some(c) = classify(rec, catalog, lt, s, t, &stack) else {
            open.close(&mut walk.blocks);
            continue;
        };
        walk.window_ms += w;
        *walk.window_by_pid.entry(lt.pid).or_default() += w;
        shares.add_loop_sample(lt, c.activity, w);
        // Running (or runnable) code: discount the time it waited for a CPU.
        let effective = match c.activity {
            // Code running holds the loop only while the thread is on a CPU: time runnable
            // without a CPU, and time stopped by loopprof's own ptrace stop (longer when the
            // sampler itself is short of CPU), are not the code's.
            Some(Activity::OnCpu) | Some(Activity::Native) => {
                walk.starved_ms += w * sched.starved;
                w * sched.running
            }
            // Waiting for the GIL: the holder holds the loop only while it can run. A holder
            // runnable without a CPU (preempted on a saturated machine, GIL in hand) makes the
            // loop wait for the machine, not for the holder's work.
            Some(Activity::GilWait) => {
                let starved = c
                    .holder
                    .as_ref()
                    .map_or(0.0, |h| holder_starved(&samples, i, h.tid));
                walk.starved_ms += w * starved;
                w * (1.0 - starved)
            }
            _ => w,
        };
        if let Some(a) = c.activity {
            walk.busy_ms += w;
            if a == Activity::GilWait {
                walk.gil_ms += w;
            }
        }
        let sample = BlockSample {
            t,
            t_us: s.t_us,
            anchor: c.anchor,
            w,
            effective,
            holder: c.holder,
        };
        match (c.key, c.activity, open.current.as_mut()) {
            // A collection inside a callback: its own block, and the callback's block goes on
            // after it (each cause keeps its own time; neither hides the other).
            (Some(SiteKey::Gc), Some(a), Some(b)) if b.key != SiteKey::Gc => {
                match open.gc_inside.as_mut() {
                    Some(g) => g.extend(&sample, a),
                    None => open.gc_inside = Some(Block::new(lt, SiteKey::Gc, &sample, a)),
                }
            }
            // Same site, same request (or not known): one callback goes on. Another request
            // at the same site is another callback, however close in time.
            (Some(k), Some(a), Some(b)) if b.key == k && !other_request(b.req, t.req) => {
                walk.blocks.extend(open.gc_inside.take());
                b.extend(&sample, a);
            }
            (Some(k), Some(a), _) => {
                open.close(&mut walk.blocks);
                open.current = Some(Block::new(lt, k, &sample, a));
            }
            _ => open.close(&mut walk.blocks),
        }
    }
    walk.blocks.extend(open.gc_inside.take());
    walk.blocks.extend(open.current.take());
}

/// What a busy sample adds to a block.
struct BlockSample<'a> {
    t: &'a ThreadSample,
    t_us: u64,
    anchor: usize,
    /// Its wall time, ms.
    w: f64,
    /// Its wall time the thread had a CPU, ms.
    effective: f64,
    holder: Option<Holder>,
}

impl Block {
    /// Whether the block is a stall: the code held the loop at least `threshold_ms`, seen in
    /// two samples or more. One sample says the loop was busy at one instant, not for how
    /// long: when ticks are sparse (a duty cycle slowed the rate, a loaded machine) the time
    /// a lone sample covers would otherwise make any short callback a stall.
    pub(super) fn is_stall(&self, threshold_ms: f64) -> bool {
        self.effective_ms >= threshold_ms && self.times.len() >= 2
    }

    fn new(lt: &LoopThread, key: SiteKey, s: &BlockSample<'_>, activity: Activity) -> Block {
        Block {
            pid: lt.pid,
            thread: lt.name.clone(),
            key,
            stacks: vec![(s.t.stack, s.anchor)],
            tid: lt.tid,
            times: vec![s.t_us],
            activities: vec![(activity, s.w)],
            culprits: s.holder.clone().into_iter().collect(),
            waits: vec![s.t.wait],
            routes: vec![s.t.route],
            req: s.t.req,
            duration_ms: s.w,
            effective_ms: s.effective,
        }
    }

    fn extend(&mut self, s: &BlockSample<'_>, activity: Activity) {
        self.waits.push(s.t.wait);
        self.routes.push(s.t.route);
        self.req = s.t.req.or(self.req);
        self.stacks.push((s.t.stack, s.anchor));
        self.times.push(s.t_us);
        self.activities.push((activity, s.w));
        self.culprits.extend(s.holder.clone());
        self.duration_ms += s.w;
        self.effective_ms += s.effective;
    }
}

/// A run of consecutive busy loop samples at one call site.
#[derive(Debug, Clone)]
pub(super) struct Block {
    pub(super) pid: u32,
    pub(super) thread: String,
    pub(super) key: SiteKey,
    /// (stack id, anchor) of each sample.
    pub(super) stacks: Vec<(u32, usize)>,
    /// Loop thread id and the time of each sample.
    pub(super) tid: u32,
    pub(super) times: Vec<u64>,
    pub(super) activities: Vec<(Activity, f64)>,
    /// The GIL holder seen in each GIL wait of the block.
    pub(super) culprits: Vec<Holder>,
    /// What the loop thread waited on in each sample (string id), when known.
    pub(super) waits: Vec<Option<u32>>,
    /// The route the loop thread served in each sample (string id), when known.
    pub(super) routes: Vec<Option<u32>>,
    /// The request number of its last sample that had one
    /// ([`crate::recording::ThreadSample::req`]).
    pub(super) req: Option<u32>,
    pub(super) duration_ms: f64,
    /// Wall time minus the time the loop thread was runnable but had no CPU (the machine
    /// or its cgroup was out of CPU): what the code itself held the loop for.
    pub(super) effective_ms: f64,
}

/// What a block is keyed by: the call site (and API) a callback was busy at, the GIL
/// holder, a library phase, or a garbage collection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum SiteKey {
    /// Busy in a callback: app file + function (+ line for C calls), and the library API.
    Callback {
        file: String,
        function: String,
        line: Option<i32>,
        api: Option<String>,
        /// Top-level package of the called API (`asyncio`, `requests`...).
        api_package: Option<String>,
    },
    /// Waiting for the GIL held by this thread at this function.
    Gil { holder: String, function: String },
    /// Busy in a library phase (catalog entry with a `phase`) with no application frame:
    /// response serialization, a metrics hook. Keyed by the entry and the endpoint, not by
    /// the innermost frame, which moves while library code runs.
    Phase {
        entry: String,
        endpoint: Option<String>,
    },
    /// A garbage collection was running (the interpreter's `gc.collecting` flag).
    Gc,
}

/// The GIL-holder key of loop GIL waits during which no other thread held the GIL.
pub(super) const UNSEEN_HOLDER: &str = "(unseen)";

/// Computes the call-site key of a busy loop sample.
pub(super) fn site_of(
    rec: &Recording,
    catalog: &Catalog,
    stack: &[&FrameDef],
    anchor: usize,
    activity: Activity,
) -> SiteKey {
    match loops::app_frame(rec, stack, anchor) {
        Some(u) => {
            let f = stack[u];
            let api = if u > 0 {
                Some(api_name(rec, stack[u - 1]))
            } else {
                None
            };
            let api_package = if u > 0 {
                Some(package(rec, stack[u - 1]))
            } else {
                None
            };
            // A C call (no library frame) is told apart by its line; a CPU loop is not split
            // across the lines it runs.
            let line = if u == 0 && activity != Activity::OnCpu {
                Some(f.line)
            } else {
                None
            };
            SiteKey::Callback {
                file: rec.str(f.file).to_owned(),
                function: rec.str(f.name).to_owned(),
                line,
                api,
                api_package,
            }
        }
        None => {
            // No application frame. A library phase the catalog knows (serialization, a
            // metrics hook) is one site however its inner frames move.
            let modules: Vec<std::borrow::Cow<'_, str>> = (0..anchor)
                .map(|i| memo::module_of(rec, stack[i]))
                .collect();
            let frames = modules
                .iter()
                .enumerate()
                .map(|(i, m)| (i, (m.as_ref(), rec.str(stack[i].name))));
            if let Some((e, _)) = catalog.phase_of(frames) {
                return SiteKey::Phase {
                    entry: e.id.clone(),
                    endpoint: endpoint(rec, stack, anchor),
                };
            }
            // Otherwise a library or the server itself; key by the frame just above the
            // anchor (the callback) and the leaf.
            let top = stack[anchor.saturating_sub(1)];
            let leaf = stack[0];
            SiteKey::Callback {
                file: rec.str(top.file).to_owned(),
                function: rec.str(top.name).to_owned(),
                line: None,
                api: Some(api_name(rec, leaf)),
                api_package: Some(package(rec, leaf)),
            }
        }
    }
}

/// The thread other than the loop holding the GIL in a sample.
pub(super) fn gil_holder(rec: &Recording, sample: &Sample, loop_tid: u32) -> Option<Holder> {
    sample
        .threads
        .iter()
        .find(|o| o.tid != loop_tid && o.gil)
        .map(|o| Holder {
            tid: o.tid,
            name: rec.thread_name(o).unwrap_or("?").to_owned(),
            stack: o.stack,
        })
}

/// The scheduler counters `[on CPU, runnable]` (ns) of thread `tid` in sample `i`, if recorded.
fn sched_at(samples: &[&Sample], i: usize, tid: u32) -> Option<[u64; 2]> {
    samples[i]
        .threads
        .iter()
        .find(|t| t.tid == tid)
        .and_then(|t| t.sched)
}

/// The shares of the interval around sample `i` (to the next sample, or from the previous for
/// the last) that thread `tid` spent on a CPU and runnable without one, from its counters in
/// both samples; `None` when either lacks them or the interval is empty.
fn share_around(samples: &[&Sample], i: usize, tid: u32) -> Option<SchedShare> {
    let (a, b) = if i + 1 < samples.len() {
        (i, i + 1)
    } else if i > 0 {
        (i - 1, i)
    } else {
        return None;
    };
    let (x, y) = (sched_at(samples, a, tid)?, sched_at(samples, b, tid)?);
    let dt_ns = (samples[b].t_us.checked_sub(samples[a].t_us)? as f64) * 1000.0;
    (dt_ns > 0.0).then(|| SchedShare {
        running: (y[0].saturating_sub(x[0]) as f64 / dt_ns).clamp(0.0, 1.0),
        starved: (y[1].saturating_sub(x[1]) as f64 / dt_ns).clamp(0.0, 1.0),
    })
}

/// The share of the interval around sample `i` that thread `tid` (a GIL holder) was
/// runnable without a CPU ([`share_around`]); 0 when not recorded.
fn holder_starved(samples: &[&Sample], i: usize, tid: u32) -> f64 {
    share_around(samples, i, tid).map_or(0.0, |s| s.starved)
}

/// Per sample of a thread, the share of the time to the next sample (or from the previous,
/// for the last) that the thread ran and was runnable but waiting for a CPU, from its
/// scheduler counters; all running when they were not recorded.
pub(super) fn sched_fractions(samples: &[&Sample], tid: u32) -> Vec<SchedShare> {
    (0..samples.len())
        .map(|i| {
            share_around(samples, i, tid).unwrap_or(SchedShare {
                running: 1.0,
                starved: 0.0,
            })
        })
        .collect()
}

/// Shares of a sample interval a thread spent running on a CPU and runnable without one.
#[derive(Debug, Clone, Copy)]
pub(super) struct SchedShare {
    pub(super) running: f64,
    pub(super) starved: f64,
}

/// Midpoint-based durations: sample i covers from halfway to its predecessor to halfway to
/// its successor (the ends extend by half the median spacing).
pub fn coverage_ms(times: &[u64]) -> Vec<f64> {
    let n = times.len();
    if n == 0 {
        return Vec::new();
    }
    let mut gaps: Vec<u64> = times
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .collect();
    gaps.sort_unstable();
    let median = gaps.get(gaps.len() / 2).copied().unwrap_or(10_000) as f64;
    (0..n)
        .map(|i| {
            let before = if i > 0 {
                (times[i] - times[i - 1]) as f64 / 2.0
            } else {
                median / 2.0
            };
            let after = if i + 1 < n {
                (times[i + 1] - times[i]) as f64 / 2.0
            } else {
                median / 2.0
            };
            (before + after) / 1000.0
        })
        .collect()
}

/// Whether two samples' request numbers say they served different requests.
pub(super) fn other_request(a: Option<u32>, b: Option<u32>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a != b)
}
