//! The one shape of the file outputs (hyperfine's exporter model): each format is a value
//! that names its file and writes itself into any `std::io::Write` from one input struct.
//! The CLI renders every output of a command first and writes the files only then, so a
//! render failure leaves nothing half-written.

use super::{html, json, markdown, RenderError};
use crate::analysis::diagnose::Diagnosis;
use crate::analysis::diff::Diff;
use crate::analysis::gates::GateResult;
use crate::recording::Recording;
use std::io::Write;

/// What `report` renders from.
pub struct ReportInput<'a> {
    /// The recording.
    pub rec: &'a Recording,
    /// Its diagnosis.
    pub d: &'a Diagnosis,
    /// `--fail-on` outcomes.
    pub gates: &'a [GateResult],
    /// The loopprof command line that recorded it, when known (`record`).
    pub command: Option<&'a str>,
    /// Where the recording is, for the "verify the fix" commands.
    pub before: Option<&'a str>,
}

/// What `diff` renders from.
pub struct DiffInput<'a> {
    /// BEFORE and its diagnosis.
    pub before: (&'a Recording, &'a Diagnosis),
    /// AFTER and its diagnosis.
    pub after: (&'a Recording, &'a Diagnosis),
    /// The comparison.
    pub diff: &'a Diff,
    /// Analysis settings used for both.
    pub threshold_ms: f64,
    /// Share for repeated short blocks, percent.
    pub min_share_pct: f64,
    /// `--fail-on` outcomes.
    pub gates: &'a [GateResult],
}

/// One output file of a command, rendered from `I`.
pub trait Output<I> {
    /// Its file name in the output directory (`report.html`).
    fn file_name(&self) -> &'static str;
    /// How the command's printout names it (`report`, `markdown`, `summary`).
    fn label(&self) -> &'static str;
    /// Writes it.
    ///
    /// # Errors
    /// [`RenderError`] when a template or writing fails.
    fn write(&self, input: &I, w: &mut dyn Write) -> Result<(), RenderError>;

    /// Renders it into bytes.
    ///
    /// # Errors
    /// As [`Output::write`].
    fn render(&self, input: &I) -> Result<Vec<u8>, RenderError> {
        let mut out = Vec::new();
        self.write(input, &mut out)?;
        Ok(out)
    }
}

/// `report.html`.
pub struct Html;
/// `report.md`, or `diff.md`.
pub struct Markdown;
/// `summary.json`, or `diff.json`.
pub struct Json;

/// The outputs of `report` (and `record`), in the order they are printed.
pub fn report_outputs<'a>() -> [&'a dyn Output<ReportInput<'a>>; 3] {
    [&Html, &Markdown, &Json]
}

/// The outputs of `diff`, in the order they are printed.
pub fn diff_outputs<'a>() -> [&'a dyn Output<DiffInput<'a>>; 3] {
    [&Html, &Markdown, &Json]
}

fn put(w: &mut dyn Write, text: &str) -> Result<(), RenderError> {
    w.write_all(text.as_bytes()).map_err(RenderError::Write)
}

impl<'a> Output<ReportInput<'a>> for Html {
    fn file_name(&self) -> &'static str {
        "report.html"
    }
    fn label(&self) -> &'static str {
        "report"
    }
    fn write(&self, i: &ReportInput<'a>, w: &mut dyn Write) -> Result<(), RenderError> {
        let page = html::render(
            i.rec,
            i.d,
            &html::HtmlOptions {
                command: i.command.map(str::to_owned),
                gates: i.gates.to_vec(),
                before: i.before.map(str::to_owned),
            },
        )?;
        put(w, &page)
    }
}

impl<'a> Output<ReportInput<'a>> for Markdown {
    fn file_name(&self) -> &'static str {
        "report.md"
    }
    fn label(&self) -> &'static str {
        "markdown"
    }
    fn write(&self, i: &ReportInput<'a>, w: &mut dyn Write) -> Result<(), RenderError> {
        put(
            w,
            &markdown::render(i.rec, i.d, i.command, i.gates, i.before),
        )
    }
}

