//! Evaluating gates on a recording's facts (or a diff's), and the facts of a diagnosis.

use super::{Expr, Facts, Gate, GateResult, Op};

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
    if d.requests.snapshots > 0 {
        let top = d.requests.findings.first();
        f.numbers
            .insert("queued_requests", top.map_or(0.0, |w| w.place.mean_tasks));
    }
    let waits = &d.requests.findings;
    f.names.insert(
        "category",
        name_list(
            d.findings
                .iter()
                .map(|x| x.category.clone())
                .chain(waits.iter().map(|w| w.category.clone())),
        ),
    );
    f.names.insert(
        "route",
        name_list(
            d.findings
                .iter()
                .filter_map(|x| x.route.clone())
                .chain(waits.iter().filter_map(|w| w.place.route.clone())),
        ),
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
