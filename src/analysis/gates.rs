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
    Metric { name: "loop_blocked_pct", kind: Kind::Number, scope: Scope::Report, unit: "%", doc: "share of the event loop's time inside stalls and repeated short blocks" },
    Metric { name: "loop_busy_pct", kind: Kind::Number, scope: Scope::Report, unit: "%", doc: "share of the event loop's time not idle in its selector" },
    Metric { name: "gil_wait_pct", kind: Kind::Number, scope: Scope::Report, unit: "%", doc: "share of the event loop's time waiting for the GIL" },
    Metric { name: "cpu_starved_pct", kind: Kind::Number, scope: Scope::Report, unit: "%", doc: "share of the event loop's time runnable but waiting for a CPU" },
    Metric { name: "process_cpu_pct", kind: Kind::Number, scope: Scope::Report, unit: "%", doc: "CPU of the recorded processes, percent of one core" },
    Metric { name: "max_stall_ms", kind: Kind::Number, scope: Scope::Report, unit: "ms", doc: "the longest stall of the event loop" },
    Metric { name: "stalls", kind: Kind::Number, scope: Scope::Report, unit: "", doc: "number of stalls (blocks at or above the threshold)" },
    Metric { name: "stalls_per_min", kind: Kind::Number, scope: Scope::Report, unit: "", doc: "stalls per minute of event-loop time" },
    Metric { name: "findings", kind: Kind::Number, scope: Scope::Report, unit: "", doc: "number of findings (blocking call sites, GIL culprits)" },
    Metric { name: "probe_p99_ms", kind: Kind::Number, scope: Scope::Report, unit: "ms", doc: "99th percentile `--probe` latency (worst probed URL); not measured without --probe" },
    Metric { name: "probe_max_ms", kind: Kind::Number, scope: Scope::Report, unit: "ms", doc: "longest `--probe` latency, timeouts included; not measured without --probe" },
    Metric { name: "probe_timeouts", kind: Kind::Number, scope: Scope::Report, unit: "", doc: "`--probe` requests that timed out; not measured without --probe" },
    Metric { name: "category", kind: Kind::Names, scope: Scope::Report, unit: "", doc: "the catalog categories of the findings (`==`: any finding has it)" },
    Metric { name: "route", kind: Kind::Names, scope: Scope::Report, unit: "", doc: "the HTTP routes of the findings, quoted: `route == \"GET /metrics\"` (`==`: any finding has it; any route may be named)" },
    Metric { name: "verdict", kind: Kind::Names, scope: Scope::Report, unit: "", doc: "the verdict: healthy, loop-blocked, cpu-bound-loop, gil-contention, thread-pool-exhausted, gc-pause, loop-saturated, no-event-loop, inconclusive (a recording that cannot be trusted)" },
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

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Num(f64, String),
    Op(Op),
    Open,
    Close,
    And,
    Or,
    Not,
}

