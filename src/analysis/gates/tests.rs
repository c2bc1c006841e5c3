//! Tests of the gate language and its evaluation.

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
    assert!(msg("max_stall_ms > 2s").contains("write `2000ms`"));
    assert!(msg("loop_blocked_pct > 5ms").contains("drop the unit"));
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
    let doc = include_str!("../../../docs/cli.md");
    for m in METRICS {
        assert!(
            doc.contains(&format!("`{}`", m.name)),
            "docs/cli.md does not document the gate metric {}",
            m.name
        );
    }
}
