//! The diagnosis: every event-loop stall, its call site, its kind and its fix.
//!
//! For each loop thread ([`super::loops`]), consecutive busy samples at the same call site form
//! a *block*; its duration is measured from the samples' timestamps (midpoints to the
//! neighbouring samples, so no period is assumed). Blocks of at least `threshold_ms` are
//! *stalls*. Blocks are grouped into findings by call site and catalog entry; a call site
//! whose short blocks (of two samples or more) add up to at least `min_share_pct` of the
//! window is a finding too.
//! GIL waits of the loop are attributed to the thread holding the GIL and its call site.

use super::catalog::{Catalog, Entry, MatchedBy, SiteFacts};
use super::frames::{self, Origin};
use super::loops::{self, Activity, LoopState, LoopThread};
use super::memo;
use super::pools;
use super::probes;
use crate::recording::{FrameDef, Recording, Sample};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Diagnosis options.
#[derive(Debug, Clone)]
pub struct Options {
    /// A block at least this long is a stall.
    pub threshold_ms: f64,
    /// Short blocks at one call site adding up to this share of the window are a finding.
    pub min_share_pct: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            threshold_ms: 50.0,
            min_share_pct: 2.0,
        }
    }
}

/// Where the loop was blocked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct CallSite {
    /// Absolute file name.
    pub file: String,
    /// Line.
    pub line: i32,
    /// Function qualname.
    pub function: String,
    /// Source text of the line, when recorded.
    pub source: Option<String>,
}

/// The thread holding the GIL while the loop waited for it.
#[derive(Debug, Clone, Serialize)]
pub struct Culprit {
    /// Thread name.
    pub name: String,
    /// OS thread id.
    pub tid: u32,
    /// Its call site (innermost application frame, else its innermost frame).
    pub call_site: Option<CallSite>,
    /// Share of the loop's GIL-wait samples in which this thread held the GIL, percent.
    pub share_pct: f64,
}

/// A thread the blocked loop waited for (a join, a future, a lock held elsewhere).
#[derive(Debug, Clone, Serialize)]
pub struct WaitedThread {
    /// Thread name.
    pub name: String,
    /// OS thread id.
    pub tid: u32,
    /// Its innermost application frame.
    pub call_site: CallSite,
    /// What it was doing: `on-cpu`, `waiting (socket)`...
    pub state: String,
    /// What it waited on, when known (`tcp socket to 10.0.0.5:443`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_target: Option<String>,
    /// Share of the finding's samples in which it was there, percent.
    pub share_pct: f64,
}

/// The fix, from the catalog entry.
#[derive(Debug, Clone, Serialize)]
pub struct Fix {
    /// Catalog id.
    pub id: String,
    /// One sentence.
    pub summary: String,
    /// Why it blocks.
    pub why: String,
    /// Code before.
    pub before: String,
    /// Code after.
    pub after: String,
    /// Documentation.
    pub links: Vec<String>,
}

/// One finding: a call site that blocked the loop.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Catalog id.
    pub category: String,
    /// Catalog title.
    pub title: String,
    /// `stalls` when at least one block reached the threshold, else `repeated-short-blocks`.
    pub kind: String,
    /// Majority activity: `on-cpu`, `native`, `waiting`, `gil-wait`.
    pub state: String,
    /// Majority wait reason, when waiting.
    pub wait_reason: Option<String>,
    /// Share of the blocked time per activity (`waiting:socket`...), percent.
    pub state_mix: BTreeMap<String, f64>,
    /// The application line (or, without application frames, the innermost frame).
    pub call_site: Option<CallSite>,
    /// The library API the application called, or the callee named on the source line.
    pub blocking_call: Option<String>,
    /// What the loop waited on, for a waiting finding, when the syscall's descriptor was
    /// known (`tcp socket to 127.0.0.1:5432`, `pipe from child process 77 (convert ...)`):
    /// the most frequent by time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_target: Option<String>,
    /// For a loop waiting on a join, future or lock: the other threads of the process busy in
    /// application code during the finding's samples, most frequent first (at most three),
    /// with what they did and waited on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waited_for: Vec<WaitedThread>,
    /// How the catalog entry was chosen: `frame`, `source` or `fallback`.
    pub matched_by: String,
    /// The endpoint (FastAPI path function, or the generator's enclosing function).
    pub endpoint: Option<String>,
    /// The HTTP route the loop was serving during the finding's samples, by time
    /// (`GET /orders/{order_id}`, `WS /feed`, `lifespan`): read from the ASGI scope (recordings
    /// of version 4); absent when no sample had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The process with the most blocked time at this site.
    pub pid: u32,
    /// Every process where it happened.
    pub pids: Vec<u32>,
    /// The loop thread's name.
    pub thread: String,
    /// For GIL contention: the thread that held the GIL.
    pub culprit_thread: Option<Culprit>,
    /// Blocks of at least the threshold.
    pub stalls: usize,
    /// Total time of those stalls, ms.
    pub blocked_ms: f64,
    /// Longest stall (or block), ms.
    pub max_stall_ms: f64,
    /// Median stall (or block), ms.
    pub p50_stall_ms: f64,
    /// 95th percentile stall (or block), ms.
    pub p95_stall_ms: f64,
    /// Blocks shorter than the threshold.
    pub short_blocks: usize,
    /// Their total time, ms.
    pub short_blocked_ms: f64,
    /// Share of the loop window blocked here (stalls + short blocks), percent.
    pub share_pct: f64,
    /// The representative stack, innermost first, as `function (file:line)`.
    pub stack: Vec<String>,
    /// The fix.
    pub fix: Fix,
}

/// Verdict for the window.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// `healthy`, `loop-blocked`, `cpu-bound-loop`, `gil-contention`, ... or
    /// [`INCONCLUSIVE`] (see the gates' `VERDICTS`).
    pub kind: String,
    /// One plain sentence.
    pub summary: String,
    /// Time the loop spent in stalls, percent of the window.
    pub loop_blocked_pct: f64,
    /// Time the loop spent in any callback, percent of the window.
    pub loop_busy_pct: f64,
    /// Time the loop waited for the GIL, percent of the window.
    pub gil_wait_pct: f64,
    /// Time the loop's thread was runnable but got no CPU while running a callback (a busy
    /// machine, or CPU throttling of its cgroup), percent of the window.
    pub cpu_starved_pct: f64,
    /// CPU used by the loop processes, percent of one core (averaged over processes).
    pub process_cpu_pct: f64,
    /// Longest stall, ms.
    pub worst_stall_ms: f64,
    /// The window showed no request being served (an idle server): its figures say nothing
    /// about a slowdown. Present only when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_traffic: bool,
}

/// The verdict kind of a recording that cannot be trusted (see [`super::quality`]).
pub const INCONCLUSIVE: &str = "inconclusive";

/// One thread's time split.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadShares {
    /// Process id.
    pub pid: u32,
    /// OS thread id.
    pub tid: u32,
    /// Name.
    pub name: String,
    /// True for event-loop threads.
    pub event_loop: bool,
    /// Samples.
    pub samples: usize,
    /// Percent on CPU (GIL held).
    pub on_cpu_pct: f64,
    /// Percent in native code, GIL released.
    pub native_pct: f64,
    /// Percent waiting, per reason.
    pub waiting_pct: BTreeMap<String, f64>,
    /// Percent waiting for the GIL.
    pub gil_wait_pct: f64,
    /// Percent idle (event loops only: waiting for events).
    pub idle_pct: f64,
}

/// The whole diagnosis.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    /// The verdict.
    pub verdict: Verdict,
    /// How far the recording can be trusted ([`super::quality`]).
    pub quality: super::quality::Quality,
    /// Findings, most blocked time first.
    pub findings: Vec<Finding>,
    /// Event-loop threads found.
    pub loops: Vec<LoopThread>,
    /// Every thread's time split.
    pub threads: Vec<ThreadShares>,
    /// Loop window analysed (sum over loop threads), seconds.
    pub window_s: f64,
    /// The stall threshold used, ms.
    pub threshold_ms: f64,
    /// The repeated-short-block share used, percent.
    pub min_share_pct: f64,
    /// (pid, tid, t_us) of every loop-thread sample inside a reported stall.
    #[serde(skip)]
    pub stall_samples: HashSet<(u32, u32, u64)>,
}

/// Time per activity label of one thread: (name, is an event loop, label → weight, total).
type ShareAcc = (String, bool, HashMap<String, f64>, f64);

