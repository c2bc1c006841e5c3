//! The diagnosis's data: findings, verdict, per-thread time split. Serialised as is into
//! summary.json (docs/json-summary.md), so every field name and enum spelling is part of the
//! documented format.

use crate::analysis::catalog::MatchKind;
use crate::analysis::loops::{ActivityKind, LoopThread, WaitReason};
use crate::analysis::quality::Quality;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// What a finding is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// At least one block reached the stall threshold.
    Stalls,
    /// Only blocks shorter than the threshold, adding up to a share of the window.
    RepeatedShortBlocks,
    /// Every worker thread of a pool busy (`thread-pool-exhausted`); its figures are
    /// saturation episodes, not loop stalls.
    PoolSaturated,
}

impl FindingKind {
    /// The JSON spelling (`stalls`, `repeated-short-blocks`, `pool-saturated`).
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Stalls => "stalls",
            FindingKind::RepeatedShortBlocks => "repeated-short-blocks",
            FindingKind::PoolSaturated => "pool-saturated",
        }
    }
}

/// The verdict of a window, from its top finding and its measures
/// (docs/detection.md lists when each is given).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerdictKind {
    /// No finding.
    Healthy,
    /// The top finding is a call site that blocked the loop.
    LoopBlocked,
    /// The top finding keeps the loop on CPU.
    CpuBoundLoop,
    /// The loop waited for the GIL another thread kept.
    GilContention,
    /// Every worker thread was busy while the loop idled.
    ThreadPoolExhausted,
    /// Garbage collection held the loop.
    GcPause,
    /// The loop was full of short callbacks: a capacity state.
    LoopSaturated,
    /// The loop idled while requests queued on an awaited resource (a pool, a lock, the
    /// thread limiter): [`crate::analysis::tasks`].
    RequestsQueued,
    /// No event loop was found.
    NoEventLoop,
    /// The recording cannot be trusted ([`crate::analysis::quality`]).
    Inconclusive,
}

impl VerdictKind {
    /// Every verdict, in the order the docs list them.
    pub const ALL: [VerdictKind; 10] = [
        VerdictKind::Healthy,
        VerdictKind::LoopBlocked,
        VerdictKind::CpuBoundLoop,
        VerdictKind::GilContention,
        VerdictKind::ThreadPoolExhausted,
        VerdictKind::GcPause,
        VerdictKind::LoopSaturated,
        VerdictKind::RequestsQueued,
        VerdictKind::NoEventLoop,
        VerdictKind::Inconclusive,
    ];

    /// The JSON and `--fail-on` spelling (`loop-blocked`).
    pub const fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Healthy => "healthy",
            VerdictKind::LoopBlocked => "loop-blocked",
            VerdictKind::CpuBoundLoop => "cpu-bound-loop",
            VerdictKind::GilContention => "gil-contention",
            VerdictKind::ThreadPoolExhausted => "thread-pool-exhausted",
            VerdictKind::GcPause => "gc-pause",
            VerdictKind::LoopSaturated => "loop-saturated",
            VerdictKind::RequestsQueued => "requests-queued",
            VerdictKind::NoEventLoop => "no-event-loop",
            VerdictKind::Inconclusive => "inconclusive",
        }
    }
}

impl std::fmt::Display for VerdictKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for FindingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
    /// Stalls, repeated short blocks, or a saturated worker pool.
    pub kind: FindingKind,
    /// Majority activity: `on-cpu`, `native`, `waiting`, `gil-wait`.
    pub state: ActivityKind,
    /// Majority wait reason, when waiting.
    pub wait_reason: Option<WaitReason>,
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
    pub matched_by: MatchKind,
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
    /// `healthy`, `loop-blocked`, `cpu-bound-loop`, `gil-contention`, ... or `inconclusive`.
    pub kind: VerdictKind,
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
    pub quality: Quality,
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
    /// Where requests waited (the asyncio task snapshots, format version 6).
    pub requests: crate::analysis::tasks::RequestWaits,
    /// (pid, tid, t_us) of every loop-thread sample inside a reported stall, with the index in
    /// `findings` of the finding it belongs to.
    #[serde(skip)]
    pub stall_samples: HashMap<(u32, u32, u64), usize>,
}