fn tokenize(src: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let (tok, len) = match (c, two.as_str()) {
            (_, ">=") => (Tok::Op(Op::Ge), 2),
            (_, "<=") => (Tok::Op(Op::Le), 2),
            (_, "==") => (Tok::Op(Op::Eq), 2),
            (_, "!=") => (Tok::Op(Op::Ne), 2),
            (_, "&&") => (Tok::And, 2),
            (_, "||") => (Tok::Or, 2),
            ('>', _) => (Tok::Op(Op::Gt), 1),
            ('<', _) => (Tok::Op(Op::Lt), 1),
            ('=', _) => (Tok::Op(Op::Eq), 1),
            ('!', _) => (Tok::Not, 1),
            ('(', _) => (Tok::Open, 1),
            (')', _) => (Tok::Close, 1),
            ('\'' | '"', _) => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&d| d == c)
                    .ok_or_else(|| format!("the quote {c} is never closed"))?;
                let word: String = chars[i + 1..i + 1 + end].iter().collect();
                out.push(Tok::Word(word));
                i += end + 2;
                continue;
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '-' | '.' | '%'))
                {
                    i += 1;
                }
                if start == i {
                    return Err(format!("unexpected character {c:?}"));
                }
                let word: String = chars[start..i].iter().collect();
                let tok = match word.to_ascii_lowercase().as_str() {
                    "and" => Tok::And,
                    "or" => Tok::Or,
                    "not" => Tok::Not,
                    _ => {
                        let digits = word
                            .find(|ch: char| !(ch.is_ascii_digit() || ch == '.' || ch == '-'))
                            .unwrap_or(word.len());
                        match word[..digits].parse::<f64>() {
                            Ok(n) if digits > 0 && n.is_finite() => {
                                Tok::Num(n, word[digits..].to_owned())
                            }
                            _ => Tok::Word(word),
                        }
                    }
                };
                out.push(tok);
                continue;
            }
        };
        out.push(tok);
        i += len;
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    scope: Scope,
    known_names: &'a dyn Fn(&str) -> Vec<String>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut parts = vec![self.and()?];
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Expr::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut parts = vec![self.unary()?];
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            parts.push(self.unary()?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Expr::And(parts)
        })
    }

    fn unary(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::Not) => Ok(Expr::Not(Box::new(self.unary()?))),
            Some(Tok::Open) => {
                let e = self.or()?;
                match self.next() {
                    Some(Tok::Close) => Ok(e),
                    _ => Err("a parenthesis is never closed".into()),
                }
            }
            Some(Tok::Word(w)) => self.atom(&w),
            Some(Tok::Num(n, u)) => Err(format!(
                "expected a metric name before {n}{u}, e.g. `loop_blocked_pct > {n}{u}`"
            )),
            Some(t) => Err(format!("expected a metric name, found {}", describe(&t))),
            None => Err("the expression is empty or ends too early".into()),
        }
    }

    fn atom(&mut self, word: &str) -> Result<Expr, String> {
        let m = lookup(word)?;
        if m.scope == Scope::Diff && self.scope == Scope::Report {
            return Err(format!(
                "`{}` compares two recordings: it only applies to `loopprof diff`",
                m.name
            ));
        }
        if m.kind == Kind::Flag {
            if let Some(Tok::Op(op)) = self.peek() {
                return Err(format!(
                    "`{}` is a flag: use it alone (`{}` or `not {}`), not with {op}",
                    m.name, m.name, m.name
                ));
            }
            return Ok(Expr::Flag(m.name));
        }
        let op = match self.next() {
            Some(Tok::Op(op)) => op,
            other => {
                return Err(format!(
                    "expected a comparison after `{}` (> >= < <= == !=), found {}",
                    m.name,
                    other
                        .as_ref()
                        .map(describe)
                        .unwrap_or_else(|| "the end".into())
                ))
            }
        };
        let value = self.next();
        match (m.kind, value) {
            (Kind::Number, Some(Tok::Num(n, unit))) => {
                if !unit.is_empty() && unit != m.unit {
                    return Err(format!(
                        "`{}` is measured in {}; drop the unit `{unit}` or use `{}`",
                        m.name,
                        if m.unit.is_empty() {
                            "plain numbers"
                        } else {
                            m.unit
                        },
                        if m.unit.is_empty() {
                            format!("{n}")
                        } else {
                            format!("{n}{}", m.unit)
                        }
                    ));
                }
                Ok(Expr::Num(m.name, op, n))
            }
            (Kind::Number, other) => Err(format!(
                "`{}` is a number: compare it with a number, e.g. `{} {op} 5`; found {}",
                m.name,
                m.name,
                other
                    .as_ref()
                    .map(describe)
                    .unwrap_or_else(|| "the end".into())
            )),
            (Kind::Names, Some(Tok::Word(w))) | (Kind::Names, Some(Tok::Num(_, w))) => {
                if !matches!(op, Op::Eq | Op::Ne) {
                    return Err(format!(
                        "`{}` is a name: compare it with == or !=, not {op}",
                        m.name
                    ));
                }
                let known = (self.known_names)(m.name);
                // Routes are the application's own: any may be named.
                if !ROUTE_METRICS.contains(&m.name) && !known.iter().any(|k| k == &w) {
                    return Err(format!(
                        "`{w}` is not a known {}; use one of: {}",
                        if m.name == "verdict" {
                            "verdict"
                        } else {
                            "category"
                        },
                        known.join(", ")
                    ));
                }
                Ok(Expr::Name(m.name, op, w))
            }
            (Kind::Names, other) => Err(format!(
                "`{}` is compared with a name, e.g. `{} == {}`; found {}",
                m.name,
                m.name,
                (self.known_names)(m.name)
                    .first()
                    .cloned()
                    .unwrap_or_default(),
                other
                    .as_ref()
                    .map(describe)
                    .unwrap_or_else(|| "the end".into())
            )),
            (Kind::Flag, _) => unreachable!("flags return above"),
        }
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("`{w}`"),
        Tok::Num(n, u) => format!("`{n}{u}`"),
        Tok::Op(o) => format!("`{o}`"),
        Tok::Open => "`(`".into(),
        Tok::Close => "`)`".into(),
        Tok::And => "`and`".into(),
        Tok::Or => "`or`".into(),
        Tok::Not => "`not`".into(),
    }
}

