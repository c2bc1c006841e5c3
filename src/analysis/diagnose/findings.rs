//! Findings: blocks grouped by call site, the rules that decide which groups are reported,
//! and each reported group named (catalog entry, call site, blocking call, route, what it
//! waited on) and measured.

use super::attribute::{
    attribute, dominant_leaf, endpoint, fix_of, frame_label, route_by_endpoint, route_of,
    user_or_leaf, wait_target_of, waited_threads, waits_for_itself, CHILD_PIPE_PREFIX,
    SELF_WAIT_NOTE, SUBPROCESS_CATEGORY,
};
use super::blocks::{Block, Holder, SiteKey, UNSEEN_HOLDER};
use super::model::{CallSite, Culprit, Finding, FindingKind};
use super::Options;
use crate::analysis::catalog::{Catalog, Entry, MatchedBy, SiteFacts};
use crate::analysis::loops::{Activity, WaitReason};
use crate::analysis::stats::{percentile, round1, sort_f64};
use crate::recording::frames::{self, Origin};
use crate::recording::{FrameDef, Recording};
use std::collections::{BTreeMap, HashMap};

/// Groups blocks by call site key (across processes: workers run the same code) and returns
/// the reported findings, most blocked time first, with the keys they were made of.
pub(super) fn build_findings(
    rec: &Recording,
    catalog: &Catalog,
    opts: &Options,
    blocks: &[Block],
    window_by_pid: &HashMap<u32, f64>,
) -> (Vec<Finding>, Vec<SiteKey>) {
    let mut groups: BTreeMap<&SiteKey, Vec<&Block>> = BTreeMap::new();
    for b in blocks {
        groups.entry(&b.key).or_default().push(b);
    }
    let mut out = Vec::new();
    for (key, group) in groups {
        let times = GroupTimes::of(&group, opts, window_by_pid);
        let mix = activity_mix(&group);
        if !is_reported(rec, key, &group, &times, &mix, opts) {
            continue;
        }
        let Some(f) = finding_of(rec, catalog, key, &group, &times, &mix) else {
            continue;
        };
        out.push((f, key.clone()));
    }
    out.sort_by(|(a, _), (b, _)| {
        (b.blocked_ms + b.short_blocked_ms)
            .partial_cmp(&(a.blocked_ms + a.short_blocked_ms))
            .unwrap()
    });
    out.into_iter().unzip()
}

/// A group's times.
struct GroupTimes {
    /// Wall time of each block that is a stall, ms. Whether a block is a stall is decided on
    /// the time the code held the loop; the figures reported are wall time, what the users
    /// of the server experienced.
    stalls: Vec<f64>,
    /// Time the code held the loop in each counted short block, ms.
    short: Vec<f64>,
    /// Share of the loop time of the processes where it happened, percent: one worker of
    /// several can be badly blocked while the others are fine.
    share: f64,
}

impl GroupTimes {
    fn of(group: &[&Block], opts: &Options, window_by_pid: &HashMap<u32, f64>) -> GroupTimes {
        let stalls: Vec<f64> = group
            .iter()
            .filter(|b| b.is_stall(opts.threshold_ms))
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
        let pids = pids_of(group);
        let window_ms: f64 = pids.iter().filter_map(|p| window_by_pid.get(p)).sum();
        let share = if window_ms > 0.0 {
            100.0 * (stalls.iter().sum::<f64>() + short.iter().sum::<f64>()) / window_ms
        } else {
            0.0
        };
        GroupTimes {
            stalls,
            short,
            share,
        }
    }

    fn blocked(&self) -> f64 {
        self.stalls.iter().sum()
    }

    fn short_total(&self) -> f64 {
        self.short.iter().sum()
    }
}