impl<'a> Output<ReportInput<'a>> for Json {
    fn file_name(&self) -> &'static str {
        "summary.json"
    }
    fn label(&self) -> &'static str {
        "summary"
    }
    fn write(&self, i: &ReportInput<'a>, w: &mut dyn Write) -> Result<(), RenderError> {
        put(w, &json::to_string(i.rec, i.d, i.gates))
    }
}

impl<'a> Output<DiffInput<'a>> for Html {
    fn file_name(&self) -> &'static str {
        "diff.html"
    }
    fn label(&self) -> &'static str {
        "diff"
    }
    fn write(&self, i: &DiffInput<'a>, w: &mut dyn Write) -> Result<(), RenderError> {
        let page = html::render_diff(
            &html::DiffInput {
                before: i.before,
                after: i.after,
            },
            i.diff,
            i.gates,
        )?;
        put(w, &page)
    }
}

impl<'a> Output<DiffInput<'a>> for Markdown {
    fn file_name(&self) -> &'static str {
        "diff.md"
    }
    fn label(&self) -> &'static str {
        "markdown"
    }
    fn write(&self, i: &DiffInput<'a>, w: &mut dyn Write) -> Result<(), RenderError> {
        put(w, &markdown::diff(i.diff, i.gates))
    }
}

impl<'a> Output<DiffInput<'a>> for Json {
    fn file_name(&self) -> &'static str {
        "diff.json"
    }
    fn label(&self) -> &'static str {
        "json"
    }
    fn write(&self, i: &DiffInput<'a>, w: &mut dyn Write) -> Result<(), RenderError> {
        put(
            w,
            &json::diff_to_string(
                i.diff,
                json::DiffAnalysis {
                    threshold_ms: i.threshold_ms,
                    min_share_pct: i.min_share_pct,
                },
                i.gates,
            ),
        )
    }
}

/// speedscope's JSON ([`super::speedscope`]).
pub struct Speedscope;

/// pprof's gzip-compressed `profile.proto` ([`super::pprof`]).
pub struct Pprof;

/// The Trace Event Format of Perfetto and `chrome://tracing` ([`super::chrome_trace`]).
pub struct ChromeTrace;

impl<'a> Output<ReportInput<'a>> for Pprof {
    fn file_name(&self) -> &'static str {
        "profile.pb.gz"
    }
    fn label(&self) -> &'static str {
        "pprof"
    }
    fn write(&self, i: &ReportInput<'a>, w: &mut dyn Write) -> Result<(), RenderError> {
        w.write_all(&super::pprof::to_bytes(i.rec, i.d))
            .map_err(RenderError::Write)
    }
}

impl<'a> Output<ReportInput<'a>> for ChromeTrace {
    fn file_name(&self) -> &'static str {
        "trace.json"
    }
    fn label(&self) -> &'static str {
        "chrome-trace"
    }
    fn write(&self, i: &ReportInput<'a>, w: &mut dyn Write) -> Result<(), RenderError> {
        put(w, &super::chrome_trace::to_string(i.rec, i.d))
    }
}

/// Brendan Gregg's folded stacks (`root;...;leaf count`) of one flame-graph view, for
/// flamegraph.pl and inferno.
pub struct Collapsed(pub super::flamegraph::View);

impl<'a> Output<ReportInput<'a>> for Speedscope {
    fn file_name(&self) -> &'static str {
        "profile.speedscope.json"
    }
    fn label(&self) -> &'static str {
        "speedscope"
    }
    fn write(&self, i: &ReportInput<'a>, w: &mut dyn Write) -> Result<(), RenderError> {
        put(w, &super::speedscope::to_string(i.rec, i.d))
    }
}

impl<'a> Output<ReportInput<'a>> for Collapsed {
    fn file_name(&self) -> &'static str {
        use super::flamegraph::View;
        match self.0 {
            View::Wall => "wall.folded",
            View::Cpu => "cpu.folded",
            View::OffCpu => "off-cpu.folded",
            View::LoopBlocked => "loop-blocked.folded",
        }
    }
    fn label(&self) -> &'static str {
        "collapsed"
    }
    fn write(&self, i: &ReportInput<'a>, w: &mut dyn Write) -> Result<(), RenderError> {
        for line in super::flamegraph::folded(i.rec, i.d, self.0, None) {
            put(w, &line)?;
            put(w, "\n")?;
        }
        Ok(())
    }
}