/// A run of consecutive busy loop samples at one call site.
#[derive(Debug, Clone)]
struct Block {
    pid: u32,
    thread: String,
    key: SiteKey,
    /// (stack id, anchor) of each sample.
    stacks: Vec<(u32, usize)>,
    /// Loop thread id and the time of each sample.
    tid: u32,
    times: Vec<u64>,
    activities: Vec<(Activity, f64)>,
    /// GIL holders during GIL waits: (tid, name, stack).
    culprits: Vec<(u32, String, u32)>,
    /// What the loop thread waited on in each sample (string id), when known.
    waits: Vec<Option<u32>>,
    /// The route the loop thread served in each sample (string id), when known.
    routes: Vec<Option<u32>>,
    /// The request number of its last sample that had one
    /// ([`crate::recording::ThreadSample::req`]).
    req: Option<u32>,
    duration_ms: f64,
    /// Wall time minus the time the loop thread was runnable but had no CPU (the machine
    /// or its cgroup was out of CPU): what the code itself held the loop for.
    effective_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum SiteKey {
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

fn frame_label(rec: &Recording, f: &FrameDef) -> String {
    format!(
        "{} ({}:{})",
        rec.str(f.name),
        frames::short_file(rec.str(f.file)),
        f.line
    )
}

/// The top-level package of a frame's module (`asyncio` for `asyncio.subprocess`).
fn package(rec: &Recording, f: &FrameDef) -> String {
    let module = memo::module_of(rec, f);
    module.split('.').next().unwrap_or(&module).to_owned()
}

/// The share of a loop's GIL waits with a holder in sight that the two most frequent holder
/// threads must account for in a `gil-contention` finding.
const MIN_GIL_TOP2_SHARE: f64 = 0.6;

/// Without a stall, the share of its own samples in which the top holder must hold the GIL
/// (a thread that keeps it, like a CPU-bound cruncher).
const MIN_GIL_KEEPER_SHARE: f64 = 0.5;

/// The share of thread `tid`'s samples (in process `pid`) in which it held the GIL.
fn gil_share(rec: &Recording, pid: u32, tid: u32) -> f64 {
    let (mut n, mut held) = (0usize, 0usize);
    for t in rec
        .samples
        .iter()
        .filter(|s| s.pid == pid)
        .flat_map(|s| s.threads.iter().filter(|t| t.tid == tid))
    {
        n += 1;
        held += usize::from(t.gil);
    }
    if n == 0 {
        0.0
    } else {
        held as f64 / n as f64
    }
}

/// The GIL-holder key of loop GIL waits during which no other thread held the GIL.
const UNSEEN_HOLDER: &str = "(unseen)";

/// A short block must hold the loop at least this long (CPU-starvation discounted) to count
/// towards a repeated-short-blocks finding.
pub const MIN_SHORT_BLOCK_MS: f64 = 15.0;

/// Packages whose coroutines the application awaits: blocking inside them is the cost of
/// the correct async API, not something the application can turn async.
const ASYNC_FRAMEWORKS: &[&str] = &[
    "asyncio",
    "anyio",
    "uvloop",
    "starlette",
    "fastapi",
    "uvicorn",
];

/// The public name of a library frame: `Class.method`, or `package.function`.
fn api_name(rec: &Recording, f: &FrameDef) -> String {
    let name = rec.str(f.name);
    if name.contains('.') {
        name.to_owned()
    } else {
        let module = memo::module_of(rec, f);
        let package = module.split('.').next().unwrap_or(&module).to_owned();
        format!("{package}.{name}")
    }
}

/// The first call on a source line (`time.sleep` in `    time.sleep(ms / 1000)`).
fn called_on_line(source: &str) -> Option<String> {
    const KEYWORDS: &[&str] = &[
        "if", "elif", "while", "for", "return", "await", "with", "and", "or", "not", "in", "yield",
        "assert", "print", "lambda", "del", "raise",
    ];
    let bytes = source.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.')
            {
                i += 1;
            }
            let word = &source[start..i];
            let mut j = i;
            while j < bytes.len() && bytes[j] == b' ' {
                j += 1;
            }
            if j < bytes.len() && bytes[j] == b'(' && !KEYWORDS.contains(&word) {
                return Some(word.trim_matches('.').to_owned());
            }
        } else if c == b'"' || c == b'\'' || c == b'#' {
            // Stop at strings and comments: calls inside them are not calls.
            if c == b'#' {
                return None;
            }
            let quote = c;
            i += 1;
            while i < bytes.len() && bytes[i] != quote {
                i += 1;
            }
            i += 1;
        } else {
            i += 1;
        }
    }
    None
}

/// Computes the call-site key of a busy loop sample.
fn site_of(
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

fn gil_holder(rec: &Recording, sample: &Sample, loop_tid: u32) -> Option<(u32, String, u32)> {
    sample
        .threads
        .iter()
        .find(|o| o.tid != loop_tid && o.gil)
        .map(|o| (o.tid, rec.thread_name(o).unwrap_or("?").to_owned(), o.stack))
}

fn user_or_leaf(rec: &Recording, stack: u32) -> Option<CallSite> {
    let frames: Vec<&FrameDef> = rec.stack(stack).collect();
    let f = frames
        .iter()
        .find(|f| frames::origin(rec.str(f.file)) == Origin::App)
        .or(frames.first())?;
    Some(CallSite {
        file: rec.str(f.file).to_owned(),
        line: f.line,
        function: rec.str(f.name).to_owned(),
        source: rec.source_line(f).map(|s| s.trim().to_owned()),
    })
}

/// Per sample of a thread, the share of the time to the next sample (or from the previous,
/// for the last) that the thread was runnable but waiting for a CPU, from its scheduler
/// counters; 0 when they were not recorded.
fn sched_fractions(samples: &[&Sample], tid: u32) -> Vec<SchedShare> {
    let sched: Vec<Option<[u64; 2]>> = samples
        .iter()
        .map(|s| {
            s.threads
                .iter()
                .find(|t| t.tid == tid)
                .and_then(|t| t.sched)
        })
        .collect();
    let frac = |i: usize, j: usize| -> Option<SchedShare> {
        let (a, b) = (sched[i]?, sched[j]?);
        let dt_ns = (samples[j].t_us.checked_sub(samples[i].t_us)? as f64) * 1000.0;
        (dt_ns > 0.0).then(|| SchedShare {
            running: (b[0].saturating_sub(a[0]) as f64 / dt_ns).clamp(0.0, 1.0),
            starved: (b[1].saturating_sub(a[1]) as f64 / dt_ns).clamp(0.0, 1.0),
        })
    };
    (0..samples.len())
        .map(|i| {
            if i + 1 < samples.len() {
                frac(i, i + 1)
            } else if i > 0 {
                frac(i - 1, i)
            } else {
                None
            }
            .unwrap_or(SchedShare {
                running: 1.0,
                starved: 0.0,
            })
        })
        .collect()
}

/// Shares of a sample interval a thread spent running on a CPU and runnable without one.
#[derive(Debug, Clone, Copy)]
struct SchedShare {
    running: f64,
    starved: f64,
}

/// Midpoint-based durations: sample i covers from halfway to its predecessor to halfway to
/// its successor (the ends extend by half the median spacing).
pub(crate) fn coverage_ms(times: &[u64]) -> Vec<f64> {
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

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn round1(x: f64) -> f64 {
    // `+ 0.0` turns the -0.0 that an empty float sum yields into 0.0.
    (x * 10.0).round() / 10.0 + 0.0
}

/// Diagnoses a recording.
pub fn diagnose(rec: &Recording, catalog: &Catalog, opts: &Options) -> Diagnosis {
    let loops_found = loops::find_loop_threads(rec);
    let mut blocks: Vec<Block> = Vec::new();
    let mut window_ms = 0.0;
    let mut busy_ms = 0.0;
    let mut gil_ms = 0.0;
    let mut starved_ms = 0.0;
    let mut window_by_pid: HashMap<u32, f64> = HashMap::new();
    let mut shares: BTreeMap<(u32, u32), ShareAcc> = BTreeMap::new();

    for lt in &loops_found {
        let samples = loops::samples_of(rec, lt);
        let times: Vec<u64> = samples.iter().map(|s| s.t_us).collect();
        let cover = coverage_ms(&times);
        let sched = sched_fractions(&samples, lt.tid);
        let mut current: Option<Block> = None;
        // A garbage collection running inside the current callback's block.
        let mut gc_inside: Option<Block> = None;
        for ((s, w), sched) in samples.iter().zip(&cover).zip(&sched) {
            let t = s.threads.iter().find(|t| t.tid == lt.tid).unwrap();
            let state = loops::classify(rec, lt, s, t);
            let stack: Vec<&FrameDef> = rec.stack(t.stack).collect();
            let (key, activity, anchor, culprit) = match state {
                LoopState::NotLoop => {
                    blocks.extend(current.take());
                    blocks.extend(gc_inside.take());
                    continue;
                }
                LoopState::Idle | LoopState::Overhead => (None, None, 0, None),
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
                            .map(|h| h.1.clone())
                            .unwrap_or_else(|| UNSEEN_HOLDER.into()),
                        function: holder
                            .as_ref()
                            .and_then(|h| user_or_leaf(rec, h.2))
                            .map(|c| c.function)
                            .unwrap_or_default(),
                    };
                    (Some(key), Some(Activity::GilWait), stack.len(), holder)
                }
                LoopState::Busy { activity, anchor } => {
                    let site = site_of(rec, catalog, &stack, anchor, activity);
                    (Some(site), Some(activity), anchor, None)
                }
            };
            // A garbage collection holds the GIL: the loop either runs it (on CPU) or waits
            // for the thread that does. Such samples are the collector's, never the code that
            // happened to allocate. (Native code without the GIL is not held by it.)
            let collecting = s.gc.is_some_and(|g| g.collecting)
                && matches!(activity, Some(Activity::OnCpu | Activity::GilWait));
            let key = if collecting { Some(SiteKey::Gc) } else { key };
            window_ms += w;
            *window_by_pid.entry(lt.pid).or_default() += w;
            let entry = shares
                .entry((lt.pid, lt.tid))
                .or_insert_with(|| (lt.name.clone(), true, HashMap::new(), 0.0));
            entry.3 += w;
            let label = match activity {
                None => "idle".to_owned(),
                Some(Activity::Waiting(r)) => format!("waiting:{}", r.name()),
                Some(a) => a.name().to_owned(),
            };
            *entry.2.entry(label).or_default() += w;
            // Running (or runnable) code: discount the time it waited for a CPU.
            let effective = match activity {
                // Code running holds the loop only while the thread is on a CPU: time runnable
                // without a CPU, and time stopped by loopprof's own ptrace stop (longer when
                // the sampler itself is short of CPU), are not the code's.
                Some(Activity::OnCpu) | Some(Activity::Native) => {
                    starved_ms += w * sched.starved;
                    w * sched.running
                }
                _ => *w,
            };
            if let Some(a) = activity {
                busy_ms += w;
                if a == Activity::GilWait {
                    gil_ms += w;
                }
            }
            let new_block = |key: SiteKey| Block {
                pid: lt.pid,
                thread: lt.name.clone(),
                key,
                stacks: vec![(t.stack, anchor)],
                tid: lt.tid,
                times: vec![s.t_us],
                activities: vec![(activity.unwrap(), *w)],
                culprits: culprit.clone().into_iter().collect(),
                waits: vec![t.wait],
                routes: vec![t.route],
                req: t.req,
                duration_ms: *w,
                effective_ms: effective,
            };
            let extend = |b: &mut Block| {
                b.waits.push(t.wait);
                b.routes.push(t.route);
                b.req = t.req.or(b.req);
                b.stacks.push((t.stack, anchor));
                b.times.push(s.t_us);
                b.activities.push((activity.unwrap(), *w));
                b.culprits.extend(culprit.clone());
                b.duration_ms += w;
                b.effective_ms += effective;
            };
            match (key, current.as_mut()) {
                // A collection inside a callback: its own block, and the callback's block goes
                // on after it (each cause keeps its own time; neither hides the other).
                (Some(SiteKey::Gc), Some(b)) if b.key != SiteKey::Gc => match gc_inside.as_mut() {
                    Some(g) => extend(g),
                    None => gc_inside = Some(new_block(SiteKey::Gc)),
                },
                // Same site, same request (or not known): one callback goes on. Another
                // request at the same site is another callback, however close in time.
                (Some(k), Some(b)) if b.key == k && !other_request(b.req, t.req) => {
                    blocks.extend(gc_inside.take());
                    extend(b);
                }
                (Some(k), _) => {
                    blocks.extend(current.take());
                    blocks.extend(gc_inside.take());
                    current = Some(new_block(k));
                }
                (None, _) => {
                    blocks.extend(current.take());
                    blocks.extend(gc_inside.take());
                }
            }
        }
        blocks.extend(gc_inside.take());
        if let Some(b) = current.take() {
            blocks.push(b);
        }
    }

    // Non-loop threads: activity shares.
    let loop_ids: Vec<(u32, u32)> = loops_found.iter().map(|l| (l.pid, l.tid)).collect();
    for s in &rec.samples {
        for t in &s.threads {
            if loop_ids.contains(&(s.pid, t.tid)) {
                continue;
            }
            let entry = shares.entry((s.pid, t.tid)).or_insert_with(|| {
                (
                    rec.thread_name(t).unwrap_or("").to_owned(),
                    false,
                    HashMap::new(),
                    0.0,
                )
            });
            if let Some(n) = rec.thread_name(t) {
                entry.0 = n.to_owned();
            }
            let a = loops::activity(rec, s, t);
            let label = match a {
                Activity::Waiting(r) => format!("waiting:{}", r.name()),
                a => a.name().to_owned(),
            };
            *entry.2.entry(label).or_default() += 1.0;
            entry.3 += 1.0;
        }
    }

    let (mut findings, reported) = build_findings(rec, catalog, opts, &blocks, &window_by_pid);
    // After the loop's own findings: a saturated worker pool does not block the loop.
    findings.extend(pool_finding(rec, catalog, opts));
    // The loop samples inside reported stalls (for the "event loop blocked" flame graph).
    let stall_samples: HashSet<(u32, u32, u64)> = blocks
        .iter()
        .filter(|b| {
            b.effective_ms >= opts.threshold_ms
                && !matches!(b.key, SiteKey::Gil { .. })
                && reported.contains(&b.key)
        })
        .flat_map(|b| b.times.iter().map(move |t| (b.pid, b.tid, *t)))
        .collect();
    // Blocked share and worst stall count only what was reported as a finding.
    let blocking = findings
        .iter()
        .filter(|f| f.category != "gil-contention" && f.category != pools::CATEGORY);
    let stalled_ms: f64 = blocking.clone().map(|f| f.blocked_ms).sum::<f64>() + 0.0;
    let worst = blocking
        .filter(|f| f.stalls > 0)
        .map(|f| f.max_stall_ms)
        .fold(0.0, f64::max);
    let cpu = process_cpu_pct(rec, &loops_found);
    let pct = |x: f64| {
        if window_ms > 0.0 {
            100.0 * x / window_ms
        } else {
            0.0
        }
    };
    let verdict = verdict(
        &findings,
        Measures {
            blocked_pct: pct(stalled_ms),
            busy_pct: pct(busy_ms),
            gil_pct: pct(gil_ms),
            starved_pct: pct(starved_ms),
            cpu_pct: cpu,
            worst_ms: worst,
            traffic: served_anything(rec, &loops_found, pct(busy_ms), cpu),
        },
        &loops_found,
        opts.threshold_ms,
    );

    let threads = shares
        .into_iter()
        .map(|((pid, tid), (name, event_loop, parts, total))| {
            let p =
                |k: &str| round1(100.0 * parts.get(k).copied().unwrap_or(0.0) / total.max(1e-9));
            let samples = rec
                .samples
                .iter()
                .filter(|s| s.pid == pid && s.threads.iter().any(|t| t.tid == tid))
                .count();
            ThreadShares {
                pid,
                tid,
                name,
                event_loop,
                samples,
                on_cpu_pct: p("on-cpu"),
                native_pct: p("native"),
                waiting_pct: parts
                    .keys()
                    .filter_map(|k| k.strip_prefix("waiting:"))
                    .map(|r| (r.to_owned(), p(&format!("waiting:{r}"))))
                    .collect(),
                gil_wait_pct: p("gil-wait"),
                idle_pct: p("idle"),
            }
        })
        .collect();

    let quality = super::quality::quality(rec);
    let mut verdict = verdict;
    if !quality.trusted {
        // Nothing measured on a recording that is mostly failures (or of a frozen target)
        // can carry a verdict; say why instead.
        // Untrusted recordings list a fatal problem first.
        let why = quality.problems.first().map(String::as_str).unwrap_or("?");
        verdict.summary = format!(
            "This recording cannot be trusted: {}. Its figures are shown but no verdict is drawn from them; record again{}.",
            why,
            if quality.frozen_s > 0.0 { " once the target runs" } else { " (see `loopprof inspect` for the failed ticks)" }
        );
        verdict.kind = INCONCLUSIVE.into();
    }
    Diagnosis {
        quality,
        verdict,
        findings,
        loops: loops_found,
        threads,
        window_s: window_ms / 1000.0,
        threshold_ms: opts.threshold_ms,
        min_share_pct: opts.min_share_pct,
        stall_samples,
    }
}