/// The processes of a group, ascending.
fn pids_of(group: &[&Block]) -> Vec<u32> {
    let mut pids: Vec<u32> = group.iter().map(|b| b.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// A group's time per activity.
fn activity_mix(group: &[&Block]) -> HashMap<Activity, f64> {
    let mut mix: HashMap<Activity, f64> = HashMap::new();
    for b in group {
        for (a, w) in &b.activities {
            *mix.entry(*a).or_default() += w;
        }
    }
    mix
}

/// The activity with the most time (ties to the lowest).
fn majority(mix: &HashMap<Activity, f64>) -> Option<Activity> {
    mix.iter()
        .max_by(|a, b| a.1.partial_cmp(b.1).unwrap().then(b.0.cmp(a.0)))
        .map(|(a, _)| *a)
}

/// The rules: whether a group of blocks is a finding.
fn is_reported(
    rec: &Recording,
    key: &SiteKey,
    group: &[&Block],
    times: &GroupTimes,
    mix: &HashMap<Activity, f64>,
    opts: &Options,
) -> bool {
    let stalled = !times.stalls.is_empty();
    match key {
        SiteKey::Gil { holder, .. } => {
            gil_is_contention(rec, holder, group, stalled) && times.share >= opts.min_share_pct
        }
        // One library phase of one endpoint held the loop for the whole block: its inner
        // frames moved, its phase did not. Short blocks are left out, as for any library
        // site (a saturated loop serializing many small responses).
        SiteKey::Phase { .. } => stalled,
        SiteKey::Callback {
            file, api_package, ..
        } => {
            if frames::origin(file) != Origin::App {
                // Repeated short blocks must be in application code: short callbacks of
                // the server's or framework's own code (writing responses under heavy load)
                // are normal. Without an application frame, consecutive busy samples can be
                // different short callbacks of a saturated loop at the same server code: only
                // a continuous wait in the kernel is evidence of one long block there.
                let waiting = majority(mix).is_some_and(|a| matches!(a, Activity::Waiting(_)));
                stalled && waiting
            } else if api_package
                .as_deref()
                .is_some_and(|p| ASYNC_FRAMEWORKS.contains(&p))
            {
                // The application awaited the async API (asyncio.create_subprocess_exec
                // forking, an anyio primitive): what blocks is the library's own cost, and
                // the catalog's advice (use the async API) is already followed.
                false
            } else {
                stalled || (times.short.len() >= 2 && times.share >= opts.min_share_pct)
            }
        }
        // Judged like application code: stalls, or repeated short pauses.
        SiteKey::Gc => stalled || (times.short.len() >= 2 && times.share >= opts.min_share_pct),
    }
}

/// Whether GIL waits of the loop are contention worth a finding.
fn gil_is_contention(rec: &Recording, holder: &str, group: &[&Block], stalled: bool) -> bool {
    // Only a thread seen holding the GIL is contention: GIL waits with no holder in sight are
    // hand-over latency between threads doing I/O (many `def` routes calling an upstream),
    // which no code change at one site removes.
    if holder == UNSEEN_HOLDER {
        return false;
    }
    // Nor is the GIL passed around among many threads of one name (forty AnyIO workers each
    // parsing a response): contention is one or two threads keeping it, so the two most
    // frequent holders must account for most of the waits.
    let mut by_tid: HashMap<u32, usize> = HashMap::new();
    for c in group.iter().flat_map(|b| &b.culprits) {
        *by_tid.entry(c.tid).or_default() += 1;
    }
    let mut counts: Vec<(usize, u32)> = by_tid.iter().map(|(t, n)| (*n, *t)).collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let observed: usize = counts.iter().map(|c| c.0).sum();
    let top2: usize = counts.iter().take(2).map(|c| c.0).sum();
    let concentrated = top2 as f64 >= MIN_GIL_TOP2_SHARE * observed as f64;
    // And either the loop stalled on it, or the holder keeps the GIL most of the recording
    // (a CPU-bound thread), not briefly per request (a worker thread serializing a response
    // delays the loop a few milliseconds at a time).
    let keeps = counts.first().is_some_and(|&(_, tid)| {
        group
            .iter()
            .find(|b| b.culprits.iter().any(|c| c.tid == tid))
            .is_some_and(|b| gil_share(rec, b.pid, tid) >= MIN_GIL_KEEPER_SHARE)
    });
    concentrated && (stalled || keeps)
}

/// What names a finding: its catalog entry, how it was chosen, the call site, the blocking
/// call and, for GIL contention, the holder.
struct Named<'c> {
    entry: &'c Entry,
    matched_by: MatchedBy,
    call_site: Option<CallSite>,
    blocking_call: Option<String>,
    culprit: Option<Culprit>,
}

/// Names a garbage-collection group; `None` when the catalog has no GC entry.
fn name_gc<'c>(rec: &Recording, catalog: &'c Catalog, group: &[&Block]) -> Option<Named<'c>> {
    let entry = catalog.get(GC_CATEGORY)?;
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
    Some(Named {
        entry,
        matched_by: MatchedBy::Fallback,
        call_site: None,
        blocking_call: Some(match generation {
            Some(g) => format!("garbage collection (generation {g})"),
            None => "garbage collection".to_owned(),
        }),
        culprit: None,
    })
}