/// The metric named `word`, or an error naming the closest ones: by Jaro-Winkler similarity
/// (`strsim`) of the names with `-` read as `_`, which catches typos (`regresion`), dropped
/// letters (`loop_blockd_pct`) and `-`/`_` swaps (`max-stall-ms`).
fn lookup(word: &str) -> Result<&'static Metric, String> {
    let norm = word.replace('-', "_").to_lowercase();
    if let Some(m) = METRICS.iter().find(|m| m.name == word) {
        return Ok(m);
    }
    let mut scored: Vec<(f64, &str)> = METRICS
        .iter()
        .map(|m| (strsim::jaro_winkler(&norm, m.name), m.name))
        .filter(|(score, name)| *score >= 0.85 || *name == norm)
        .collect();
    scored.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
    let near: Vec<&str> = scored.iter().take(2).map(|(_, n)| *n).collect();
    Err(format!(
        "unknown metric `{word}`{}; metrics: {}",
        if near.is_empty() {
            String::new()
        } else {
            format!(" (did you mean {}?)", near.join(" or "))
        },
        METRICS
            .iter()
            .map(|m| m.name)
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Parses one `--fail-on` expression for a command of `scope`; `categories` are the ids of
/// the catalog in use (the values `category ==` accepts).
pub fn parse(src: &str, scope: Scope, categories: &[String]) -> Result<Gate, GateError> {
    let err = |message: String| GateError {
        expr: src.to_owned(),
        message,
    };
    let toks = tokenize(src).map_err(err)?;
    let known = |metric: &str| -> Vec<String> {
        if metric == "verdict" {
            VERDICTS.iter().map(|s| s.to_string()).collect()
        } else {
            categories.to_vec()
        }
    };
    let mut p = Parser {
        toks,
        pos: 0,
        scope,
        known_names: &known,
    };
    let expr = p.or().map_err(err)?;
    if let Some(t) = p.peek() {
        return Err(err(format!(
            "unexpected {} after a complete expression; join conditions with `and` / `or`",
            describe(t)
        )));
    }
    Ok(Gate {
        source: src.to_owned(),
        expr,
    })
}

/// Parses every `--fail-on` flag; the first bad one is the error.
pub fn parse_all(
    srcs: &[String],
    scope: Scope,
    categories: &[String],
) -> Result<Vec<Gate>, GateError> {
    srcs.iter().map(|s| parse(s, scope, categories)).collect()
}

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{n:.0}")
    } else {
        format!("{n:.1}")
    }
}

/// Evaluates an expression: `Ok(holds)` with the values looked at, or `Err` naming a metric
/// that was not measured.
fn eval(e: &Expr, facts: &Facts, seen: &mut Vec<String>) -> Result<bool, String> {
    match e {
        Expr::Num(name, op, v) => {
            let x = *facts.numbers.get(name).ok_or_else(|| not_measured(name))?;
            seen.push(format!("{name} = {}", fmt_num(x)));
            Ok(match op {
                Op::Gt => x > *v,
                Op::Ge => x >= *v,
                Op::Lt => x < *v,
                Op::Le => x <= *v,
                Op::Eq => (x - v).abs() < 1e-9,
                Op::Ne => (x - v).abs() >= 1e-9,
            })
        }
        Expr::Name(name, op, v) => {
            let xs = facts.names.get(name).ok_or_else(|| not_measured(name))?;
            seen.push(format!(
                "{name} = {}",
                if xs.is_empty() {
                    "(none)".to_owned()
                } else {
                    xs.join(", ")
                }
            ));
            let any = xs.iter().any(|x| x == v);
            Ok(if *op == Op::Eq { any } else { !any })
        }
        Expr::Flag(name) => {
            let (b, why) = facts.flags.get(name).ok_or_else(|| not_measured(name))?;
            seen.push(if why.is_empty() {
                format!("{name} = {b}")
            } else {
                format!("{name} = {b} ({why})")
            });
            Ok(*b)
        }
        Expr::Not(inner) => Ok(!eval(inner, facts, seen)?),
        Expr::And(parts) => {
            let mut all = true;
            for p in parts {
                all &= eval(p, facts, seen)?;
            }
            Ok(all)
        }
        Expr::Or(parts) => {
            let mut any = false;
            for p in parts {
                any |= eval(p, facts, seen)?;
            }
            Ok(any)
        }
    }
}

