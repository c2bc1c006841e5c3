//! The diagnosis: every event-loop stall, its call site, its kind and its fix.
//!
//! For each loop thread ([`crate::analysis::loops`]), consecutive busy samples at the same
//! call site form a *block* ([`blocks`]); its duration is measured from the samples'
//! timestamps (midpoints to the neighbouring samples, so no period is assumed). Blocks of at
//! least `threshold_ms` are *stalls*. Blocks are grouped into findings by call site and
//! catalog entry ([`findings`]); a call site whose short blocks (of two samples or more) add
//! up to at least `min_share_pct` of the window is a finding too. GIL waits of the loop are
//! attributed to the thread holding the GIL and its call site. Saturated worker pools are a
//! finding of their own ([`pool`]); the [`verdict`] sums the window up.
//!
//! The stages, in order: [`blocks::walk`] → [`findings::build_findings`] (+ [`pool`]) →
//! [`verdict::verdict`]; [`attribute`] names what a stack blocked in, [`shares`] splits every
//! thread's time, [`model`] holds the serialised types.

mod attribute;
mod blocks;
mod findings;
mod model;
mod pool;
mod shares;
mod verdict;

#[cfg(test)]
mod tests;

pub use attribute::{fix_of, SELF_WAIT_NOTE};
pub use blocks::coverage_ms;
pub use findings::{GC_CATEGORY, MIN_SHORT_BLOCK_MS};
pub use model::{
    CallSite, Culprit, Diagnosis, Finding, FindingKind, Fix, ThreadShares, Verdict, VerdictKind,
    WaitedThread,
};
pub use verdict::{NO_TRAFFIC_PCT, SATURATED_BUSY_PCT};

use crate::analysis::catalog::Catalog;
use crate::analysis::loops;
use crate::analysis::pools;
use crate::analysis::stats::pct;
use crate::recording::Recording;
use blocks::SiteKey;
use std::collections::HashMap;

/// Diagnosis options.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// A block at least this long is a stall, ms.
    pub threshold_ms: f64,
    /// Short blocks at one call site adding up to this share of the window are a finding,
    /// percent.
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

/// Diagnoses a recording: pure, no I/O; the same recording, catalog and options always give
/// the same diagnosis.
pub fn diagnose(rec: &Recording, catalog: &Catalog, opts: &Options) -> Diagnosis {
    let loops_found = loops::find_loop_threads(rec);
    let mut shares = shares::Shares::default();
    let walk = blocks::walk(rec, catalog, &loops_found, &mut shares);
    shares.add_other_threads(rec, &loops_found);

    let (mut findings, keys) =
        findings::build_findings(rec, catalog, opts, &walk.blocks, &walk.window_by_pid);
    let reported: HashMap<&SiteKey, usize> = keys.iter().enumerate().map(|(i, k)| (k, i)).collect();
    // After the loop's own findings: a saturated worker pool does not block the loop.
    findings.extend(pool::pool_finding(rec, catalog, opts));
    // The loop samples inside reported stalls (for the "event loop blocked" flame graph), with
    // the finding each belongs to.
    let stall_samples: HashMap<(u32, u32, u64), usize> = walk
        .blocks
        .iter()
        .filter(|b| b.is_stall(opts.threshold_ms) && !matches!(b.key, SiteKey::Gil { .. }))
        .filter_map(|b| Some((b, *reported.get(&b.key)?)))
        .flat_map(|(b, i)| b.times.iter().map(move |t| ((b.pid, b.tid, *t), i)))
        .collect();
    // Blocked share and worst stall count only what was reported as a finding.
    let blocking = findings
        .iter()
        .filter(|f| f.category != verdict::GIL_CATEGORY && f.category != pools::CATEGORY);
    let stalled_ms: f64 = blocking.clone().map(|f| f.blocked_ms).sum::<f64>() + 0.0;
    let worst = blocking
        .filter(|f| f.stalls > 0)
        .map(|f| f.max_stall_ms)
        .fold(0.0, f64::max);
    let cpu = verdict::process_cpu_pct(rec, &loops_found);
    let busy_pct = pct(walk.busy_ms, walk.window_ms);
    let requests = crate::analysis::tasks::request_waits(rec, catalog, busy_pct);
    let measures = verdict::Measures {
        blocked_pct: pct(stalled_ms, walk.window_ms),
        busy_pct,
        gil_pct: pct(walk.gil_ms, walk.window_ms),
        starved_pct: pct(walk.starved_ms, walk.window_ms),
        cpu_pct: cpu,
        worst_ms: worst,
        // Requests in flight in the task snapshots are traffic even when they all wait.
        traffic: requests.max_in_flight > 0
            || verdict::served_anything(rec, &loops_found, busy_pct, cpu),
    };
    let mut verdict = verdict::verdict(&findings, &measures, &loops_found, opts.threshold_ms);
    verdict::requests_queued(&mut verdict, &requests);
    let quality = crate::analysis::quality::quality(rec);
    verdict::distrust(&mut verdict, &quality);
    Diagnosis {
        quality,
        verdict,
        findings,
        loops: loops_found,
        threads: shares.finish(rec),
        requests,
        window_s: walk.window_ms / 1000.0,
        threshold_ms: opts.threshold_ms,
        min_share_pct: opts.min_share_pct,
        stall_samples,
    }
}