fn process_cpu_pct(rec: &Recording, loops_found: &[LoopThread]) -> f64 {
    let mut pids: Vec<u32> = loops_found.iter().map(|l| l.pid).collect();
    pids.dedup();
    let mut total = 0.0;
    let mut n = 0.0;
    for pid in pids {
        let s: Vec<&Sample> = rec.samples.iter().filter(|s| s.pid == pid).collect();
        if let (Some(a), Some(b)) = (s.first(), s.last()) {
            if b.t_us > a.t_us {
                total +=
                    100.0 * (b.cpu_us.saturating_sub(a.cpu_us)) as f64 / (b.t_us - a.t_us) as f64;
                n += 1.0;
            }
        }
    }
    if n > 0.0 {
        round1(total / n)
    } else {
        0.0
    }
}

fn build_findings(
    rec: &Recording,
    catalog: &Catalog,
    opts: &Options,
    blocks: &[Block],
    window_by_pid: &HashMap<u32, f64>,
) -> (Vec<Finding>, HashSet<SiteKey>) {
    let mut reported_keys = HashSet::new();
    // Group blocks by call site key (across processes: workers run the same code).
    let mut groups: BTreeMap<&SiteKey, Vec<&Block>> = BTreeMap::new();
    for b in blocks {
        groups.entry(&b.key).or_default().push(b);
    }
    let mut out = Vec::new();
    for (key, group) in groups {
        // Whether a block is a stall is decided on the time the code held the loop; the
        // figures reported are wall time, what the users of the server experienced.
        let stall_durations: Vec<f64> = group
            .iter()
            .filter(|b| b.effective_ms >= opts.threshold_ms)
            .map(|b| b.duration_ms)
            .collect();
        // A short block counts only when it spans two or more consecutive samples (one busy
        // sample is what any short callback of a loaded, healthy server looks like) and held
        // the loop for at least MIN_SHORT_BLOCK_MS itself: a few ms of ordinary async work
        // stretched over two samples is sampling noise, not a block.
        let short: Vec<f64> = group
            .iter()
            .filter(|b| {
                b.effective_ms < opts.threshold_ms
                    && b.effective_ms >= MIN_SHORT_BLOCK_MS
                    && b.stacks.len() >= 2
            })
            .map(|b| b.effective_ms)
            .collect();
        let blocked: f64 = stall_durations.iter().sum();
        let short_total: f64 = short.iter().sum();
        // The share is of the loop time of the processes where it happened: one worker of
        // several can be badly blocked while the others are fine.
        let mut pids: Vec<u32> = group.iter().map(|b| b.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        let window_ms: f64 = pids.iter().filter_map(|p| window_by_pid.get(p)).sum();
        let share = if window_ms > 0.0 {
            100.0 * (blocked + short_total) / window_ms
        } else {
            0.0
        };
        let is_gil = matches!(key, SiteKey::Gil { .. });
        // Repeated short blocks must be in application code: short callbacks of the server's
        // or framework's own code (writing responses under heavy load) are normal.
        let (app_site, awaited_async_api) = match key {
            SiteKey::Callback {
                file, api_package, ..
            } => (
                frames::origin(file) == Origin::App,
                api_package
                    .as_deref()
                    .is_some_and(|p| ASYNC_FRAMEWORKS.contains(&p)),
            ),
            SiteKey::Gil { .. } => (true, false),
            SiteKey::Phase { .. } => (false, false),
            // Judged like application code: stalls, or repeated short pauses.
            SiteKey::Gc => (true, false),
        };
        let is_gc = matches!(key, SiteKey::Gc);
        let is_phase = matches!(key, SiteKey::Phase { .. });
        // Activity mix, weighted by time (needed for the rules below and the finding).
        let mut mix: HashMap<Activity, f64> = HashMap::new();
        for b in &group {
            for (a, w) in &b.activities {
                *mix.entry(*a).or_default() += w;
            }
        }
        let waiting = mix
            .iter()
            .max_by(|a, b| a.1.partial_cmp(b.1).unwrap().then(b.0.cmp(a.0)))
            .is_some_and(|(a, _)| matches!(a, Activity::Waiting(_)));
        // Without an application frame, consecutive busy samples can be different short
        // callbacks of a saturated loop at the same server code (writing responses): only a
        // continuous wait in the kernel is evidence of one long block there.
        let reported = if is_gil {
            // Only a thread seen holding the GIL is contention: GIL waits with no holder in
            // sight are hand-over latency between threads doing I/O (many `def` routes
            // calling an upstream), which no code change at one site removes.
            let seen = !matches!(key, SiteKey::Gil { holder, .. } if holder == UNSEEN_HOLDER);
            // Nor is the GIL passed around among many threads of one name (forty AnyIO
            // workers each parsing a response): contention is one or two threads keeping
            // it, so the two most frequent holders must account for most of the waits.
            let mut by_tid: HashMap<u32, usize> = HashMap::new();
            for c in group.iter().flat_map(|b| &b.culprits) {
                *by_tid.entry(c.0).or_default() += 1;
            }
            let mut counts: Vec<(usize, u32)> = by_tid.iter().map(|(t, n)| (*n, *t)).collect();
            counts.sort_unstable_by(|a, b| b.cmp(a));
            let observed: usize = counts.iter().map(|c| c.0).sum();
            let top2: usize = counts.iter().take(2).map(|c| c.0).sum();
            let concentrated = top2 as f64 >= MIN_GIL_TOP2_SHARE * observed as f64;
            // And either the loop stalled on it, or the holder keeps the GIL most of the
            // recording (a CPU-bound thread), not briefly per request (a worker thread
            // serializing a response delays the loop a few milliseconds at a time).
            let keeps = counts.first().is_some_and(|&(_, tid)| {
                group
                    .iter()
                    .find(|b| b.culprits.iter().any(|c| c.0 == tid))
                    .is_some_and(|b| gil_share(rec, b.pid, tid) >= MIN_GIL_KEEPER_SHARE)
            });
            seen && concentrated
                && (!stall_durations.is_empty() || keeps)
                && share >= opts.min_share_pct
        } else if is_phase {
            // One library phase of one endpoint held the loop for the whole block: its inner
            // frames moved, its phase did not. Short blocks are left out, as for any
            // library site (a saturated loop serializing many small responses).
            !stall_durations.is_empty()
        } else if !app_site {
            !stall_durations.is_empty() && waiting
        } else if awaited_async_api {
            // The application awaited the async API (asyncio.create_subprocess_exec forking,
            // an anyio primitive): what blocks is the library's own cost, and the catalog's
            // advice (use the async API) is already followed.
            false
        } else {
            !stall_durations.is_empty() || (short.len() >= 2 && share >= opts.min_share_pct)
        };
        if !reported {
            continue;
        }
        let total_w: f64 = mix.values().sum();
        let (major, _) = mix
            .iter()
            .max_by(|a, b| a.1.partial_cmp(b.1).unwrap().then(b.0.cmp(a.0)))
            .map(|(a, w)| (*a, *w))
            .unwrap();
        let mut state_mix = BTreeMap::new();
        for (a, w) in &mix {
            let label = match a {
                Activity::Waiting(r) => format!("waiting:{}", r.name()),
                a => a.name().to_owned(),
            };
            *state_mix.entry(label).or_insert(0.0) += round1(100.0 * w / total_w);
        }
        // Representative stack: the most frequent stack weighted by time.
        let mut stack_w: HashMap<(u32, usize), f64> = HashMap::new();
        for b in &group {
            for (s, (_, w)) in b.stacks.iter().zip(&b.activities) {
                *stack_w.entry(*s).or_default() += w;
            }
        }
        let (&(stack_id, anchor), _) = stack_w
            .iter()
            .max_by(|a, b| a.1.partial_cmp(b.1).unwrap().then(b.0.cmp(a.0)))
            .unwrap();
        let stack: Vec<&FrameDef> = rec.stack(stack_id).collect();

        // Per-process blocked time.
        let mut by_pid: BTreeMap<u32, f64> = BTreeMap::new();
        for b in &group {
            *by_pid.entry(b.pid).or_default() += b.duration_ms;
        }
        let pid = by_pid
            .iter()
            .max_by(|a, b| a.1.partial_cmp(b.1).unwrap())
            .map(|(p, _)| *p)
            .unwrap();

        let (entry, matched_by, call_site, blocking_call, culprit) = if is_gc {
            let Some(e) = catalog.get(GC_CATEGORY) else {
                continue;
            };
            let mut gc_times: HashMap<u32, Vec<(u64, [u64; 3])>> = HashMap::new();
            for s in &rec.samples {
                if let Some(g) = s.gc {
                    gc_times
                        .entry(s.pid)
                        .or_default()
                        .push((s.t_us, g.collections));
                }
            }
            let generation = group
                .iter()
                .filter_map(|b| gc_generation(gc_times.get(&b.pid)?, b))
                .max();
            (
                e,
                MatchedBy::Fallback,
                None,
                Some(match generation {
                    Some(g) => format!("garbage collection (generation {g})"),
                    None => "garbage collection".to_owned(),
                }),
                None,
            )
        } else if is_gil {
            let mut holders: HashMap<(u32, String, u32), usize> = HashMap::new();
            let mut n = 0usize;
            for b in &group {
                for c in &b.culprits {
                    *holders.entry(c.clone()).or_default() += 1;
                    n += 1;
                }
            }
            let top = holders
                .into_iter()
                .max_by_key(|(k, v)| (*v, std::cmp::Reverse(k.0)));
            let culprit = top.map(|((tid, name, st), count)| Culprit {
                name,
                tid,
                call_site: user_or_leaf(rec, st),
                share_pct: round1(100.0 * count as f64 / n.max(1) as f64),
            });
            let facts = SiteFacts {
                callees: Vec::new(),
                source: None,
                activity: "gil-wait",
                wait_reason: None,
            };
            let (e, m) = catalog.classify(&facts);
            (
                e,
                m,
                culprit.as_ref().and_then(|c| c.call_site.clone()),
                None,
                culprit,
            )
        } else {
            let a = attribute(rec, catalog, &stack, anchor.min(stack.len()), major);
            // In a library phase the call that dominates is the innermost library call,
            // which moves between samples: name the one that took the most time.
            let blocking_call = if is_phase {
                dominant_leaf(rec, &group).or(a.blocking_call)
            } else {
                a.blocking_call
            };
            (a.entry, a.matched_by, a.call_site, blocking_call, None)
        };
        let wait_target = if matches!(major, Activity::Waiting(_)) {
            wait_target_of(rec, &group)
        } else {
            None
        };
        // A pipe whose other end a child process holds: the loop waits for that child's
        // output (`Popen(...).stdout.readline()`), whatever the syscall looked like.
        let entry = match (&wait_target, entry.id.as_str()) {
            (Some(w), "unknown-blocking" | "thread-sync-wait")
                if w.starts_with(CHILD_PIPE_PREFIX) =>
            {
                catalog.get(SUBPROCESS_CATEGORY).unwrap_or(entry)
            }
            _ => entry,
        };
        let waited_for = if major == Activity::Waiting(loops::WaitReason::Lock) {
            waited_threads(rec, &group)
        } else {
            Vec::new()
        };
        let mut fix = fix_of(entry);
        if waits_for_itself(&waited_for, blocking_call.as_deref(), major) {
            fix.summary = format!("{SELF_WAIT_NOTE} {}", fix.summary);
        }
        let mut durations = if stall_durations.is_empty() {
            short.clone()
        } else {
            stall_durations.clone()
        };
        durations.sort_by(|a, b| a.partial_cmp(b).unwrap());
        reported_keys.insert(key.clone());
        let endpoint_fn = if is_gil {
            None
        } else {
            endpoint(rec, &stack, anchor.min(stack.len()))
        };
        let route = route_of(rec, &group).or_else(|| {
            endpoint_fn
                .as_deref()
                .and_then(|e| route_by_endpoint(rec, e))
        });
        out.push(Finding {
            category: entry.id.clone(),
            title: entry.title.clone(),
            kind: if stall_durations.is_empty() {
                "repeated-short-blocks".into()
            } else {
                "stalls".into()
            },
            state: major.name().into(),
            wait_reason: major.wait_reason().map(|r| r.name().to_owned()),
            state_mix,
            call_site,
            blocking_call,
            wait_target,
            matched_by: match matched_by {
                MatchedBy::Frame(_) => "frame",
                MatchedBy::Source => "source",
                MatchedBy::Fallback => "fallback",
            }
            .into(),
            endpoint: endpoint_fn,
            route,
            pid,
            pids: by_pid.keys().copied().collect(),
            thread: group[0].thread.clone(),
            culprit_thread: culprit,
            stalls: stall_durations.len(),
            blocked_ms: round1(blocked),
            max_stall_ms: round1(durations.last().copied().unwrap_or(0.0)),
            p50_stall_ms: round1(percentile(&durations, 0.5)),
            p95_stall_ms: round1(percentile(&durations, 0.95)),
            short_blocks: short.len(),
            short_blocked_ms: round1(short_total),
            share_pct: round1(share),
            stack: stack.iter().map(|f| frame_label(rec, f)).collect(),
            fix,
            waited_for,
        });
    }
    out.sort_by(|a, b| {
        (b.blocked_ms + b.short_blocked_ms)
            .partial_cmp(&(a.blocked_ms + a.short_blocked_ms))
            .unwrap()
    });
    (out, reported_keys)
}

/// The finding for exhausted AnyIO worker-thread pools ([`pools`]), all processes together:
/// reported when the pools were saturated at least `threshold_ms` in all and for at least
/// `min_share_pct` of the processes' time. Its figures are saturation, not loop stalls:
/// `stalls` counts saturated episodes, `blocked_ms` their time.
fn pool_finding(rec: &Recording, catalog: &Catalog, opts: &Options) -> Option<Finding> {
    let found = pools::find(rec);
    let sats: Vec<&pools::Saturation> = found.iter().collect();
    let saturated: f64 = sats.iter().map(|s| s.saturated_ms()).sum();
    let window: f64 = sats.iter().map(|s| s.window_ms).sum();
    let share = if window > 0.0 {
        100.0 * saturated / window
    } else {
        0.0
    };
    if saturated < opts.threshold_ms || share < opts.min_share_pct {
        return None;
    }
    let entry = catalog.get(pools::CATEGORY)?;
    let (stack_id, anchor, activity) = pools::representative(rec, &sats)?;
    let stack: Vec<&FrameDef> = rec.stack(stack_id).collect();
    // What the workers do is classified like a loop callback (the worker's frame is the
    // anchor): the catalog names the slow call and its own fix.
    let inner = attribute(rec, catalog, &stack, anchor, activity);
    let mut durations: Vec<f64> = sats
        .iter()
        .flat_map(|s| s.episodes.iter().map(|e| e.duration_ms))
        .collect();
    durations.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut mix: BTreeMap<String, f64> = BTreeMap::new();
    let total_w: f64 = sats.iter().flat_map(|s| &s.busy).map(|b| b.3).sum();
    for (_, _, a, w) in sats.iter().flat_map(|s| &s.busy) {
        let label = match a {
            Activity::Waiting(r) => format!("waiting:{}", r.name()),
            a => a.name().to_owned(),
        };
        *mix.entry(label).or_default() += 100.0 * w / total_w.max(1e-9);
    }
    for v in mix.values_mut() {
        *v = round1(*v);
    }
    let pid = sats
        .iter()
        .max_by(|a, b| a.saturated_ms().partial_cmp(&b.saturated_ms()).unwrap())?
        .pid;
    let workers = sats.iter().map(|s| s.max_busy).max().unwrap_or(0);
    let mut fix = fix_of(entry);
    if inner.entry.id != "unknown-blocking" {
        fix.summary = format!(
            "{} Here the workers wait in {} ({}).",
            fix.summary,
            inner.blocking_call.as_deref().unwrap_or("the call shown"),
            inner.entry.id,
        );
    }
    if activity == Activity::Waiting(loops::WaitReason::Lock) {
        fix.summary.push_str(
            " Every worker waits on a lock or pool: if what holds it needs a worker thread to give it back (a sync dependency whose teardown returns a database connection), the service is deadlocked until a timeout fires.",
        );
    }
    Some(Finding {
        category: entry.id.clone(),
        title: entry.title.clone(),
        kind: "pool-saturated".into(),
        state: activity.name().into(),
        wait_reason: activity.wait_reason().map(|r| r.name().to_owned()),
        state_mix: mix,
        call_site: inner.call_site,
        blocking_call: inner.blocking_call,
        wait_target: heaviest(sats.iter().flat_map(|s| s.waits.iter().copied()))
            .map(|id| rec.str(id).to_owned()),
        waited_for: Vec::new(),
        matched_by: match inner.matched_by {
            MatchedBy::Frame(_) => "frame",
            MatchedBy::Source => "source",
            MatchedBy::Fallback => "fallback",
        }
        .into(),
        // Worker threads carry no ASGI frame: the route comes from the route table.
        route: endpoint(rec, &stack, anchor).and_then(|e| route_by_endpoint(rec, &e)),
        endpoint: endpoint(rec, &stack, anchor),
        pid,
        pids: sats.iter().map(|s| s.pid).collect(),
        thread: format!("{workers} AnyIO worker threads"),
        culprit_thread: None,
        stalls: durations.len(),
        blocked_ms: round1(saturated),
        max_stall_ms: round1(durations.last().copied().unwrap_or(0.0)),
        p50_stall_ms: round1(percentile(&durations, 0.5)),
        p95_stall_ms: round1(percentile(&durations, 0.95)),
        short_blocks: 0,
        short_blocked_ms: 0.0,
        share_pct: round1(share),
        stack: stack.iter().map(|f| frame_label(rec, f)).collect(),
        fix,
    })
}

/// How the capture stage describes a pipe shared with a child process of the target.
const CHILD_PIPE_PREFIX: &str = "pipe from child process";

/// The catalog id of a blocking wait for a child process.
const SUBPROCESS_CATEGORY: &str = "blocking-subprocess";

/// The route whose endpoint function is `endpoint` in the recorded route tables
/// ([`crate::recording::RouteDef`]), when exactly one route has it.
fn route_by_endpoint(rec: &Recording, endpoint: &str) -> Option<String> {
    let mut routes = rec
        .routes
        .iter()
        .filter(|r| r.endpoint == endpoint)
        .map(|r| r.route.as_str());
    let first = routes.next()?;
    routes.all(|r| r == first).then(|| first.to_owned())
}

/// Whether two samples' request numbers say they served different requests.
fn other_request(a: Option<u32>, b: Option<u32>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a != b)
}