fn not_measured(name: &str) -> String {
    if name.starts_with("probe_") {
        format!("{name} was not measured: record with --probe URL")
    } else {
        format!("{name} was not measured")
    }
}

/// Evaluates every gate against the facts.
pub fn evaluate(gates: &[Gate], facts: &Facts) -> Vec<GateResult> {
    gates
        .iter()
        .map(|g| {
            if let Some(why) = &facts.untrusted {
                return GateResult {
                    gate: g.source.clone(),
                    failed: true,
                    because: format!("not measured: {why}"),
                };
            }
            let mut seen = Vec::new();
            match eval(&g.expr, facts, &mut seen) {
                Ok(failed) => {
                    seen.dedup();
                    GateResult {
                        gate: g.source.clone(),
                        failed,
                        because: seen.join(", "),
                    }
                }
                Err(why) => GateResult {
                    gate: g.source.clone(),
                    failed: true,
                    because: why,
                },
            }
        })
        .collect()
}

/// The facts of one diagnosis (for `record` and `report`, and the AFTER side of `diff`).
pub fn facts_of(
    d: &crate::analysis::diagnose::Diagnosis,
    probes: &[crate::analysis::probes::ProbeSummary],
) -> Facts {
    let mut f = Facts::default();
    let v = &d.verdict;
    let stalls: usize = d.findings.iter().map(|x| x.stalls).sum();
    for (k, x) in [
        ("loop_blocked_pct", v.loop_blocked_pct),
        ("loop_busy_pct", v.loop_busy_pct),
        ("gil_wait_pct", v.gil_wait_pct),
        ("cpu_starved_pct", v.cpu_starved_pct),
        ("process_cpu_pct", v.process_cpu_pct),
        ("max_stall_ms", v.worst_stall_ms),
        ("stalls", stalls as f64),
        (
            "stalls_per_min",
            if d.window_s > 0.0 {
                stalls as f64 * 60.0 / d.window_s
            } else {
                0.0
            },
        ),
        ("findings", d.findings.len() as f64),
        ("failed_ticks_pct", d.quality.failed_pct),
        ("lost_threads_pct", d.quality.lost_pct),
    ] {
        f.numbers.insert(k, x);
    }
    if !d.quality.trusted {
        f.untrusted = Some(format!(
            "the recording cannot be trusted ({})",
            d.quality
                .problems
                .first()
                .map(String::as_str)
                .unwrap_or("?")
        ));
    }
    if !probes.is_empty() {
        let max = |g: fn(&crate::analysis::probes::ProbeSummary) -> f64| {
            probes.iter().map(g).fold(0.0, f64::max)
        };
        f.numbers.insert("probe_p99_ms", max(|p| p.p99_ms));
        f.numbers.insert("probe_max_ms", max(|p| p.max_ms));
        f.numbers
            .insert("probe_timeouts", max(|p| p.timeouts as f64));
    }
    f.names.insert(
        "category",
        name_list(d.findings.iter().map(|x| x.category.clone())),
    );
    f.names.insert(
        "route",
        name_list(d.findings.iter().filter_map(|x| x.route.clone())),
    );
    f.names.insert("verdict", vec![v.kind.as_str().to_owned()]);
    f
}

/// The values of a names metric: sorted, each once.
pub fn name_list(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = names.into_iter().collect();
    v.sort();
    v.dedup();
    v
}

