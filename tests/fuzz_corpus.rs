//! Every committed fuzz corpus file (fuzz/corpus/<target>/), and every crash the fuzzers ever
//! found (fuzz/regressions/<target>/), run through its fuzz target's entry point
//! (`loopprof::fuzz_targets`) without instrumentation: fast, no AFL needed, and any input that
//! once panicked stays fixed. The fuzzing itself is `scripts/fuzz.sh` (docs/fuzzing.md).

use std::path::Path;

fn each_input(target: &str, run: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let name = path.display().to_string();
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                panic!("{name} panics the {target} target");
            }
            n += 1;
        }
    }
    n
}

#[test]
fn recording_corpus() {
    assert!(each_input("recording", loopprof::fuzz_targets::recording) >= 4);
}

#[test]
fn fail_on_corpus() {
    assert!(each_input("fail_on", loopprof::fuzz_targets::fail_on) >= 4);
}

#[test]
fn catalog_corpus() {
    assert!(each_input("catalog", loopprof::fuzz_targets::catalog) >= 1);
}