/// The route that took the most time over a group's samples.
fn route_of(rec: &Recording, group: &[&Block]) -> Option<String> {
    heaviest(group.iter().flat_map(|b| {
        b.routes
            .iter()
            .zip(&b.activities)
            .filter_map(|(r, (_, t))| Some(((*r)?, *t)))
    }))
    .map(|id| rec.str(id).to_owned())
}

/// The wait target that took the most time over a group's samples.
fn wait_target_of(rec: &Recording, group: &[&Block]) -> Option<String> {
    heaviest(group.iter().flat_map(|b| {
        b.waits
            .iter()
            .zip(&b.activities)
            .filter_map(|(w, (_, t))| Some(((*w)?, *t)))
    }))
    .map(|id| rec.str(id).to_owned())
}

/// Whether a busy loop's findings leave it a capacity state: no stall anywhere, only
/// repeated short blocks of ordinary call sites (no GIL, pool or GC finding), which together
/// explain less than a quarter of the busy time (a route of 1 ms requests at a high rate,
/// where a few consecutive samples of one request make a 2% short-block share).
fn saturated_by_rate(findings: &[Finding], worst_ms: f64, busy_pct: f64) -> bool {
    worst_ms == 0.0
        && findings.iter().all(|f| {
            f.kind == "repeated-short-blocks"
                && !matches!(
                    f.category.as_str(),
                    "gil-contention" | GC_CATEGORY | pools::CATEGORY
                )
        })
        && findings.iter().map(|f| f.share_pct).sum::<f64>() < busy_pct / 4.0
}