/// Names a GIL-contention group by the thread seen holding the GIL most often.
fn name_gil<'c>(rec: &Recording, catalog: &'c Catalog, group: &[&Block]) -> Named<'c> {
    let mut holders: HashMap<&Holder, usize> = HashMap::new();
    let mut n = 0usize;
    for c in group.iter().flat_map(|b| &b.culprits) {
        *holders.entry(c).or_default() += 1;
        n += 1;
    }
    // Ties (one thread seen equally often at two stacks) go to the lowest key, so the
    // output does not depend on the hash map's order.
    let top = holders
        .into_iter()
        .max_by(|(ka, a), (kb, b)| a.cmp(b).then_with(|| kb.cmp(ka)));
    let culprit = top.map(|(h, count)| Culprit {
        name: h.name.clone(),
        tid: h.tid,
        call_site: user_or_leaf(rec, h.stack),
        share_pct: round1(100.0 * count as f64 / n.max(1) as f64),
    });
    let facts = SiteFacts {
        callees: Vec::new(),
        source: None,
        activity: Activity::GilWait,
    };
    let (entry, matched_by) = catalog.classify(&facts);
    Named {
        entry,
        matched_by,
        call_site: culprit.as_ref().and_then(|c| c.call_site.clone()),
        blocking_call: None,
        culprit,
    }
}

/// Names a callback or library-phase group from its representative stack.
fn name_callback<'c>(
    rec: &Recording,
    catalog: &'c Catalog,
    key: &SiteKey,
    group: &[&Block],
    stack: &[&FrameDef],
    anchor: usize,
    major: Activity,
) -> Named<'c> {
    let a = attribute(rec, catalog, stack, anchor.min(stack.len()), major);
    // In a library phase the call that dominates is the innermost library call, which moves
    // between samples: name the one that took the most time.
    let blocking_call = if matches!(key, SiteKey::Phase { .. }) {
        dominant_leaf(rec, group).or(a.blocking_call)
    } else {
        a.blocking_call
    };
    Named {
        entry: a.entry,
        matched_by: a.matched_by,
        call_site: a.call_site,
        blocking_call,
        culprit: None,
    }
}

/// The most frequent (stack id, anchor) of a group, weighted by time.
fn representative_stack(group: &[&Block]) -> (u32, usize) {
    let mut stack_w: HashMap<(u32, usize), f64> = HashMap::new();
    for b in group {
        for (s, (_, w)) in b.stacks.iter().zip(&b.activities) {
            *stack_w.entry(*s).or_default() += w;
        }
    }
    let (&key, _) = stack_w
        .iter()
        .max_by(|a, b| a.1.partial_cmp(b.1).unwrap().then(b.0.cmp(a.0)))
        .unwrap();
    key
}

