//! `--fail-on` gates: a small expression language over the diagnosis (and the diff), parsed
//! before any work starts and evaluated on the results.
//!
//! A gate is `METRIC OP VALUE` (`loop_blocked_pct > 5`, `max_stall_ms >= 200ms`,
//! `category == executor-shutdown-wait`, `verdict != healthy`) or a flag (`regression`),
//! combined with `and`, `or`, `not` and parentheses (`and` binds tighter than `or`). Several
//! `--fail-on` flags fail when any one of them holds. Every metric is described once, in
//! [`METRICS`]: its kind, its unit, where it applies (`record`/`report`, or only `diff`) and
//! what it means; `docs/cli.md` documents the same table. Text values are checked against the
//! known categories and verdicts at parse time, so a typo is an error and not a gate that can
//! never fail. A metric that was not measured (probe latency without `--probe`) makes its gate
//! fail with a note saying so: a CI gate must not pass because it had nothing to look at.

mod eval;
mod parse;
#[cfg(test)]
mod tests;

pub use eval::{any_failed, evaluate, facts_of, name_list};
pub use parse::{parse, parse_all};

use crate::analysis::diagnose::VerdictKind;
use std::collections::BTreeMap;
use std::fmt;

/// Where a metric can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `record` and `report` (and `diff`, where it means the AFTER recording).
    Report,
    /// Only `diff`.
    Diff,
}

/// What a metric holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A number, compared with `> >= < <= == !=`.
    Number,
    /// A set of names (one or several), compared with `==` (any is) and `!=` (none is).
    Names,
    /// True or false, used alone (`regression`, `not regression`).
    Flag,
}

/// One metric a gate can use.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Its name in expressions.
    pub name: &'static str,
    /// Its kind.
    pub kind: Kind,
    /// Where it applies.
    pub scope: Scope,
    /// Unit suffix accepted after numbers (`ms`, `%`), empty for none.
    pub unit: &'static str,
    /// What it means.
    pub doc: &'static str,
}

/// Every metric gates can use (the documented table of `docs/cli.md`).
pub const METRICS: &[Metric] = &[
    Metric { name: "loop_blocked_pct", kind: Kind::Number, scope: Scope::Report, unit: "%", doc: "share of the event loop's time inside stalls (blocks of at least the threshold); repeated short blocks are not in it: gate them with findings or category" },
    Metric { name: "loop_busy_pct", kind: Kind::Number, scope: Scope::Report, unit: "%", doc: "share of the event loop's time not idle in its selector" },
    Metric { name: "gil_wait_pct", kind: Kind::Number, scope: Scope::Report, unit: "%", doc: "share of the event loop's time waiting for the GIL" },
    Metric { name: "cpu_starved_pct", kind: Kind::Number, scope: Scope::Report, unit: "%", doc: "share of the event loop's time waiting for a CPU (runnable itself, or waiting for the GIL held by a thread that is)" },
    Metric { name: "process_cpu_pct", kind: Kind::Number, scope: Scope::Report, unit: "%", doc: "CPU of the recorded processes, percent of one core" },
    Metric { name: "max_stall_ms", kind: Kind::Number, scope: Scope::Report, unit: "ms", doc: "the longest stall of the event loop" },
    Metric { name: "stalls", kind: Kind::Number, scope: Scope::Report, unit: "", doc: "number of stalls (blocks at or above the threshold)" },
    Metric { name: "stalls_per_min", kind: Kind::Number, scope: Scope::Report, unit: "", doc: "stalls per minute of event-loop time" },
    Metric { name: "findings", kind: Kind::Number, scope: Scope::Report, unit: "", doc: "number of findings (blocking call sites, GIL culprits)" },
    Metric { name: "probe_p99_ms", kind: Kind::Number, scope: Scope::Report, unit: "ms", doc: "99th percentile `--probe` latency (worst probed URL); not measured without --probe" },
    Metric { name: "probe_max_ms", kind: Kind::Number, scope: Scope::Report, unit: "ms", doc: "longest `--probe` latency, timeouts included; not measured without --probe" },
    Metric { name: "probe_timeouts", kind: Kind::Number, scope: Scope::Report, unit: "", doc: "`--probe` requests that timed out; not measured without --probe" },
    Metric { name: "queued_requests", kind: Kind::Number, scope: Scope::Report, unit: "", doc: "requests waiting on average at the largest pile-up on an awaited resource (a pool, a lock, the thread limiter; 0 without one); not measured when asyncio tasks were not read" },
    Metric { name: "category", kind: Kind::Names, scope: Scope::Report, unit: "", doc: "the catalog categories of the findings, where-requests-wait findings included (`==`: any finding has it)" },
    Metric { name: "route", kind: Kind::Names, scope: Scope::Report, unit: "", doc: "the HTTP routes of the findings, quoted: `route == \"GET /metrics\"` (`==`: any finding has it; any route may be named)" },
    Metric { name: "verdict", kind: Kind::Names, scope: Scope::Report, unit: "", doc: "the verdict: healthy, loop-blocked, cpu-bound-loop, gil-contention, thread-pool-exhausted, gc-pause, loop-saturated, requests-queued, no-event-loop, inconclusive (a recording that cannot be trusted)" },
    Metric { name: "failed_ticks_pct", kind: Kind::Number, scope: Scope::Report, unit: "%", doc: "ticks that could not be read, percent of all ticks (recording quality)" },
    Metric { name: "lost_threads_pct", kind: Kind::Number, scope: Scope::Report, unit: "%", doc: "thread samples that could not be read, percent (recording quality)" },
    Metric { name: "regression", kind: Kind::Flag, scope: Scope::Diff, unit: "", doc: "AFTER is worse than BEFORE: a new or worse finding, a verdict that left healthy, or the loop blocked clearly more (see docs/cli.md)" },
    Metric { name: "new_findings", kind: Kind::Number, scope: Scope::Diff, unit: "", doc: "findings only in AFTER" },
    Metric { name: "worse_findings", kind: Kind::Number, scope: Scope::Diff, unit: "", doc: "findings in both that got clearly worse" },
    Metric { name: "fixed_findings", kind: Kind::Number, scope: Scope::Diff, unit: "", doc: "findings only in BEFORE" },
    Metric { name: "new_category", kind: Kind::Names, scope: Scope::Diff, unit: "", doc: "the categories of new or worse findings" },
    Metric { name: "new_route", kind: Kind::Names, scope: Scope::Diff, unit: "", doc: "the HTTP routes of new or worse findings, quoted" },
    Metric { name: "delta_loop_blocked_pct", kind: Kind::Number, scope: Scope::Diff, unit: "%", doc: "AFTER minus BEFORE loop_blocked_pct, percentage points" },
    Metric { name: "delta_max_stall_ms", kind: Kind::Number, scope: Scope::Diff, unit: "ms", doc: "AFTER minus BEFORE max_stall_ms" },
    Metric { name: "delta_process_cpu_pct", kind: Kind::Number, scope: Scope::Diff, unit: "%", doc: "AFTER minus BEFORE process_cpu_pct, percentage points" },
];