/// The loop-busy share (percent of the loop time) from which a loop with no finding is
/// `loop-saturated` rather than `healthy`.
pub const SATURATED_BUSY_PCT: f64 = 80.0;

/// The catalog id of a garbage-collection pause.
pub const GC_CATEGORY: &str = "gc-pause";

/// The oldest generation collected during a block: the highest generation whose collection
/// count grew from the process's last sample before the block to its first sample after it.
/// `gc_times` holds the process's samples with a GC state, in time order.
fn gc_generation(gc_times: &[(u64, [u64; 3])], b: &Block) -> Option<usize> {
    let (first, last) = (*b.times.first()?, *b.times.last()?);
    let before = gc_times[..gc_times.partition_point(|(t, _)| *t < first)].last()?;
    let after = gc_times.get(gc_times.partition_point(|(t, _)| *t <= last))?;
    // Generation 0 is not counted in recordings (see `TickGc::dn`): a collection with no older
    // generation counted is a young one.
    Some(
        (1..3)
            .rev()
            .find(|&i| after.1[i] > before.1[i])
            .unwrap_or(0),
    )
}

/// The threads a loop waiting on a lock/join/future waited for: in the group's samples, the
/// other threads of the same process with an application frame, by how often they were there.
fn waited_threads(rec: &Recording, group: &[&Block]) -> Vec<WaitedThread> {
    let times: HashSet<(u32, u64)> = group
        .iter()
        .flat_map(|b| b.times.iter().map(move |t| (b.pid, *t)))
        .collect();
    let loop_tids: HashSet<(u32, u32)> = group.iter().map(|b| (b.pid, b.tid)).collect();
    // (name, app frame id) -> (count, a thread id, a sample's activity, its wait target).
    // By name and place, not thread id: a pool created per request has new threads each time.
    type Seen = (usize, u32, Activity, Option<u32>);
    let mut seen: BTreeMap<(String, u32), Seen> = BTreeMap::new();
    for s in rec
        .samples
        .iter()
        .filter(|s| times.contains(&(s.pid, s.t_us)))
    {
        for t in &s.threads {
            if loop_tids.contains(&(s.pid, t.tid)) {
                continue;
            }
            let app = rec.stacks[t.stack as usize]
                .iter()
                .copied()
                .find(|f| frames::origin(rec.str(rec.frame(*f).file)) == Origin::App);
            if let Some(app) = app {
                let name = rec.thread_name(t).unwrap_or("?").to_owned();
                let e = seen.entry((name, app)).or_insert((
                    0,
                    t.tid,
                    loops::activity(rec, s, t),
                    t.wait,
                ));
                e.0 += 1;
                // Keep a described wait when a later sample has one.
                if e.3.is_none() {
                    e.3 = t.wait;
                }
            }
        }
    }
    let mut out: Vec<WaitedThread> = seen
        .into_iter()
        .map(|((name, app), (n, tid, activity, wait))| WaitedThread {
            name,
            tid,
            call_site: call_site(rec, rec.frame(app)),
            state: match activity {
                Activity::Waiting(r) => format!("waiting ({})", r.name()),
                a => a.name().to_owned(),
            },
            wait_target: wait.map(|w| rec.str(w).to_owned()),
            share_pct: round1((100.0 * n as f64 / times.len().max(1) as f64).min(100.0)),
        })
        .collect();
    out.sort_by(|a, b| {
        b.share_pct
            .partial_cmp(&a.share_pct)
            .unwrap()
            .then(a.tid.cmp(&b.tid))
    });
    out.truncate(3);
    out
}

/// Said first in the fix of a loop blocked on a future's result while no other thread ran
/// application code: the future may be one only this loop could complete.
pub const SELF_WAIT_NOTE: &str = "No other thread was running application code while the loop waited: if the future belongs to a coroutine scheduled on this same loop (`asyncio.run_coroutine_threadsafe(coro, loop)` called from the loop), the loop waits for itself, a deadlock that ends only with the timeout; `await coro` instead.";

/// Whether a loop waiting on `Future.result` had no thread working for it.
fn waits_for_itself(
    waited_for: &[WaitedThread],
    blocking_call: Option<&str>,
    major: Activity,
) -> bool {
    major == Activity::Waiting(loops::WaitReason::Lock)
        && waited_for.is_empty()
        && blocking_call.is_some_and(|b| b.ends_with("Future.result"))
}

/// Of weighted keys, the one with the most weight (ties: the smallest key).
fn heaviest<K: Ord>(weights: impl IntoIterator<Item = (K, f64)>) -> Option<K> {
    let mut by: BTreeMap<K, f64> = BTreeMap::new();
    for (k, w) in weights {
        *by.entry(k).or_default() += w;
    }
    by.into_iter()
        .max_by(|a, b| a.1.partial_cmp(&b.1).unwrap().then(b.0.cmp(&a.0)))
        .map(|(k, _)| k)
}

/// The innermost frame's API that took the most time over a group's samples.
fn dominant_leaf(rec: &Recording, group: &[&Block]) -> Option<String> {
    heaviest(group.iter().flat_map(|b| {
        b.stacks
            .iter()
            .zip(&b.activities)
            .filter_map(|((stack, _), (_, w))| Some((api_name(rec, rec.stack(*stack).next()?), *w)))
    }))
}

struct Attribution<'c> {
    entry: &'c Entry,
    matched_by: MatchedBy,
    call_site: Option<CallSite>,
    blocking_call: Option<String>,
}

fn call_site(rec: &Recording, f: &FrameDef) -> CallSite {
    CallSite {
        file: rec.str(f.file).to_owned(),
        line: f.line,
        function: rec.str(f.name).to_owned(),
        source: rec.source_line(f).map(|s| s.trim().to_owned()),
    }
}

