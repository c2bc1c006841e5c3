//! The verdict: one kind and one plain sentence for the window, from the top finding and the
//! loop's measures (blocked, busy, GIL-wait and CPU-starved shares, process CPU, traffic).

use super::findings::GC_CATEGORY;
use super::model::{Finding, FindingKind, Verdict, VerdictKind};
use crate::analysis::catalog::AwaitKind;
use crate::analysis::loops::{ActivityKind, LoopThread};
use crate::analysis::pools;
use crate::analysis::probes;
use crate::analysis::quality::Quality;
use crate::analysis::stats::round1;
use crate::analysis::tasks::RequestWaits;
use crate::recording::frames;
use crate::recording::{Recording, Sample};
use std::collections::{HashMap, HashSet};

/// The catalog id of GIL contention.
pub(super) const GIL_CATEGORY: &str = "gil-contention";

pub(super) fn process_cpu_pct(rec: &Recording, loops_found: &[LoopThread]) -> f64 {
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

/// Whether a busy loop's findings leave it a capacity state: no stall anywhere, only
/// repeated short blocks of ordinary call sites (no GIL, pool or GC finding), which together
/// explain less than a quarter of the busy time (a route of 1 ms requests at a high rate,
/// where a few consecutive samples of one request make a 2% short-block share).
pub(super) fn saturated_by_rate(findings: &[Finding], worst_ms: f64, busy_pct: f64) -> bool {
    worst_ms == 0.0
        && findings.iter().all(|f| {
            f.kind == FindingKind::RepeatedShortBlocks
                && !matches!(
                    f.category.as_str(),
                    GIL_CATEGORY | GC_CATEGORY | pools::CATEGORY
                )
        })
        && findings.iter().map(|f| f.share_pct).sum::<f64>() < busy_pct / 4.0
}

/// The loop-busy share (percent of the loop time) from which a loop with no finding is
/// `loop-saturated` rather than `healthy`.
pub const SATURATED_BUSY_PCT: f64 = 80.0;

/// The window's figures the verdict is made of.
pub(super) struct Measures {
    pub(super) blocked_pct: f64,
    pub(super) busy_pct: f64,
    pub(super) gil_pct: f64,
    pub(super) starved_pct: f64,
    pub(super) cpu_pct: f64,
    pub(super) worst_ms: f64,
    /// Whether the window shows any request being served ([`served_anything`]).
    pub(super) traffic: bool,
}

/// The loop-busy share and the process CPU (percent) under which a window with no other sign
/// of a request is said to have seen no traffic. A light load of fast requests (100/s of a
/// route awaiting `asyncio.sleep`) keeps the loop under 1% busy but costs its process about
/// 5% of a CPU; an idle uvicorn process uses 0.2–0.3% (its timers, and loopprof's stops).
pub const NO_TRAFFIC_PCT: f64 = 1.0;

/// The wake-ups per second of an event loop, beyond loopprof's own stops, from which a
/// window counts as serving requests. Measured on an idle uvicorn: about 10/s (its own 0.1 s
/// tick); 83 requests/s of a route awaiting `asyncio.sleep` add about 85/s; a `--probe` every
/// 200 ms adds about 5/s.
pub const NO_TRAFFIC_WAKEUPS_PER_S: f64 = 30.0;

/// The loop-busy share (percent) from which a window counts as serving requests when the
/// loop's wake-ups are known (they are the finer signal).
pub const NO_TRAFFIC_BUSY_PCT: f64 = 5.0;

/// Schedule-ins each of loopprof's stops costs a sleeping thread: the interrupt that stops
/// it, then the restart of the call it was in.
const RUNS_PER_STOP: f64 = 2.0;

/// The loop threads' wake-ups per second beyond loopprof's stops, from their schedstat
/// counts (recorded since loopprof 0.1's `druns`); `None` when the recording has none. A
/// stop's schedule-ins show in the thread's next sample, so the stops counted are those of
/// every sample but the last.
fn loop_wakeups_per_s(rec: &Recording, loops: &[LoopThread]) -> Option<f64> {
    let (mut wakeups, mut secs) = (0.0, 0.0);
    for lt in loops {
        let seen: Vec<(u64, u64, bool)> = rec
            .samples
            .iter()
            .filter(|s| s.pid == lt.pid)
            .filter_map(|s| {
                let t = s.threads.iter().find(|t| t.tid == lt.tid)?;
                Some((s.t_us, t.runs?, t.stopped))
            })
            .collect();
        if let (Some(first), Some(last)) = (seen.first(), seen.last()) {
            if last.0 > first.0 {
                let stopped = seen[..seen.len() - 1].iter().filter(|s| s.2).count();
                let stops = stopped as f64 * RUNS_PER_STOP;
                wakeups += (last.1.saturating_sub(first.1) as f64 - stops).max(0.0);
                secs += (last.0 - first.0) as f64 / 1e6;
            }
        }
    }
    (secs > 0.0).then(|| wakeups / secs)
}

/// Whether the recording shows any request being served: a loop busy at least
/// [`NO_TRAFFIC_PCT`] of its time, a loop woken at least [`NO_TRAFFIC_WAKEUPS_PER_S`] times
/// a second beyond loopprof's stops (or, for recordings without wake-up counts, processes
/// using [`NO_TRAFFIC_PCT`] of a CPU), a thread sample with a route (format 4), or a thread
/// other than a loop running or waiting in application code (a `def` route on a worker
/// thread). An idle server's recording has none of these. Process CPU is not used when
/// wake-ups are known: an idle uvicorn's timers cost it 0.3% of a CPU on one machine and 2.6%
/// on another (slow wake-ups), while a count of wake-ups does not depend on their cost.
pub(super) fn served_anything(
    rec: &Recording,
    loops: &[LoopThread],
    busy_pct: f64,
    cpu_pct: f64,
) -> bool {
    let wakeups = loop_wakeups_per_s(rec, loops);
    // A loop's own timers cost time too, more on a machine with slow wake-ups (1.2% of an
    // idle uvicorn's time on one): with wake-ups counted, only a clearly busy loop counts.
    let busy_limit = if wakeups.is_some() {
        NO_TRAFFIC_BUSY_PCT
    } else {
        NO_TRAFFIC_PCT
    };
    if busy_pct >= busy_limit {
        return true;
    }
    match wakeups {
        Some(w) if w >= NO_TRAFFIC_WAKEUPS_PER_S => return true,
        Some(_) => {}
        None if cpu_pct >= NO_TRAFFIC_PCT => return true,
        None => {}
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

/// The verdict of a window.
pub(super) fn verdict(
    findings: &[Finding],
    m: &Measures,
    loops_found: &[LoopThread],
    threshold_ms: f64,
) -> Verdict {
    let (kind, summary) = if loops_found.is_empty() {
        (
            VerdictKind::NoEventLoop,
            "No asyncio/uvloop event loop was found in the recorded processes.".to_owned(),
        )
    } else if m.busy_pct >= SATURATED_BUSY_PCT
        && saturated_by_rate(findings, m.worst_ms, m.busy_pct)
    {
        // Many cheap callbacks that fill the loop: a capacity state, not a call site to fix.
        // Short-block findings that explain little of the busy time stay listed.
        (
            VerdictKind::LoopSaturated,
            saturated_summary(findings, m, threshold_ms),
        )
    } else if findings.is_empty() {
        (VerdictKind::Healthy, healthy_summary(m, threshold_ms))
    } else {
        let top = &findings[0];
        let kind = kind_of(top);
        (kind, finding_summary(kind, findings, m, threshold_ms))
    };
    Verdict {
        kind,
        summary,
        loop_blocked_pct: round1(m.blocked_pct),
        loop_busy_pct: round1(m.busy_pct),
        gil_wait_pct: round1(m.gil_pct),
        cpu_starved_pct: round1(m.starved_pct),
        process_cpu_pct: m.cpu_pct,
        worst_stall_ms: round1(m.worst_ms),
        no_traffic: !m.traffic,
    }
}

/// A healthy loop with requests piled up on an awaited resource is `requests-queued`: the
/// top pile-up says where (a loop finding, when there is one, stays the verdict).
pub(super) fn requests_queued(verdict: &mut Verdict, requests: &RequestWaits) {
    if verdict.kind != VerdictKind::Healthy {
        return;
    }
    let Some(top) = requests.findings.first() else {
        return;
    };
    let p = &top.place;
    let site = p
        .site
        .as_ref()
        .map(|c| {
            format!(
                " at {}:{} in {}",
                frames::short_file(&c.file),
                c.line,
                c.function
            )
        })
        .unwrap_or_default();
    let route = p
        .route
        .as_deref()
        .map(|r| format!(" of `{r}`"))
        .unwrap_or_default();
    verdict.kind = VerdictKind::RequestsQueued;
    verdict.summary = if top.place.kind == AwaitKind::Receive {
        format!(
            "A request{route} waited {:.1} s for a request body that did not come (`{}`){site}, while the event loop was busy {:.0}% of the time.",
            p.max_wait_ms / 1000.0,
            p.resource,
            verdict.loop_busy_pct,
        )
    } else {
        format!(
            "Requests queued while the event loop idled (busy {:.0}% of the time): on average {:.1} requests{route} (at most {}) waited in `{}`{site}, of {:.1} in flight; one waited at least {:.1} s.",
            verdict.loop_busy_pct,
            p.mean_tasks,
            p.max_tasks,
            p.resource,
            top.mean_in_flight,
            p.max_wait_ms / 1000.0,
        )
    };
}

/// Replaces the verdict of a recording that cannot be trusted: nothing measured on a
/// recording that is mostly failures (or of a frozen target) can carry a verdict; it says
/// why instead. Untrusted recordings list a fatal problem first.
pub(super) fn distrust(verdict: &mut Verdict, quality: &Quality) {
    if quality.trusted {
        return;
    }
    let why = quality.problems.first().map(String::as_str).unwrap_or("?");
    verdict.summary = format!(
        "This recording cannot be trusted: {}. Its figures are shown but no verdict is drawn from them; record again{}.",
        why,
        if quality.imported.is_some() {
            " with loopprof for thread states, system calls and timing"
        } else if quality.frozen_s > 0.0 {
            " once the target runs"
        } else {
            " (see `loopprof inspect` for the failed ticks)"
        }
    );
    verdict.kind = VerdictKind::Inconclusive;
}

/// The verdict a top finding gives.
fn kind_of(top: &Finding) -> VerdictKind {
    match top.category.as_str() {
        GIL_CATEGORY => VerdictKind::GilContention,
        pools::CATEGORY => VerdictKind::ThreadPoolExhausted,
        GC_CATEGORY => VerdictKind::GcPause,
        _ if top.state == ActivityKind::OnCpu => VerdictKind::CpuBoundLoop,
        _ => VerdictKind::LoopBlocked,
    }
}

fn saturated_summary(findings: &[Finding], m: &Measures, threshold_ms: f64) -> String {
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
    format!(
        "The event loop was busy {:.0}% of the time in short callbacks, none of {threshold_ms:.0} ms or more: it is saturated by the request rate, not blocked by one call site; add worker processes or make the most frequent requests cheaper{}{}.",
        m.busy_pct,
        if m.starved_pct >= 20.0 {
            format!(" (it also waited for a CPU {:.0}% of the time: the machine or its CPU limit is saturated too)", m.starved_pct)
        } else {
            String::new()
        },
        top.unwrap_or_default(),
    )
}

fn healthy_summary(m: &Measures, threshold_ms: f64) -> String {
    if !m.traffic {
        format!(
            "No request was seen being served: the event loop was idle {:.0}% of the time and the server used {:.1}% of a CPU, so this window probably saw no traffic. A recording of an idle server cannot show what slows it down; record while the problem happens (under the load that shows it), or add `--probe URL` to measure the server's answers.",
            100.0 - m.busy_pct,
            m.cpu_pct
        )
    } else {
        format!(
            "The event loop was never blocked for {threshold_ms:.0} ms or more; it was busy {:.0}% of the time in short callbacks{}.",
            m.busy_pct,
            if m.starved_pct >= 5.0 {
                format!(", and waited for a CPU {:.0}% of the time (the machine or its CPU limit was saturated)", m.starved_pct)
            } else {
                String::new()
            }
        )
    }
}

/// The sentence for a window with findings, by the verdict they gave.
fn finding_summary(
    kind: VerdictKind,
    findings: &[Finding],
    m: &Measures,
    threshold_ms: f64,
) -> String {
    let top = &findings[0];
    match kind {
        VerdictKind::GcPause => gc_summary(top, m, threshold_ms),
        VerdictKind::ThreadPoolExhausted => format!(
            "Every worker thread was busy {:.0}% of the time ({}): `def` routes and `run_in_threadpool` calls queued while the event loop idled; the workers waited in {}{}{}.",
            top.share_pct,
            top.thread,
            top.blocking_call.as_deref().map(|b| format!("`{b}`")).unwrap_or_else(|| "their calls".into()),
            top.endpoint.as_deref().map(|e| format!(" in `{e}`")).unwrap_or_default(),
            at(top),
        ),
        VerdictKind::GilContention => {
            let c = top.culprit_thread.as_ref();
            format!(
                "The event loop waited for the GIL {:.0}% of the time while {} held it{}.",
                m.gil_pct,
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
        }
        _ => blocked_summary(findings, m, threshold_ms),
    }
}

/// ` at FILE:LINE` of a finding's call site, or nothing.
fn at(f: &Finding) -> String {
    f.call_site
        .as_ref()
        .map(|c| format!(" at {}:{}", frames::short_file(&c.file), c.line))
        .unwrap_or_default()
}

fn gc_summary(top: &Finding, m: &Measures, threshold_ms: f64) -> String {
    let what = top.blocking_call.as_deref().unwrap_or("garbage collection");
    let serving = top
        .route
        .as_deref()
        .or(top.endpoint.as_deref())
        .map(|e| format!(", triggered while serving `{e}`"))
        .unwrap_or_default();
    if top.stalls == 0 {
        format!(
            "No stall reached {threshold_ms:.0} ms, but garbage collection held the event loop {:.0}% of the time: {} pause{} of up to {:.0} ms ({what}){serving}.",
            top.share_pct,
            top.short_blocks,
            if top.short_blocks == 1 { "" } else { "s" },
            top.max_stall_ms,
        )
    } else {
        let pauses = top.stalls.max(top.short_blocks);
        format!(
            "The event loop was blocked {:.0}% of the time, most by garbage collection: {} pause{} of up to {:.0} ms ({what}){serving}.",
            m.blocked_pct,
            pauses,
            if pauses == 1 { "" } else { "s" },
            top.max_stall_ms,
        )
    }
}

/// The sentence of a loop blocked (or kept on CPU) by call sites.
fn blocked_summary(findings: &[Finding], m: &Measures, threshold_ms: f64) -> String {
    let top = &findings[0];
    let sites = findings
        .iter()
        .filter(|f| f.category != GIL_CATEGORY)
        .count();
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
    let place = top
        .endpoint
        .as_deref()
        .or(top.call_site.as_ref().map(|c| c.function.as_str()))
        .unwrap_or("?");
    let plural = if sites == 1 { "" } else { "s" };
    // `in endpoint at FILE:LINE` reads as if the line were the endpoint's: name the call
    // site's own function when it is another one (a helper the endpoint called).
    let at = match &top.call_site {
        Some(c) if c.function != place && !c.function.starts_with(&format!("{place}.")) => {
            format!("{} in {}", at(top), c.function)
        }
        _ => at(top),
    };
    if m.worst_ms == 0.0 {
        // Only repeated short blocks: say so, never "blocked 0% ... worst stall 0 ms".
        format!(
            "No stall reached {threshold_ms:.0} ms, but short blocks at {sites} call site{plural} held the event loop; the largest share, {:.0}% of the loop's time in blocks of up to {:.0} ms, in `{place}`{}{served}{what}.",
            top.share_pct,
            top.max_stall_ms,
            at,
        )
    } else {
        format!(
            "The event loop was blocked {:.0}% of the time; {sites} call site{plural} did it; worst stall {:.0} ms in `{place}`{}{served}{what}.",
            m.blocked_pct,
            m.worst_ms,
            at,
        )
    }
}
