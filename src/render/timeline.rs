//! The timeline drawn as inline SVG at render time (no chart library): per time bin, what the
//! event loop was doing (stacked: idle, on-CPU, native, waiting, GIL wait), the loop
//! processes' CPU as a line, and a red mark over bins that are inside a stall.
//!
//! Everything in the SVG is produced here from numbers; no string from the target is used.

use crate::analysis::diagnose::{coverage_ms, Diagnosis};
use crate::analysis::loops::{self, Activity, LoopState};
use crate::recording::Recording;
use std::fmt::Write;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 170.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 22.0;
const MAX_BINS: usize = 240;

/// Colours of the loop states, shared with the report's legend.
use super::palette::{AXIS, AXIS_TEXT, INK, LOOP_STATES as COLORS, OK, STALL};

#[derive(Clone, Copy, Default)]
struct Bin {
    parts: [f64; 5],
    stall: bool,
    cpu_us: f64,
    cpu_span_us: f64,
}

/// Renders the timeline SVG, or `None` when no event loop was found.
pub fn svg(rec: &Recording, d: &Diagnosis) -> Option<String> {
    if d.loops.is_empty() {
        return None;
    }
    let duration_us = rec.duration_us().max(1) as f64;
    let bins = bins(rec, d, duration_us);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" class="timeline" role="img" aria-label="Event loop timeline">"#
    );
    bars(&mut out, &bins);
    cpu_line(&mut out, &bins);
    probes(&mut out, rec, duration_us);
    axis(&mut out, duration_us);
    out.push_str("</svg>");
    Some(out)
}

/// Height of the plot area, px.
const PLOT_H: f64 = HEIGHT - TOP - BOTTOM;

/// The loop threads' time per state, stalls and process CPU in up to [`MAX_BINS`] bins.
fn bins(rec: &Recording, d: &Diagnosis, duration_us: f64) -> Vec<Bin> {
    let n = MAX_BINS.min(((duration_us / 100_000.0).ceil() as usize).max(10));
    let bin_us = duration_us / n as f64;
    let mut bins = vec![Bin::default(); n];
    let idx = |t: u64| ((t as f64 / bin_us) as usize).min(n - 1);
    for lt in &d.loops {
        let samples = loops::samples_of(rec, lt);
        let times: Vec<u64> = samples.iter().map(|s| s.t_us).collect();
        for (s, w) in samples.iter().zip(coverage_ms(&times)) {
            let t = s.threads.iter().find(|t| t.tid == lt.tid).unwrap();
            let slot = match loops::classify(rec, lt, s, t) {
                LoopState::Idle | LoopState::Overhead => 0,
                LoopState::GilWait => 4,
                LoopState::NotLoop => continue,
                LoopState::Busy { activity, .. } => match activity {
                    Activity::OnCpu => 1,
                    Activity::Native => 2,
                    Activity::Waiting(_) => 3,
                    Activity::GilWait => 4,
                },
            };
            let b = &mut bins[idx(s.t_us)];
            b.parts[slot] += w;
            if d.stall_samples.contains_key(&(s.pid, lt.tid, s.t_us)) {
                b.stall = true;
            }
        }
        for pair in samples.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let bin = &mut bins[idx(b.t_us)];
            bin.cpu_us += b.cpu_us.saturating_sub(a.cpu_us) as f64;
            bin.cpu_span_us += b.t_us.saturating_sub(a.t_us) as f64;
        }
    }
    bins
}

/// One stacked bar per bin (the loop's states), with a red mark over bins with a stall.
fn bars(out: &mut String, bins: &[Bin]) {
    let bw = WIDTH / bins.len() as f64;
    for (i, b) in bins.iter().enumerate() {
        let total: f64 = b.parts.iter().sum();
        let x = i as f64 * bw;
        if total <= 0.0 {
            continue;
        }
        let mut y = TOP + PLOT_H;
        for (slot, part) in b.parts.iter().enumerate() {
            if *part <= 0.0 {
                continue;
            }
            let h = PLOT_H * part / total;
            y -= h;
            let _ = write!(
                out,
                r#"<rect x="{x:.2}" y="{y:.2}" width="{:.2}" height="{h:.2}" fill="{}"/>"#,
                bw + 0.3,
                COLORS[slot].1
            );
        }
        if b.stall {
            let _ = write!(
                out,
                r##"<rect x="{x:.2}" y="2" width="{:.2}" height="8" fill="{STALL}"><title>stall</title></rect>"##,
                bw + 0.3
            );
        }
    }
}

/// The process CPU line (% of one core). CPU and span are summed over the loop processes,
/// so the ratio is their average.
fn cpu_line(out: &mut String, bins: &[Bin]) {
    let bw = WIDTH / bins.len() as f64;
    let mut points = String::new();
    for (i, b) in bins.iter().enumerate() {
        if b.cpu_span_us > 0.0 {
            let frac = (b.cpu_us / b.cpu_span_us).min(1.0);
            let _ = write!(
                points,
                "{:.1},{:.1} ",
                (i as f64 + 0.5) * bw,
                TOP + PLOT_H * (1.0 - frac)
            );
        }
    }
    if !points.is_empty() {
        let _ = write!(
            out,
            r##"<polyline points="{}" fill="none" stroke="{INK}" stroke-width="1.5"><title>process CPU (% of one core)</title></polyline>"##,
            points.trim_end()
        );
    }
}

/// Probe requests: a dot per request, height = latency (scaled to the slowest, at least
/// 100 ms); red at the top for timeouts and errors.
fn probes(out: &mut String, rec: &Recording, duration_us: f64) {
    let max_lat = rec
        .probes
        .iter()
        .filter(|p| p.status.is_some())
        .map(|p| p.latency_ms)
        .fold(100.0, f64::max);
    for p in &rec.probes {
        let x = WIDTH * (p.t_us as f64 / duration_us).min(1.0);
        let (y, color) = match p.status {
            Some(_) => (TOP + PLOT_H * (1.0 - (p.latency_ms / max_lat).min(1.0)), OK),
            None => (TOP + 2.0, STALL),
        };
        let _ = write!(
            out,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="2.6" fill="{color}" stroke="#fff" stroke-width="0.6"><title>probe {:.0} ms{}</title></circle>"##,
            p.latency_ms,
            if p.status.is_none() {
                " (no answer)"
            } else {
                ""
            }
        );
    }
}

/// The time axis, in seconds.
fn axis(out: &mut String, duration_us: f64) {
    let secs = duration_us / 1e6;
    let step = [0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0]
        .into_iter()
        .find(|s| secs / s <= 12.0)
        .unwrap_or(1800.0);
    let mut t = 0.0;
    while t <= secs + 1e-9 {
        let x = WIDTH * t / secs;
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{AXIS}"/><text x="{:.1}" y="{:.1}" font-size="10" fill="{AXIS_TEXT}">{t}s</text>"##,
            TOP + PLOT_H,
            TOP + PLOT_H + 4.0,
            (x + 2.0).min(WIDTH - 24.0),
            HEIGHT - 6.0
        );
        t += step;
    }
}
