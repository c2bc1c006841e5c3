//! `summary.json`: the diagnosis as a versioned, documented JSON contract.
//!
//! The shape is described in `docs/json-summary.md`; bump [`SCHEMA_VERSION`] when a field
//! changes meaning or disappears (adding fields does not need a bump).

use crate::analysis::diagnose::{Diagnosis, Finding, ThreadShares, Verdict};
use crate::analysis::diff::Diff;
use crate::analysis::gates::GateResult;
use crate::analysis::loops::LoopKind;
use crate::recording::Recording;
use serde::Serialize;

/// The version of the summary schema.
pub const SCHEMA_VERSION: u32 = 1;

/// The top-level document.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    /// Schema version.
    pub schema_version: u32,
    /// loopprof version that wrote it.
    pub loopprof_version: &'static str,
    /// What was recorded.
    pub recording: RecordingInfo,
    /// The verdict.
    pub verdict: &'a Verdict,
    /// How far the recording can be trusted.
    pub quality: &'a crate::analysis::quality::Quality,
    /// Findings, most blocked time first.
    pub findings: &'a [Finding],
    /// Every thread's time split.
    pub threads: &'a [ThreadShares],
    /// `--probe` results per URL (empty when not probed).
    pub probes: Vec<crate::analysis::probes::ProbeSummary>,
    /// Where requests waited, from the asyncio task snapshots (absent when tasks were not
    /// read: `--no-tasks`, a recording older than format 6, a Python whose tasks are not
    /// read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<&'a crate::analysis::tasks::RequestWaits>,
    /// Analysis settings.
    pub analysis: AnalysisInfo,
    /// `--fail-on` gates and their outcome (empty when none were given).
    pub gates: &'a [GateResult],
}

/// Recording facts.
#[derive(Debug, Serialize)]
pub struct RecordingInfo {
    /// UTC start, RFC 3339.
    pub started_at: String,
    /// Duration, seconds.
    pub duration_s: f64,
    /// Requested rate.
    pub rate_hz: f64,
    /// Samples (process ticks).
    pub samples: usize,
    /// Failed samples.
    pub errors: usize,
    /// Why it ended (`null` when cut short).
    pub end_reason: Option<crate::recording::EndReason>,
    /// Warnings from reading it.
    pub warnings: Vec<String>,
    /// The processes.
    pub processes: Vec<ProcessSummary>,
}

/// One process.
#[derive(Debug, Serialize)]
pub struct ProcessSummary {
    /// Pid.
    pub pid: u32,
    /// Parent pid.
    pub ppid: u32,
    /// Command line.
    pub cmdline: Vec<String>,
    /// Python version.
    pub python_version: String,
    /// `asyncio`, `uvloop`, or `null` when it runs no event loop.
    #[serde(rename = "loop")]
    pub loop_kind: Option<LoopKind>,
}

/// Settings used.
#[derive(Debug, Serialize)]
pub struct AnalysisInfo {
    /// Stall threshold, ms.
    pub threshold_ms: f64,
    /// Share for repeated short blocks, percent.
    pub min_share_pct: f64,
    /// Loop window analysed, seconds.
    pub window_s: f64,
}

/// Builds the summary.
pub fn summary<'a>(rec: &Recording, d: &'a Diagnosis, gates: &'a [GateResult]) -> Summary<'a> {
    Summary {
        schema_version: SCHEMA_VERSION,
        loopprof_version: crate::VERSION,
        recording: RecordingInfo {
            started_at: rec.header.started_at.clone(),
            duration_s: rec.duration_us() as f64 / 1e6,
            rate_hz: rec.header.rate_hz,
            samples: rec.samples.len(),
            errors: rec.errors.len(),
            end_reason: rec.end.as_ref().map(|e| e.reason),
            warnings: rec.warnings.clone(),
            processes: rec
                .processes
                .iter()
                .map(|p| ProcessSummary {
                    pid: p.pid,
                    ppid: p.ppid,
                    cmdline: p.cmdline.clone(),
                    python_version: p.python_version.clone(),
                    loop_kind: d.loops.iter().find(|l| l.pid == p.pid).map(|l| l.kind),
                })
                .collect(),
        },
        verdict: &d.verdict,
        quality: &d.quality,
        findings: &d.findings,
        threads: &d.threads,
        probes: crate::analysis::probes::summarize(rec),
        requests: (d.requests.snapshots > 0).then_some(&d.requests),
        analysis: AnalysisInfo {
            threshold_ms: d.threshold_ms,
            min_share_pct: d.min_share_pct,
            window_s: d.window_s,
        },
        gates,
    }
}

/// The summary as pretty JSON.
pub fn to_string(rec: &Recording, d: &Diagnosis, gates: &[GateResult]) -> String {
    serde_json::to_string_pretty(&summary(rec, d, gates)).expect("summary serialises")
}

/// The version of the `diff.json` schema.
pub const DIFF_SCHEMA_VERSION: u32 = 1;

/// `diff.json`: the comparison of two recordings (`docs/json-summary.md`).
#[derive(Debug, Serialize)]
pub struct DiffDoc<'a> {
    /// Schema version of `diff.json`.
    pub schema_version: u32,
    /// Always `"diff"` (tells it from `summary.json`).
    pub kind: &'static str,
    /// loopprof version that wrote it.
    pub loopprof_version: &'static str,
    /// The comparison.
    #[serde(flatten)]
    pub diff: &'a Diff,
    /// Analysis settings used for both recordings.
    pub analysis: DiffAnalysis,
    /// `--fail-on` gates and their outcome.
    pub gates: &'a [GateResult],
}

/// Settings of a diff.
#[derive(Debug, Serialize)]
pub struct DiffAnalysis {
    /// Stall threshold, ms.
    pub threshold_ms: f64,
    /// Share for repeated short blocks, percent.
    pub min_share_pct: f64,
}

/// `diff.json` as pretty JSON.
pub fn diff_to_string(diff: &Diff, analysis: DiffAnalysis, gates: &[GateResult]) -> String {
    serde_json::to_string_pretty(&DiffDoc {
        schema_version: DIFF_SCHEMA_VERSION,
        kind: "diff",
        loopprof_version: crate::VERSION,
        diff,
        analysis,
        gates,
    })
    .expect("diff serialises")
}

/// `loopprof inspect --json`: the overview as pretty JSON.
pub fn overview_to_string(o: &crate::analysis::overview::Overview) -> String {
    serde_json::to_string_pretty(o).expect("overview serialises")
}

/// `loopprof dump --json`: the dump as pretty JSON.
pub fn dump_to_string(d: &crate::analysis::dump::Dump) -> String {
    serde_json::to_string_pretty(d).expect("dump serialises")
}