/// The finding of a reported group; `None` only for a GC group without a catalog entry.
fn finding_of(
    rec: &Recording,
    catalog: &Catalog,
    key: &SiteKey,
    group: &[&Block],
    times: &GroupTimes,
    mix: &HashMap<Activity, f64>,
) -> Option<Finding> {
    let total_w: f64 = mix.values().sum();
    let major = majority(mix).unwrap();
    let mut state_mix = BTreeMap::new();
    for (a, w) in mix {
        *state_mix.entry(a.label()).or_insert(0.0) += round1(100.0 * w / total_w);
    }
    let (stack_id, anchor) = representative_stack(group);
    let stack: Vec<&FrameDef> = rec.stack(stack_id).collect();
    // Per-process blocked time.
    let mut by_pid: BTreeMap<u32, f64> = BTreeMap::new();
    for b in group {
        *by_pid.entry(b.pid).or_default() += b.duration_ms;
    }
    let pid = by_pid
        .iter()
        .max_by(|a, b| a.1.partial_cmp(b.1).unwrap())
        .map(|(p, _)| *p)
        .unwrap();
    let is_gil = matches!(key, SiteKey::Gil { .. });
    let named = match key {
        SiteKey::Gc => name_gc(rec, catalog, group)?,
        SiteKey::Gil { .. } => name_gil(rec, catalog, group),
        _ => name_callback(rec, catalog, key, group, &stack, anchor, major),
    };
    let wait_target = if matches!(major, Activity::Waiting(_)) {
        wait_target_of(rec, group)
    } else {
        None
    };
    // A pipe whose other end a child process holds: the loop waits for that child's output
    // (`Popen(...).stdout.readline()`), whatever the syscall looked like.
    let entry = match (&wait_target, named.entry.id.as_str()) {
        (Some(w), "unknown-blocking" | "thread-sync-wait") if w.starts_with(CHILD_PIPE_PREFIX) => {
            catalog.get(SUBPROCESS_CATEGORY).unwrap_or(named.entry)
        }
        _ => named.entry,
    };
    let waited_for = if major == Activity::Waiting(WaitReason::Lock) {
        waited_threads(rec, group)
    } else {
        Vec::new()
    };
    let mut fix = fix_of(entry);
    if waits_for_itself(&waited_for, named.blocking_call.as_deref(), major) {
        fix.summary = format!("{SELF_WAIT_NOTE} {}", fix.summary);
    }
    let mut durations = if times.stalls.is_empty() {
        times.short.clone()
    } else {
        times.stalls.clone()
    };
    sort_f64(&mut durations);
    let endpoint_fn = if is_gil {
        None
    } else {
        endpoint(rec, &stack, anchor.min(stack.len()))
    };
    let route = route_of(rec, group).or_else(|| {
        endpoint_fn
            .as_deref()
            .and_then(|e| route_by_endpoint(rec, e))
    });
    Some(Finding {
        category: entry.id.clone(),
        title: entry.title.clone(),
        kind: if times.stalls.is_empty() {
            FindingKind::RepeatedShortBlocks
        } else {
            FindingKind::Stalls
        },
        state: major.kind(),
        wait_reason: major.wait_reason(),
        state_mix,
        call_site: named.call_site,
        blocking_call: named.blocking_call,
        wait_target,
        matched_by: named.matched_by.kind(),
        endpoint: endpoint_fn,
        route,
        pid,
        pids: by_pid.keys().copied().collect(),
        thread: group[0].thread.clone(),
        culprit_thread: named.culprit,
        stalls: times.stalls.len(),
        blocked_ms: round1(times.blocked()),
        max_stall_ms: round1(durations.last().copied().unwrap_or(0.0)),
        p50_stall_ms: round1(percentile(&durations, 0.5)),
        p95_stall_ms: round1(percentile(&durations, 0.95)),
        short_blocks: times.short.len(),
        short_blocked_ms: round1(times.short_total()),
        share_pct: round1(times.share),
        stack: stack.iter().map(|f| frame_label(rec, f)).collect(),
        fix,
        waited_for,
    })
}

/// The share of a loop's GIL waits with a holder in sight that the two most frequent holder
/// threads must account for in a `gil-contention` finding.
pub(super) const MIN_GIL_TOP2_SHARE: f64 = 0.6;

/// Without a stall, the share of its own samples in which the top holder must hold the GIL
/// (a thread that keeps it, like a CPU-bound cruncher).
pub(super) const MIN_GIL_KEEPER_SHARE: f64 = 0.5;

/// The share of thread `tid`'s samples (in process `pid`) in which it held the GIL.
pub(super) fn gil_share(rec: &Recording, pid: u32, tid: u32) -> f64 {
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

/// A short block must hold the loop at least this long (CPU-starvation discounted) to count
/// towards a repeated-short-blocks finding.
pub const MIN_SHORT_BLOCK_MS: f64 = 15.0;

/// Packages whose coroutines the application awaits: blocking inside them is the cost of
/// the correct async API, not something the application can turn async.
pub(super) const ASYNC_FRAMEWORKS: &[&str] = &[
    "asyncio",
    "anyio",
    "uvloop",
    "starlette",
    "fastapi",
    "uvicorn",
];

/// The catalog id of a garbage-collection pause.
pub const GC_CATEGORY: &str = "gc-pause";

/// The oldest generation collected during a block: the highest generation whose collection
/// count grew from the process's last sample before the block to its first sample after it.
/// `gc_times` holds the process's samples with a GC state, in time order.
pub(super) fn gc_generation(gc_times: &[(u64, [u64; 3])], b: &Block) -> Option<usize> {
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