/// Names what blocked in a callback stack (`stack[..anchor]`, innermost first).
///
/// Library frames are examined from the outermost application frame inwards: the first one a
/// catalog entry recognises is the API the application called (so `logger.info` is found even
/// when the slow part is the application's own handler class deeper down), and the call site
/// is the application frame that called it. Without such a frame, the innermost application
/// frame is the call site and its source line, then the activity, choose the entry.
fn attribute<'c>(
    rec: &Recording,
    catalog: &'c Catalog,
    stack: &[&FrameDef],
    anchor: usize,
    activity: Activity,
) -> Attribution<'c> {
    let is_app = |i: usize| frames::origin(rec.str(stack[i].file)) == Origin::App;
    let outermost_app = (0..anchor).rev().find(|&i| is_app(i));
    // Library frames from the outermost application frame inwards, by stack index.
    let libs: Vec<usize> = (0..outermost_app.map_or(anchor, |o| o + 1))
        .rev()
        .filter(|&i| !is_app(i))
        .collect();
    let user = loops::app_frame(rec, stack, anchor);
    let site_frame = user.map(|u| stack[u]).or(stack.first().copied());
    let source = site_frame.and_then(|f| rec.source_line(f));
    let facts = SiteFacts {
        callees: libs
            .iter()
            .map(|&i| {
                (
                    memo::module_of(rec, stack[i]).into_owned(),
                    rec.str(stack[i].name),
                )
            })
            .collect(),
        source,
        activity: activity.name(),
        wait_reason: activity.wait_reason().map(|r| r.name()),
    };
    let (entry, matched_by) = catalog.classify(&facts);
    if let MatchedBy::Frame(k) = matched_by {
        // The API the application called; the call site is the application frame calling it.
        let i = libs[k];
        let caller = (i + 1..anchor).find(|&j| is_app(j)).unwrap_or(i);
        return Attribution {
            entry,
            matched_by,
            call_site: Some(call_site(rec, stack[caller])),
            blocking_call: Some(api_name(rec, stack[i])),
        };
    }
    let blocking_call = match user {
        Some(u) if u > 0 => Some(api_name(rec, stack[u - 1])),
        Some(_) => source.and_then(called_on_line),
        None => stack.first().map(|f| api_name(rec, f)),
    };
    Attribution {
        entry,
        matched_by,
        call_site: site_frame.map(|f| call_site(rec, f)),
        blocking_call,
    }
}

fn fix_of(e: &Entry) -> Fix {
    Fix {
        id: e.id.clone(),
        summary: e.fix.clone(),
        why: e.why.clone(),
        before: e.before.clone(),
        after: e.after.clone(),
        links: e.links.clone(),
    }
}

/// The endpoint: the function FastAPI called (directly above `run_endpoint_function`), else
/// the outermost application frame of the callback, without its `.<locals>` suffix.
fn endpoint(rec: &Recording, stack: &[&FrameDef], anchor: usize) -> Option<String> {
    if let Some(i) = stack[..anchor].iter().position(|f| {
        rec.str(f.name).ends_with("run_endpoint_function")
            && memo::module_of(rec, f) == "fastapi.routing"
    }) {
        if i > 0 {
            return Some(rec.str(stack[i - 1].name).to_owned());
        }
    }
    (0..anchor)
        .rev()
        .find(|&i| frames::origin(rec.str(stack[i].file)) == Origin::App)
        .map(|i| {
            let name = rec.str(stack[i].name);
            name.split(".<locals>").next().unwrap_or(name).to_owned()
        })
}

/// The window's figures the verdict is made of.
struct Measures {
    blocked_pct: f64,
    busy_pct: f64,
    gil_pct: f64,
    starved_pct: f64,
    cpu_pct: f64,
    worst_ms: f64,
    /// Whether the window shows any request being served ([`served_anything`]).
    traffic: bool,
}

/// The loop-busy share and the process CPU (percent) under which a window with no other sign
/// of a request is said to have seen no traffic. A light load of fast requests (100/s of a
/// route awaiting `asyncio.sleep`) keeps the loop under 1% busy but costs its process about
/// 5% of a CPU; an idle uvicorn process uses 0.2–0.3% (its timers, and loopprof's stops).
pub const NO_TRAFFIC_PCT: f64 = 1.0;

/// Whether the recording shows any request being served: a loop busy at least
/// [`NO_TRAFFIC_PCT`] of its time, processes using that much CPU, a thread sample with a
/// route (format 4), or a thread other than a loop running or waiting in application code (a
/// `def` route on a worker thread). An idle server's recording has none of these.
fn served_anything(rec: &Recording, loops: &[LoopThread], busy_pct: f64, cpu_pct: f64) -> bool {
    if busy_pct >= NO_TRAFFIC_PCT || cpu_pct >= NO_TRAFFIC_PCT {
        return true;
    }
    // loopprof's own `--probe` requests are not the application's traffic.
    let probe_routes: HashSet<String> = rec
        .probes
        .iter()
        .map(|p| {
            let path = probes::path_of(&p.url);
            format!("GET {}", path.split('?').next().unwrap_or(path))
        })
        .collect();
    let mut app_stack: HashMap<u32, bool> = HashMap::new();
    rec.samples.iter().any(|s| {
        s.threads.iter().any(|t| {
            t.route.is_some_and(|r| !probe_routes.contains(rec.str(r)))
                || (!loops.iter().any(|l| l.pid == s.pid && l.tid == t.tid)
                    && *app_stack.entry(t.stack).or_insert_with(|| {
                        rec.stack(t.stack)
                            .any(|f| frames::origin(rec.str(f.file)) == frames::Origin::App)
                    }))
        })
    })
}