/// The name metrics whose values are the application's routes (not checked against a list).
const ROUTE_METRICS: &[&str] = &["route", "new_route"];

/// The verdict kinds `verdict == ...` accepts.
pub const VERDICTS: [&str; VerdictKind::ALL.len()] = {
    let mut names = [""; VerdictKind::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = VerdictKind::ALL[i].as_str();
        i += 1;
    }
    names
};

/// A gate expression that does not parse, or does not apply.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("--fail-on '{expr}': {message}")]
pub struct GateError {
    /// The expression as given.
    pub expr: String,
    /// What is wrong and how to write it.
    pub message: String,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==` (also `=`)
    Eq,
    /// `!=`
    Ne,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        })
    }
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `metric OP number`.
    Num(&'static str, Op, f64),
    /// `metric == name` / `metric != name`.
    Name(&'static str, Op, String),
    /// A flag metric.
    Flag(&'static str),
    /// `not e`.
    Not(Box<Expr>),
    /// `a and b and ...`.
    And(Vec<Expr>),
    /// `a or b or ...`.
    Or(Vec<Expr>),
}

/// One `--fail-on` expression, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    /// The text as given.
    pub source: String,
    /// The expression.
    pub expr: Expr,
}

/// The measured values gates are evaluated against. A metric missing here was not measured.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Numbers by metric name.
    pub numbers: BTreeMap<&'static str, f64>,
    /// Name sets by metric name.
    pub names: BTreeMap<&'static str, Vec<String>>,
    /// Flags by metric name, with the reason when true.
    pub flags: BTreeMap<&'static str, (bool, String)>,
    /// Why nothing was measured (a recording that cannot be trusted): then every gate fails
    /// with this reason.
    pub untrusted: Option<String>,
}

/// The outcome of one gate.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GateResult {
    /// The expression as given.
    pub gate: String,
    /// Whether the gate failed (its condition holds, or a metric was not measured).
    pub failed: bool,
    /// The values behind the outcome, e.g. `loop_blocked_pct = 97.3`.
    pub because: String,
}
