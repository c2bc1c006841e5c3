//! The entry points of loopprof's fuzz targets: what `fuzz/` (AFL++ through cargo-afl, see
//! `docs/fuzzing.md`) runs on every generated input, and what `tests/fuzz_corpus.rs` runs on
//! every committed corpus file. Each takes untrusted bytes the way a user's input reaches
//! loopprof and must return (with an error or not) without panicking.

use crate::analysis::catalog::Catalog;
use crate::analysis::diagnose::{diagnose, Options};
use crate::analysis::gates::{self, Scope};
use crate::recording::{load_from, RecordingReader};
use crate::render::flamegraph::View;
use std::io::Cursor;
use std::path::PathBuf;

/// A recording file (gzip or plain), or a py-spy capture, as `report`/`inspect`/`diff` read it:
/// loaded (or imported), then, if it
/// loads, summarised, diagnosed, dumped and rendered in every text format, the HTML report and
/// the flame graphs (a recording that loads is one a user gets a report of).
pub fn recording(data: &[u8]) {
    let gz = data.starts_with(&[0x1f, 0x8b]);
    let input: Box<dyn std::io::BufRead> = if gz {
        Box::new(std::io::BufReader::new(flate2::read::MultiGzDecoder::new(
            Cursor::new(data.to_vec()),
        )))
    } else {
        Box::new(Cursor::new(data.to_vec()))
    };
    let rec = match load_from(RecordingReader::from_reader(PathBuf::from("fuzz"), input)) {
        Ok(rec) => rec,
        // Not a recording: `report` also takes py-spy captures.
        Err(_) => match crate::recording::import::from_bytes(&PathBuf::from("fuzz"), data) {
            Ok(Some(rec)) => rec,
            _ => return,
        },
    };
    let o = crate::analysis::overview::overview(&rec);
    let _ = crate::render::text::overview(&o);
    let d = diagnose(&rec, &Catalog::builtin(), &Options::default());
    let _ = crate::render::text::diagnosis(&d);
    let _ = crate::render::text::dump(&crate::analysis::dump::dump(&rec, &d, &Catalog::builtin()));
    let _ = serde_json::to_string(&crate::render::json::summary(&rec, &d, &[]));
    let _ = crate::render::markdown::render(&rec, &d, None, &[], None);
    let _ = crate::render::html::render(&rec, &d, &crate::render::html::HtmlOptions::default());
    for view in [View::Wall, View::Cpu, View::OffCpu, View::LoopBlocked] {
        crate::render::flamegraph::svg(&rec, &d, view, None).expect("flame graphs render");
    }
    let t = crate::analysis::diff::Thresholds::default();
    let _ = crate::analysis::diff::diff(("a", &rec, &d), ("b", &rec, &d), &t);
}

/// A `--fail-on` expression (UTF-8 or not), parsed for `record`/`report` and for `diff`, and
/// evaluated on empty facts.
pub fn fail_on(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let cats: Vec<String> = vec!["blocking-sleep".into(), "sync-http".into()];
    for scope in [Scope::Report, Scope::Diff] {
        if let Ok(g) = gates::parse(&text, scope, &cats) {
            let _ = gates::evaluate(&[g], &gates::Facts::default());
        }
    }
}

/// A `--catalog` file (UTF-8 or not), loaded in front of the built-in catalog.
pub fn catalog(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    let _ = Catalog::with_user(&[("fuzz.json".into(), text)]);
}