fn verdict(
    findings: &[Finding],
    m: Measures,
    loops_found: &[LoopThread],
    threshold_ms: f64,
) -> Verdict {
    let Measures {
        blocked_pct,
        busy_pct,
        gil_pct,
        starved_pct,
        cpu_pct,
        worst_ms,
        traffic,
    } = m;
    let (kind, summary) = if loops_found.is_empty() {
        (
            "no-event-loop",
            "No asyncio/uvloop event loop was found in the recorded processes.".to_owned(),
        )
    } else if busy_pct >= SATURATED_BUSY_PCT && saturated_by_rate(findings, worst_ms, busy_pct) {
        // Many cheap callbacks that fill the loop: a capacity state, not a call site to fix.
        // Short-block findings that explain little of the busy time stay listed.
        let top = findings.first().map(|f| {
            format!(
                "; the largest share in short blocks, {:.0}% of the loop's time, is in `{}`{}, listed below",
                f.share_pct,
                f.endpoint
                    .as_deref()
                    .or(f.call_site.as_ref().map(|c| c.function.as_str()))
                    .unwrap_or("?"),
                f.route.as_deref().map(|r| format!(" ({r})")).unwrap_or_default(),
            )
        });
        (
            "loop-saturated",
            format!(
                "The event loop was busy {busy_pct:.0}% of the time in short callbacks, none of {threshold_ms:.0} ms or more: it is saturated by the request rate, not blocked by one call site; add worker processes or make the most frequent requests cheaper{}{}.",
                if starved_pct >= 20.0 {
                    format!(" (it also waited for a CPU {starved_pct:.0}% of the time: the machine or its CPU limit is saturated too)")
                } else {
                    String::new()
                },
                top.unwrap_or_default(),
            ),
        )
    } else if findings.is_empty() && !traffic {
        (
            "healthy",
            format!(
                "No request was seen being served: the event loop was idle {:.0}% of the time and the server used {cpu_pct:.1}% of a CPU, so this window probably saw no traffic. A recording of an idle server cannot show what slows it down; record while the problem happens (under the load that shows it), or add `--probe URL` to measure the server's answers.",
                100.0 - busy_pct
            ),
        )
    } else if findings.is_empty() {
        (
            "healthy",
            format!(
                "The event loop was never blocked for {threshold_ms:.0} ms or more; it was busy {busy_pct:.0}% of the time in short callbacks{}.",
                if starved_pct >= 5.0 {
                    format!(", and waited for a CPU {starved_pct:.0}% of the time (the machine or its CPU limit was saturated)")
                } else {
                    String::new()
                }
            ),
        )
    } else {
        let top = &findings[0];
        let kind = if top.category == "gil-contention" {
            "gil-contention"
        } else if top.category == pools::CATEGORY {
            pools::CATEGORY
        } else if top.category == GC_CATEGORY {
            GC_CATEGORY
        } else if top.state == "on-cpu" {
            "cpu-bound-loop"
        } else {
            "loop-blocked"
        };
        let sites = findings
            .iter()
            .filter(|f| f.category != "gil-contention")
            .count();
        let at = top
            .call_site
            .as_ref()
            .map(|c| format!(" at {}:{}", frames::short_file(&c.file), c.line))
            .unwrap_or_default();
        let served = top
            .route
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        let what = top
            .blocking_call
            .as_deref()
            .map(|b| format!(" — {b}"))
            .unwrap_or_default();
        let summary = if kind == GC_CATEGORY && top.stalls == 0 {
            format!(
                "No stall reached {threshold_ms:.0} ms, but garbage collection held the event loop {:.0}% of the time: {} pause{} of up to {:.0} ms ({}){}.",
                top.share_pct,
                top.short_blocks,
                if top.short_blocks == 1 { "" } else { "s" },
                top.max_stall_ms,
                top.blocking_call.as_deref().unwrap_or("garbage collection"),
                top.route.as_deref().or(top.endpoint.as_deref()).map(|e| format!(", triggered while serving `{e}`")).unwrap_or_default(),
            )
        } else if kind == GC_CATEGORY {
            format!(
                "The event loop was blocked {:.0}% of the time, most by garbage collection: {} pause{} of up to {:.0} ms ({}){}.",
                blocked_pct,
                top.stalls.max(top.short_blocks),
                if top.stalls.max(top.short_blocks) == 1 { "" } else { "s" },
                top.max_stall_ms,
                top.blocking_call.as_deref().unwrap_or("garbage collection"),
                top.route.as_deref().or(top.endpoint.as_deref()).map(|e| format!(", triggered while serving `{e}`")).unwrap_or_default(),
            )
        } else if kind == pools::CATEGORY {
            format!(
                "Every worker thread was busy {:.0}% of the time ({}): `def` routes and `run_in_threadpool` calls queued while the event loop idled; the workers waited in {}{}{}.",
                top.share_pct,
                top.thread,
                top.blocking_call.as_deref().map(|b| format!("`{b}`")).unwrap_or_else(|| "their calls".into()),
                top.endpoint.as_deref().map(|e| format!(" in `{e}`")).unwrap_or_default(),
                at,
            )
        } else if kind == "gil-contention" {
            let c = top.culprit_thread.as_ref();
            format!(
                "The event loop waited for the GIL {:.0}% of the time while {} held it{}.",
                gil_pct,
                c.map(|c| format!("thread {:?}", c.name))
                    .unwrap_or_else(|| "another thread".into()),
                c.and_then(|c| c.call_site.as_ref())
                    .map(|cs| format!(
                        " in {} at {}:{}",
                        cs.function,
                        frames::short_file(&cs.file),
                        cs.line
                    ))
                    .unwrap_or_default()
            )
        } else if worst_ms == 0.0 {
            // Only repeated short blocks: say so, never "blocked 0% ... worst stall 0 ms".
            format!(
                "No stall reached {threshold_ms:.0} ms, but short blocks at {} call site{} held the event loop; the largest share, {:.0}% of the loop's time in blocks of up to {:.0} ms, in `{}`{}{}{}.",
                sites,
                if sites == 1 { "" } else { "s" },
                top.share_pct,
                top.max_stall_ms,
                top.endpoint.as_deref().or(top.call_site.as_ref().map(|c| c.function.as_str())).unwrap_or("?"),
                at,
                served,
                what
            )
        } else {
            format!(
                "The event loop was blocked {:.0}% of the time; {} call site{} did it; worst stall {:.0} ms in `{}`{}{}{}.",
                blocked_pct,
                sites,
                if sites == 1 { "" } else { "s" },
                worst_ms,
                top.endpoint.as_deref().or(top.call_site.as_ref().map(|c| c.function.as_str())).unwrap_or("?"),
                at,
                served,
                what
            )
        };
        (kind, summary)
    };
    Verdict {
        kind: kind.into(),
        summary,
        loop_blocked_pct: round1(blocked_pct),
        loop_busy_pct: round1(busy_pct),
        gil_wait_pct: round1(gil_pct),
        cpu_starved_pct: round1(starved_pct),
        process_cpu_pct: cpu_pct,
        worst_stall_ms: round1(worst_ms),
        no_traffic: !traffic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::testing::*;
    use crate::recording::{GcSample, RawFrame, RawThread};

    const ST: &str = "/usr/lib/python3.11";
    const SP: &str = "/venv/lib/python3.11/site-packages";

    fn base() -> Vec<RawFrame> {
        vec![
            frame("Runner.run", &format!("{ST}/asyncio/runners.py"), 118),
            frame("Server.run", &format!("{SP}/uvicorn/server.py"), 86),
        ]
    }

    fn request(top: &[RawFrame], endpoint: &str) -> Vec<RawFrame> {
        let mut v = top.to_vec();
        v.extend(fastapi_request_frames(endpoint, "/srv/app/main.py", SP));
        v.extend(base());
        v
    }

    fn sleep_stack() -> Vec<RawFrame> {
        request(
            &[frame("rate_limited", "/srv/app/main.py", 12)],
            "get_quote",
        )
    }

    /// The MainThread blocked in `time.sleep` in `rate_limited` (a request to `get_quote`).
    fn sleeping() -> RawThread {
        thread(
            1,
            "MainThread",
            'S',
            "clock_nanosleep",
            false,
            sleep_stack(),
        )
    }

    /// The MainThread idle in its selector.
    fn idle() -> RawThread {
        thread(1, "MainThread", 'S', "epoll_pwait", false, base())
    }

    /// Samples of one uvloop MainThread: `pattern` gives each sample's kind, at irregular
    /// spacing when `jitter` (timestamps are never assumed periodic).
    fn recording(pattern: &[char], jitter: bool) -> Recording {
        let mut b = RecordingBuilder::new(header(1, 100.0));
        let mut t = 0u64;
        for (i, c) in pattern.iter().enumerate() {
            let th = match c {
                'i' => idle(),
                's' => sleeping(),
                'c' => thread(
                    1,
                    "MainThread",
                    'R',
                    "running",
                    true,
                    request(
                        &[frame("crunch", "/srv/app/score.py", 30 + (i % 3) as i32)],
                        "score",
                    ),
                ),
                'g' | 'h' => thread(1, "MainThread", 'S', "futex", false, base()),
                _ => unreachable!(),
            };
            let mut threads = vec![th];
            if *c == 'g' {
                threads.push(thread(
                    2,
                    "cruncher",
                    'R',
                    "running",
                    true,
                    vec![frame("number_cruncher", "/srv/app/jobs.py", 22)],
                ));
            }
            b.sample(1, t, t / 2, &threads);
            t += if jitter && i % 4 == 0 { 25_000 } else { 10_000 };
        }
        b.finish(end(t, pattern.len() as u64))
    }

    fn diag(rec: &Recording) -> Diagnosis {
        diagnose(rec, &Catalog::builtin(), &Options::default())
    }

    #[test]
    fn stalls_split_at_idle_samples_and_are_timed_by_timestamps() {
        // idle, 10 sleeping (100 ms), idle, 3 sleeping (30 ms: short), idle x 6.
        let pattern: Vec<char> = "issssssssssiisssiiiiii".chars().collect();
        let rec = recording(&pattern, false);
        let d = diag(&rec);
        assert_eq!(d.loops.len(), 1);
        assert_eq!(d.findings.len(), 1);
        let f = &d.findings[0];
        assert_eq!(f.category, "blocking-sleep");
        assert_eq!(f.stalls, 1);
        assert!((f.max_stall_ms - 100.0).abs() < 0.01, "{}", f.max_stall_ms);
        assert_eq!(f.short_blocks, 1);
        assert!((f.short_blocked_ms - 30.0).abs() < 0.01);
        assert_eq!(f.endpoint.as_deref(), Some("get_quote"));
        assert_eq!(f.call_site.as_ref().unwrap().function, "rate_limited");
        assert_eq!(f.state, "waiting");
        assert_eq!(f.wait_reason.as_deref(), Some("sleep"));
        assert_eq!(d.verdict.kind, "loop-blocked");
        assert!((d.verdict.worst_stall_ms - 100.0).abs() < 0.01);
    }

    #[test]
    fn a_finding_names_the_route_served_most_of_its_time() {
        // 8 samples serving GET /quotes/{symbol}, 2 of a POST at the same site, 1 unknown:
        // the route that took the most time is the finding's, and it is in the verdict.
        let mut b = RecordingBuilder::new(header(1, 100.0));
        let mut t = 0u64;
        for i in 0..14 {
            let mut th = if (1..12).contains(&i) {
                sleeping()
            } else {
                idle()
            };
            th.route = match i {
                1..=8 => Some("GET /quotes/{symbol}".into()),
                9 | 10 => Some("POST /quotes".into()),
                _ => None,
            };
            b.sample(1, t, t / 2, &[th]);
            t += 10_000;
        }
        let d = diag(&b.finish(end(t, 14)));
        let f = &d.findings[0];
        assert_eq!(f.route.as_deref(), Some("GET /quotes/{symbol}"));
        assert!(
            d.verdict.summary.contains("(GET /quotes/{symbol})"),
            "{}",
            d.verdict.summary
        );
        // A recording without routes (format 3 and older) has none, and says nothing of it.
        let d = diag(&recording(
            &"issssssssssi".chars().collect::<Vec<_>>(),
            false,
        ));
        assert_eq!(d.findings[0].route, None);
        assert!(!d.verdict.summary.contains("(GET"), "{}", d.verdict.summary);
    }

    #[test]
    fn without_a_route_in_the_samples_the_route_table_names_the_endpoints_route() {
        let pattern: Vec<char> = "issssssssssi".chars().collect();
        let with_table = |routes: &[&str]| {
            let mut b = RecordingBuilder::new(header(1, 100.0));
            for r in routes {
                b.record(crate::recording::Record::Route(
                    crate::recording::RouteDef {
                        pid: 1,
                        route: (*r).into(),
                        endpoint: "get_quote".into(),
                    },
                ));
            }
            let mut t = 0u64;
            for c in &pattern {
                let th = match c {
                    's' => sleeping(),
                    _ => idle(),
                };
                b.sample(1, t, t / 2, &[th]);
                t += 10_000;
            }
            diag(&b.finish(end(t, pattern.len() as u64)))
        };
        let d = with_table(&["GET /quotes/{symbol}"]);
        assert_eq!(d.findings[0].route.as_deref(), Some("GET /quotes/{symbol}"));
        // One endpoint function serving two routes: which one is not known, so none is named.
        let d = with_table(&["GET /quotes/{symbol}", "GET /q/{symbol}"]);
        assert_eq!(d.findings[0].route, None);
    }

    #[test]
    fn an_idle_window_says_it_saw_no_traffic() {
        let idle = |route: Option<&str>, probe: bool| {
            let mut b = RecordingBuilder::new(header(1, 100.0));
            if probe {
                b.record(crate::recording::Record::Probe(
                    crate::recording::ProbeResult {
                        url: "http://127.0.0.1:8000/health".into(),
                        t_us: 0,
                        latency_ms: 0.9,
                        status: Some(200),
                        error: None,
                    },
                ));
            }
            for i in 0..100u64 {
                let mut th = idle();
                if i == 50 {
                    th.route = route.map(Into::into);
                }
                b.sample(1, i * 10_000, 0, &[th]);
            }
            diag(&b.finish(end(1_000_000, 100)))
        };
        let d = idle(None, false);
        assert_eq!(d.verdict.kind, "healthy");
        assert!(d.verdict.no_traffic);
        assert!(
            d.verdict.summary.starts_with("No request was seen"),
            "{}",
            d.verdict.summary
        );
        // loopprof's own probe requests are not traffic.
        assert!(idle(Some("GET /health"), true).verdict.no_traffic);
        // One sample serving a request is.
        let d = idle(Some("GET /orders/{order_id}"), true);
        assert!(!d.verdict.no_traffic);
        assert!(
            d.verdict.summary.contains("never blocked"),
            "{}",
            d.verdict.summary
        );
    }

    #[test]
    fn back_to_back_requests_at_one_site_are_separate_stalls() {
        // 20 samples blocked at one line with no idle sample between them: two requests of
        // 100 ms each (request numbers 4 and 5), not one 200 ms stall. Without request numbers
        // (older recordings, or no ASGI frame) they stay one block, as before.
        let run = |reqs: bool| {
            let mut b = RecordingBuilder::new(header(1, 100.0));
            let mut t = 0u64;
            for i in 0..24 {
                let mut th = if (2..22).contains(&i) {
                    sleeping()
                } else {
                    idle()
                };
                if reqs && (2..22).contains(&i) {
                    th.request = Some(if i < 12 { 0xa0 } else { 0xb0 });
                }
                b.sample(1, t, t / 2, &[th]);
                t += 10_000;
            }
            diag(&b.finish(end(t, 24)))
        };
        let d = run(true);
        let f = &d.findings[0];
        assert_eq!(f.stalls, 2, "{f:?}");
        assert!((f.max_stall_ms - 100.0).abs() < 0.01, "{}", f.max_stall_ms);
        let d = run(false);
        assert_eq!(d.findings[0].stalls, 1);
        assert!((d.findings[0].max_stall_ms - 200.0).abs() < 0.01);
    }

    #[test]
    fn irregular_sampling_is_measured_not_assumed() {
        let pattern: Vec<char> = "issssssssi".chars().collect();
        let even = diag(&recording(&pattern, false)).findings[0].max_stall_ms;
        let jittered = diag(&recording(&pattern, true)).findings[0].max_stall_ms;
        assert!((even - 80.0).abs() < 0.01);
        // Samples 0, 4 and 8 are followed by 25 ms gaps: the stall covers more wall time.
        assert!(jittered > even + 10.0, "{jittered} vs {even}");
    }

    #[test]
    fn a_busy_but_healthy_loop_has_no_findings() {
        // One 10 ms callback in two seconds: no stall, and far under the 2 % share.
        let mut pattern = vec!['i'; 200];
        pattern[50] = 's';
        let d = diag(&recording(&pattern, false));
        assert!(d.findings.is_empty(), "{:?}", d.findings);
        assert_eq!(d.verdict.kind, "healthy");
    }

    #[test]
    fn cpu_on_the_loop_is_one_stall_across_lines() {
        let pattern: Vec<char> = "icccccccci".chars().collect();
        let d = diag(&recording(&pattern, false));
        assert_eq!(d.findings.len(), 1);
        let f = &d.findings[0];
        assert_eq!(f.category, "cpu-bound");
        assert_eq!(f.stalls, 1);
        assert_eq!(f.state, "on-cpu");
        assert_eq!(d.verdict.kind, "cpu-bound-loop");
    }

    #[test]
    fn gil_waits_name_the_thread_holding_the_gil() {
        let pattern: Vec<char> = "igigggiggggigggg".chars().collect();
        let d = diag(&recording(&pattern, false));
        let f = d
            .findings
            .iter()
            .find(|f| f.category == "gil-contention")
            .expect("gil finding");
        let c = f.culprit_thread.as_ref().unwrap();
        assert_eq!(c.name, "cruncher");
        assert_eq!(c.call_site.as_ref().unwrap().function, "number_cruncher");
        assert_eq!(d.verdict.kind, "gil-contention");
        let cruncher = d.threads.iter().find(|t| t.name == "cruncher").unwrap();
        assert_eq!(cruncher.on_cpu_pct, 100.0);
        let main = d.threads.iter().find(|t| t.event_loop).unwrap();
        assert!(main.gil_wait_pct > 50.0);
    }

    #[test]
    fn a_collection_inside_a_callback_is_the_collectors_not_the_allocating_lines() {
        // 6 samples computing in `crunch`, 8 more in `crunch` while a generation-2 collection
        // runs, 8 more computing: the callback keeps its own 140 ms, the collector its 80 ms.
        let crunch = request(&[frame("crunch", "/srv/app/score.py", 30)], "score");
        let mut b = RecordingBuilder::new(header(1, 100.0));
        let mut collections = [100u64, 10, 1];
        for i in 0..24u64 {
            let th = if i == 0 || i == 23 {
                idle()
            } else {
                thread(1, "MainThread", 'R', "running", true, crunch.clone())
            };
            let collecting = (7..15).contains(&i);
            if i == 15 {
                collections[2] += 1;
                collections[0] += 1;
                collections[1] += 1;
            }
            b.sample_gc(
                1,
                i * 10_000,
                i * 5_000,
                GcSample {
                    collecting,
                    collections,
                },
                &[th],
            );
        }
        let d = diag(&b.finish(end(240_000, 24)));
        let gc = d
            .findings
            .iter()
            .find(|f| f.category == GC_CATEGORY)
            .unwrap();
        assert!((gc.max_stall_ms - 80.0).abs() < 0.01, "{}", gc.max_stall_ms);
        assert!(gc.call_site.is_none());
        assert_eq!(
            gc.blocking_call.as_deref(),
            Some("garbage collection (generation 2)")
        );
        let cpu = d
            .findings
            .iter()
            .find(|f| f.category == "cpu-bound")
            .unwrap();
        assert_eq!(
            cpu.stalls, 1,
            "the callback is one block across the collection"
        );
        assert!(
            (cpu.max_stall_ms - 140.0).abs() < 0.01,
            "{}",
            cpu.max_stall_ms
        );
    }

    #[test]
    fn gil_waits_with_no_holder_in_sight_are_hand_over_latency() {
        // 'h': the loop waits for the GIL and no other thread holds it in that sample (threads
        // doing I/O hand the GIL around): nothing for one call site to fix.
        let pattern: Vec<char> = "ihihhhihhhhihhhh".chars().collect();
        let d = diag(&recording(&pattern, false));
        assert!(d.findings.is_empty(), "{:?}", d.findings);
        assert_eq!(d.verdict.kind, "healthy");
        assert!(
            d.verdict.gil_wait_pct > 50.0,
            "the figure still shows the waits"
        );
    }

    #[test]
    fn library_only_sites_need_a_continuous_kernel_wait() {
        // A saturated loop: every sample busy in the server's own response writing, on CPU.
        let write = vec![
            frame(
                "_SelectorSocketTransport.write",
                &format!("{ST}/asyncio/selector_events.py"),
                1057,
            ),
            frame(
                "RequestResponseCycle.send",
                &format!("{SP}/uvicorn/protocols/http/httptools_impl.py"),
                524,
            ),
        ];
        let mut busy = write.clone();
        busy.extend(base());
        let mut b = RecordingBuilder::new(header(1, 100.0));
        for i in 0..40u64 {
            let (st, sc, gil) = if i % 2 == 0 {
                ('R', "running", true)
            } else {
                ('R', "running", false)
            };
            b.sample(
                1,
                i * 10_000,
                i * 10_000,
                &[thread(1, "MainThread", st, sc, gil, busy.clone())],
            );
        }
        let d = diag(&b.finish(end(400_000, 40)));
        assert!(d.findings.is_empty(), "{:?}", d.findings);
        // No call site to blame, but a loop busy all the time is not healthy: saturated.
        assert_eq!(d.verdict.kind, "loop-saturated");
        assert!(
            d.verdict.summary.contains("saturated"),
            "{}",
            d.verdict.summary
        );
        assert_eq!(d.verdict.worst_stall_ms, 0.0);
        // The same code blocked in the kernel for 300 ms is a stall.
        let mut b = RecordingBuilder::new(header(1, 100.0));
        for i in 0..40u64 {
            let th = if (5..35).contains(&i) {
                thread(1, "MainThread", 'S', "sendto", false, busy.clone())
            } else {
                idle()
            };
            b.sample(1, i * 10_000, 0, &[th]);
        }
        let d = diag(&b.finish(end(400_000, 40)));
        assert_eq!(d.findings.len(), 1);
        assert_eq!(d.findings[0].category, "unknown-blocking");
        assert!((d.findings[0].max_stall_ms - 300.0).abs() < 0.01);
    }

    #[test]
    fn cheap_requests_filling_the_loop_are_saturation_with_the_short_blocks_listed() {
        // 200 on-CPU samples at one application line, a new request in every sample except
        // five pairs (a request seen twice): short blocks of 2% of the loop's time, no stall.
        // The loop is saturated by the request rate; the short-block site stays listed.
        let crunch = request(&[frame("crunch", "/srv/app/score.py", 30)], "score");
        let mut b = RecordingBuilder::new(header(1, 100.0));
        let mut req = 0u64;
        for i in 0..200u64 {
            if i % 40 != 1 {
                req += 1;
            }
            let mut th = thread(1, "MainThread", 'R', "running", true, crunch.clone());
            th.request = Some(req);
            th.sched = Some([i * 10_000_000, 0]);
            b.sample(1, i * 10_000, i * 10_000, &[th]);
        }
        let d = diag(&b.finish(end(2_000_000, 200)));
        assert_eq!(d.verdict.worst_stall_ms, 0.0);
        assert_eq!(d.verdict.kind, "loop-saturated", "{}", d.verdict.summary);
        assert!(
            d.verdict.summary.contains("listed below"),
            "{}",
            d.verdict.summary
        );
        assert!(
            d.findings.iter().all(|f| f.kind == "repeated-short-blocks"),
            "{:?}",
            d.findings
        );
    }

    #[test]
    fn short_blocks_inside_an_awaited_async_api_are_not_findings() {
        // `await asyncio.create_subprocess_exec(...)` forks on the loop for ~30 ms each time.
        let spawn = request(
            &[
                frame("_fork_exec", &format!("{ST}/subprocess.py"), 1800),
                frame(
                    "create_subprocess_exec",
                    &format!("{ST}/asyncio/subprocess.py"),
                    224,
                ),
            ],
            "run_tool",
        );
        let mut b = RecordingBuilder::new(header(1, 100.0));
        for i in 0..100u64 {
            let th = if i % 10 < 3 {
                thread(1, "MainThread", 'R', "running", true, spawn.clone())
            } else {
                idle()
            };
            b.sample(1, i * 10_000, 0, &[th]);
        }
        let d = diag(&b.finish(end(1_000_000, 100)));
        assert!(d.findings.is_empty(), "{:?}", d.findings);
    }

    #[test]
    fn time_waiting_for_a_cpu_is_not_blocking_by_the_code() {
        // 100 ms "on CPU" in a callback, but the thread was runnable without a CPU for 90 % of
        // it (an overloaded machine): the code held the loop ~10 ms, no stall.
        let build = |starved: f64| {
            let mut b = RecordingBuilder::new(header(1, 100.0));
            let mut wait_ns = 0u64;
            let mut run_ns = 0u64;
            for i in 0..30u64 {
                let mut th = if (10..20).contains(&i) {
                    thread(
                        1,
                        "MainThread",
                        'R',
                        "running",
                        true,
                        request(&[frame("render", "/srv/app/views.py", 9)], "page"),
                    )
                } else {
                    idle()
                };
                th.sched = Some([run_ns, wait_ns]);
                if (10..20).contains(&i) {
                    wait_ns += (10_000_000.0 * starved) as u64;
                    run_ns += (10_000_000.0 * (1.0 - starved)) as u64;
                } else {
                    run_ns += 100_000;
                }
                b.sample(1, i * 10_000, 0, &[th]);
            }
            diag(&b.finish(end(300_000, 30)))
        };
        let starved = build(0.9);
        assert!(starved.findings.is_empty(), "{:?}", starved.findings);
        assert!(
            starved.verdict.cpu_starved_pct > 25.0,
            "{}",
            starved.verdict.cpu_starved_pct
        );
        let running = build(0.0);
        assert_eq!(running.findings.len(), 1);
        assert_eq!(running.findings[0].category, "cpu-bound");
        assert!((running.findings[0].max_stall_ms - 100.0).abs() < 0.01);
    }

    #[test]
    fn names_the_call_on_a_source_line() {
        assert_eq!(
            called_on_line("    time.sleep(ms / 1000.0)").as_deref(),
            Some("time.sleep")
        );
        assert_eq!(
            called_on_line("    rows = conn.execute(q).fetchall()").as_deref(),
            Some("conn.execute")
        );
        assert_eq!(called_on_line("    if check(x):").as_deref(), Some("check"));
        assert_eq!(called_on_line("    x = 'f(' + y"), None);
        assert_eq!(called_on_line("    for p in primes:"), None);
    }
}
