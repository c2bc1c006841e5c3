//! The finding for exhausted AnyIO worker-thread pools ([`crate::analysis::pools`]): `def`
//! routes and `run_in_threadpool` calls queued while every worker was busy.

use super::attribute::{
    attribute, endpoint, fix_of, frame_label, heaviest_wait, route_by_endpoint,
};
use super::model::{Finding, FindingKind};
use super::Options;
use crate::analysis::catalog::Catalog;
use crate::analysis::loops::{Activity, WaitReason};
use crate::analysis::pools;
use crate::analysis::stats::{percentile, round1, sort_f64};
use crate::recording::{FrameDef, Recording};
use std::collections::BTreeMap;

/// The finding for exhausted AnyIO worker-thread pools ([`pools`]), all processes together:
/// reported when the pools were saturated at least `threshold_ms` in all and for at least
/// `min_share_pct` of the processes' time. Its figures are saturation, not loop stalls:
/// `stalls` counts saturated episodes, `blocked_ms` their time.
pub(super) fn pool_finding(rec: &Recording, catalog: &Catalog, opts: &Options) -> Option<Finding> {
    let found = pools::find(rec, &crate::analysis::tasks::limiter_queued(rec, catalog));
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
    sort_f64(&mut durations);
    let mut mix: BTreeMap<String, f64> = BTreeMap::new();
    let total_w: f64 = sats.iter().flat_map(|s| &s.busy).map(|b| b.3).sum();
    for (_, _, a, w) in sats.iter().flat_map(|s| &s.busy) {
        *mix.entry(a.label()).or_default() += 100.0 * w / total_w.max(1e-9);
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
    if activity == Activity::Waiting(WaitReason::Lock) {
        fix.summary.push_str(
            " Every worker waits on a lock or pool: if what holds it needs a worker thread to give it back (a sync dependency whose teardown returns a database connection), the service is deadlocked until a timeout fires.",
        );
    }
    Some(Finding {
        category: entry.id.clone(),
        title: entry.title.clone(),
        kind: FindingKind::PoolSaturated,
        state: activity.kind(),
        wait_reason: activity.wait_reason(),
        state_mix: mix,
        call_site: inner.call_site,
        blocking_call: inner.blocking_call,
        wait_target: heaviest_wait(rec, sats.iter().flat_map(|s| s.waits.iter().copied())),
        waited_for: Vec::new(),
        matched_by: inner.matched_by.kind(),
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
