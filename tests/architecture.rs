//! The stage rule of docs/architecture.md, checked on the source: each stage imports only the
//! stages below it (capture → recording; analysis → recording; render → analysis, recording;
//! cli → everything). A new `use crate::...` that points up fails here with the file named.

use std::path::Path;

/// The stages a stage's files may name with `crate::STAGE`.
fn allowed(stage: &str) -> &'static [&'static str] {
    match stage {
        "recording" => &["recording"],
        "capture" => &["capture", "recording"],
        "analysis" => &["analysis", "recording"],
        "render" => &["render", "analysis", "recording"],
        "cli" => &["cli", "capture", "recording", "analysis", "render"],
        other => panic!("unknown stage {other}"),
    }
}

const STAGES: [&str; 5] = ["capture", "recording", "analysis", "render", "cli"];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn imports_point_down_the_pipeline() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for stage in STAGES {
        let mut files = Vec::new();
        rust_files(&src.join(stage), &mut files);
        assert!(!files.is_empty(), "{stage} has files");
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for other in STAGES {
                    let named = code.contains(&format!("crate::{other}::"))
                        || code.contains(&format!("crate::{other};"))
                        || code.contains(&format!("crate::{other}}}"))
                        || code.contains(&format!("crate::{{{other}"));
                    if named && !allowed(stage).contains(&other) {
                        violations.push(format!(
                            "{}:{}: {stage} names {other}: {}",
                            f.strip_prefix(&src).unwrap().display(),
                            n + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports that point up the pipeline (see docs/architecture.md):\n{}",
        violations.join("\n")
    );
}