/// Whether any gate failed.
pub fn any_failed(results: &[GateResult]) -> bool {
    results.iter().any(|r| r.failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cats() -> Vec<String> {
        vec!["blocking-sleep".into(), "executor-shutdown-wait".into()]
    }

    fn p(s: &str) -> Result<Gate, GateError> {
        parse(s, Scope::Report, &cats())
    }

    fn facts() -> Facts {
        let mut f = Facts::default();
        f.numbers.insert("loop_blocked_pct", 12.5);
        f.numbers.insert("max_stall_ms", 180.0);
        f.names
            .insert("category", vec!["blocking-sleep".to_owned()]);
        f.names.insert("verdict", vec!["loop-blocked".to_owned()]);
        f.names
            .insert("route", vec!["GET /orders/{order_id}".to_owned()]);
        f.flags.insert("regression", (true, "1 new finding".into()));
        f
    }

    fn fails(s: &str, scope: Scope) -> bool {
        let g = parse(s, scope, &cats()).unwrap();
        evaluate(&[g], &facts())[0].failed
    }

    #[test]
    fn comparisons_and_units() {
        assert!(fails("loop_blocked_pct > 5", Scope::Report));
        assert!(fails("loop_blocked_pct > 5%", Scope::Report));
        assert!(!fails("loop_blocked_pct>20", Scope::Report));
        assert!(!fails("max_stall_ms > 200ms", Scope::Report));
        assert!(fails("max_stall_ms >= 180", Scope::Report));
        assert!(fails("max_stall_ms == 180", Scope::Report));
        assert!(fails("max_stall_ms != 1", Scope::Report));
        assert!(fails("max_stall_ms < 1000", Scope::Report));
    }

    #[test]
    fn names_and_logic() {
        assert!(fails("category == blocking-sleep", Scope::Report));
        assert!(!fails("category == executor-shutdown-wait", Scope::Report));
        assert!(fails("category != executor-shutdown-wait", Scope::Report));
        assert!(fails("verdict != healthy", Scope::Report));
        assert!(fails("verdict == 'loop-blocked'", Scope::Report));
        assert!(!fails(
            "loop_blocked_pct > 5 and max_stall_ms > 200",
            Scope::Report
        ));
        assert!(fails(
            "loop_blocked_pct > 50 or max_stall_ms > 100 and verdict != healthy",
            Scope::Report
        ));
        assert!(!fails(
            "(loop_blocked_pct > 50 or max_stall_ms > 100) and verdict == healthy",
            Scope::Report
        ));
        assert!(!fails("not regression", Scope::Diff));
        assert!(fails("regression || loop_blocked_pct > 99", Scope::Diff));
    }

    #[test]
    fn routes_are_any_quoted_name() {
        assert!(fails(r#"route == "GET /orders/{order_id}""#, Scope::Report));
        assert!(!fails("route == 'GET /metrics'", Scope::Report));
        assert!(fails("route != 'GET /metrics'", Scope::Report));
        // Not a catalog id, yet not an error: routes are the application's own.
        assert!(p("route == lifespan").is_ok());
        assert!(
            p("new_route == 'GET /x'").is_err(),
            "a diff metric on record"
        );
        assert!(parse("new_route == 'GET /x'", Scope::Diff, &cats()).is_ok());
    }

    #[test]
    fn unmeasured_metric_fails_with_a_reason() {
        let g = p("probe_p99_ms > 1000").unwrap();
        let r = &evaluate(&[g], &facts())[0];
        assert!(r.failed);
        assert!(r.because.contains("--probe"), "{}", r.because);
    }

    #[test]
    fn because_names_the_values() {
        let g = p("loop_blocked_pct > 5 and category == blocking-sleep").unwrap();
        let r = &evaluate(&[g], &facts())[0];
        assert_eq!(
            r.because,
            "loop_blocked_pct = 12.5, category = blocking-sleep"
        );
    }

    #[test]
    fn bad_expressions_say_how_to_fix_them() {
        let msg = |s: &str| p(s).unwrap_err().message;
        assert!(msg("loop_blockd_pct > 5").contains("did you mean loop_blocked_pct"));
        assert!(
            msg("regresion").contains("did you mean regression"),
            "{}",
            msg("regresion")
        );
        assert!(msg("max-stall-ms > 5").contains("did you mean max_stall_ms"));
        assert!(msg("Loop_Busy_Pct > 5").contains("did you mean loop_busy_pct"));
        assert!(!msg("banana > 5").contains("did you mean"));
        assert!(msg("loop_blocked_pct > high").contains("is a number"));
        assert!(msg("loop_blocked_pct 5").contains("expected a comparison"));
        assert!(msg("max_stall_ms > 2s").contains("drop the unit"));
        assert!(msg("category == executor-shutdown").contains("not a known category"));
        assert!(msg("category > blocking-sleep").contains("== or !="));
        assert!(msg("verdict == fine").contains("healthy"));
        assert!(msg("regression").contains("only applies to `loopprof diff`"));
        assert!(msg("").contains("empty"));
        assert!(msg("loop_blocked_pct > 5 max_stall_ms > 1").contains("and"));
        assert!(msg("(loop_blocked_pct > 5").contains("never closed"));
        assert!(msg("> 5").contains("metric name"));
        assert!(msg("loop_blocked_pct > 5 ; rm").contains("unexpected character"));
        assert!(parse("regression == 1", Scope::Diff, &cats())
            .unwrap_err()
            .message
            .contains("is a flag"));
    }

    #[test]
    fn every_metric_is_documented() {
        let doc = include_str!("../../docs/cli.md");
        for m in METRICS {
            assert!(
                doc.contains(&format!("`{}`", m.name)),
                "docs/cli.md does not document the gate metric {}",
                m.name
            );
        }
    }
}
