//! Interactive SVG flame graphs (inferno) of a recording, in four views.
//!
//! * `wall`: every sample of every Python thread, idle included, rooted at process and thread;
//! * `cpu`: only samples running (holding the GIL, or native code in state R);
//! * `off-cpu`: only samples waiting, with the reason (`[wait: socket]`...) as the leaf;
//! * `loop-blocked`: only event-loop samples inside reported stalls — the culprits.
//!
//! [`diff_svg`] draws two recordings of one view as a differential flame graph (inferno's
//! differential mode) for `loopprof diff`.
//!
//! Each graph says in its title and subtitle what was measured (wall vs CPU, which threads,
//! window, rate). Frames read `qualname (dir/file.py:line)`; application code is drawn in warm
//! colours, the standard library in yellow, third-party packages in aqua, and loopprof's own
//! root frames in grey. Every name comes from the target and is untrusted: inferno escapes it
//! in the SVG, and `;` (inferno's separator) is replaced.

use super::RenderError;
use crate::analysis::diagnose::Diagnosis;
use crate::analysis::loops::{self, Activity};
use crate::recording::frames::{self, Origin};
use crate::recording::Recording;
use inferno::flamegraph::color::{Color, PaletteMap};
use inferno::flamegraph::{self as fg, Options};
use std::collections::{BTreeMap, HashMap};

/// Which samples a flame graph shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Wall clock: every sample.
    Wall,
    /// On CPU: GIL held or native code running.
    Cpu,
    /// Off CPU: waiting, with the reason as the leaf.
    OffCpu,
    /// Event-loop samples inside stalls.
    LoopBlocked,
}

impl View {
    /// Every view, in report order.
    pub const ALL: [View; 4] = [View::LoopBlocked, View::Wall, View::Cpu, View::OffCpu];

    /// File-name stem: `flame-wall`, ...
    pub fn stem(self) -> &'static str {
        match self {
            View::Wall => "flame-wall",
            View::Cpu => "flame-cpu",
            View::OffCpu => "flame-off-cpu",
            View::LoopBlocked => "flame-loop-blocked",
        }
    }

    /// A short name for tabs and headings.
    pub fn short_title(self) -> &'static str {
        match self {
            View::Wall => "Wall clock",
            View::Cpu => "On CPU",
            View::OffCpu => "Off CPU",
            View::LoopBlocked => "Event loop blocked",
        }
    }

    fn title(self) -> &'static str {
        match self {
            View::Wall => "Wall clock, all Python threads (idle included)",
            View::Cpu => "On CPU: holding the GIL or running native code",
            View::OffCpu => "Off CPU: waiting, by reason",
            View::LoopBlocked => "Event loop blocked: loop-thread samples inside stalls",
        }
    }
}

fn sanitize(s: &str) -> String {
    s.replace([';', '\n', '\r'], ":")
}

fn label(rec: &Recording, f: &crate::recording::FrameDef) -> String {
    sanitize(&format!(
        "{} ({}:{})",
        rec.str(f.name),
        frames::short_file(rec.str(f.file)),
        f.line
    ))
}

/// How stacks are rooted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Roots {
    /// `process PID;thread NAME (TID)` (process level only when it tells something).
    Exact,
    /// `thread NAME` only: pids and tids differ between two recordings, names do not.
    ByName,
}

fn counts(
    rec: &Recording,
    d: &Diagnosis,
    view: View,
    pid: Option<u32>,
    roots: Roots,
) -> BTreeMap<String, u64> {
    // Count by (process, thread, stack id, leaf) first and build each folded line once per
    // distinct key: a one-hour recording has millions of thread samples but few stacks.
    let multi = rec.processes.len() > 1;
    // Key: (process, thread, stack, off-CPU leaf, what the wait was on).
    type Key = (u32, u32, u32, Option<&'static str>, Option<u32>);
    let mut by_key: std::collections::HashMap<Key, u64> = std::collections::HashMap::new();
    let mut names: std::collections::HashMap<(u32, u32), &str> = std::collections::HashMap::new();
    for s in &rec.samples {
        if pid.is_some_and(|p| p != s.pid) {
            continue;
        }
        for t in &s.threads {
            let activity = loops::activity(rec, s, t);
            let keep = match view {
                View::Wall => true,
                View::Cpu => matches!(activity, Activity::OnCpu | Activity::Native),
                View::OffCpu => matches!(activity, Activity::Waiting(_) | Activity::GilWait),
                View::LoopBlocked => d.stall_samples.contains_key(&(s.pid, t.tid, s.t_us)),
            };
            if !keep {
                continue;
            }
            let leaf = if view == View::OffCpu {
                Some(match activity {
                    Activity::Waiting(r) => r.name(),
                    _ => "GIL",
                })
            } else {
                None
            };
            // Threads keep their name; a renamed thread keeps the first name seen.
            names
                .entry((s.pid, t.tid))
                .or_insert_with(|| rec.thread_name(t).unwrap_or("?"));
            let target = if view == View::OffCpu { t.wait } else { None };
            *by_key
                .entry((s.pid, t.tid, t.stack, leaf, target))
                .or_default() += 1;
        }
    }
    let mut labels: std::collections::HashMap<u32, String> = std::collections::HashMap::new();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for ((p, tid, stack, leaf, target), n) in by_key {
        let name = names.get(&(p, tid)).copied().unwrap_or("?");
        let mut parts: Vec<String> = Vec::new();
        match roots {
            Roots::Exact => {
                if multi || pid.is_none() {
                    parts.push(format!("process {p}"));
                }
                parts.push(sanitize(&format!("thread {name} ({tid})")));
            }
            Roots::ByName => parts.push(sanitize(&format!("thread {name}"))),
        }
        for id in rec.stacks[stack as usize].iter().rev() {
            let l = labels
                .entry(*id)
                .or_insert_with(|| label(rec, rec.frame(*id)));
            parts.push(l.clone());
        }
        if let Some(leaf) = leaf {
            parts.push(format!("[wait: {leaf}]"));
        }
        // What the wait was on (a socket's peer, a child's pipe, a file), from the target:
        // sanitised like every other label.
        if let Some(id) = target {
            parts.push(sanitize(&format!("[on: {}]", rec.str(id))));
        }
        *counts.entry(parts.join(";")).or_default() += n;
    }
    counts
}

/// The folded stacks (`root;...;leaf count`) of a view, for one process or all (`pid` None).
pub fn folded(rec: &Recording, d: &Diagnosis, view: View, pid: Option<u32>) -> Vec<String> {
    counts(rec, d, view, pid, Roots::Exact)
        .into_iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect()
}

/// Which recording gives a differential flame graph its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffShape {
    /// Frames sized as in AFTER: what is there now; growth in red.
    After,
    /// Frames sized as in BEFORE: what was there; what shrank or went away in blue.
    Before,
}

/// Differential folded lines (`stack before after`) of a view, both sides merged over
/// processes and rooted at thread names, with counts in microseconds per second of recording
/// (each sample weighs its interval, divided by the recording's length), so recordings of
/// different rate and length compare. Sorted by stack.
pub fn diff_folded(
    before: (&Recording, &Diagnosis),
    after: (&Recording, &Diagnosis),
    view: View,
) -> Vec<(String, u64, u64)> {
    let weigh = |rec: &Recording, d: &Diagnosis| -> BTreeMap<String, u64> {
        let secs = (rec.duration_us() as f64 / 1e6).max(1e-3);
        let per_sample_us = 1e6 / rec.header.rate_hz.max(1e-3);
        counts(rec, d, view, None, Roots::ByName)
            .into_iter()
            .map(|(k, n)| (k, (n as f64 * per_sample_us / secs).round() as u64))
            .collect()
    };
    let b = weigh(before.0, before.1);
    let a = weigh(after.0, after.1);
    let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|k| {
            (
                k.clone(),
                b.get(k).copied().unwrap_or(0),
                a.get(k).copied().unwrap_or(0),
            )
        })
        .filter(|(_, x, y)| *x > 0 || *y > 0)
        .collect()
}

/// Renders a differential flame graph (inferno's differential mode) of a view: frames sized
/// by one side ([`DiffShape`]), coloured by the change from BEFORE to AFTER (red: more time
/// in AFTER, blue: less). `None` when the shaping side has no samples in the view.
pub fn diff_svg(
    before: (&Recording, &Diagnosis),
    after: (&Recording, &Diagnosis),
    view: View,
    shape: DiffShape,
) -> Result<Option<String>, RenderError> {
    let rows = diff_folded(before, after, view);
    // inferno sizes frames by the second count and colours by second minus first;
    // `negate_differentials` flips the colour for the BEFORE-shaped graph, whose columns
    // are swapped.
    let lines: Vec<String> = rows
        .iter()
        .filter_map(|(k, b, a)| {
            let (first, second) = match shape {
                DiffShape::After => (*b, *a),
                DiffShape::Before => (*a, *b),
            };
            (second > 0).then(|| format!("{k} {first} {second}"))
        })
        .collect();
    if lines.is_empty() {
        return Ok(None);
    }
    let mut opts = Options::default();
    opts.title = format!(
        "{}: {}",
        view.short_title(),
        match shape {
            DiffShape::After => "AFTER, coloured by change from BEFORE",
            DiffShape::Before => "BEFORE, coloured by change to AFTER",
        }
    );
    opts.subtitle = Some(format!(
        "width: {} · red: more time in AFTER, blue: less · µs of thread time per second of recording ({} Hz, {:.1} s → {} Hz, {:.1} s)",
        match shape {
            DiffShape::After => "time in AFTER",
            DiffShape::Before => "time in BEFORE",
        },
        before.0.header.rate_hz,
        before.0.duration_us() as f64 / 1e6,
        after.0.header.rate_hz,
        after.0.duration_us() as f64 / 1e6,
    ));
    opts.count_name = "µs/s".to_owned();
    opts.name_type = "Frame:".to_owned();
    opts.deterministic = true;
    opts.negate_differentials = shape == DiffShape::Before;
    opts.min_width = 1.0;
    draw(&mut opts, &lines).map(Some)
}

/// The flame graphs drawn of a view: merged over processes (stem `flame-wall`), and for the
/// loop-blocked view also one per process when the loop runs in several (`flame-loop-blocked-
/// PID`): which worker stalled is what matters there, while the other views merge well. The
/// one policy for the graphs embedded in report.html and the `flame-*.svg` files written.
pub fn targets(d: &Diagnosis, view: View) -> Vec<(Option<u32>, String)> {
    let mut pids: Vec<u32> = d.loops.iter().map(|l| l.pid).collect();
    pids.dedup();
    let mut out = vec![(None, view.stem().to_owned())];
    if view == View::LoopBlocked && pids.len() > 1 {
        out.extend(
            pids.iter()
                .map(|p| (Some(*p), format!("{}-{p}", view.stem()))),
        );
    }
    out
}

/// Runs inferno over folded lines.
fn draw(opts: &mut Options, lines: &[String]) -> Result<String, RenderError> {
    let mut out = Vec::new();
    fg::from_lines(opts, lines.iter().map(|s| s.as_str()), &mut out)
        .map_err(|e| RenderError::FlameGraph(e.to_string()))?;
    let svg = String::from_utf8(out).map_err(|e| RenderError::FlameGraph(e.to_string()))?;
    Ok(guard_replace_state(svg))
}

fn shade(base: (u8, u8, u8), name: &str) -> Color {
    // A stable ±12% brightness variation so neighbouring frames stay distinguishable.
    let h = name
        .bytes()
        .fold(5381u32, |h, b| h.wrapping_mul(33) ^ b as u32);
    let f = 0.88 + (h % 25) as f32 / 100.0;
    let c = |v: u8| ((v as f32 * f).min(255.0)) as u8;
    Color {
        r: c(base.0),
        g: c(base.1),
        b: c(base.2),
    }
}

fn palette(rec: &Recording, lines: &[String]) -> PaletteMap {
    let mut map = PaletteMap::default();
    let mut origin_of: BTreeMap<String, Origin> = BTreeMap::new();
    for f in &rec.frames {
        origin_of.insert(label(rec, f), frames::origin(rec.str(f.file)));
    }
    for line in lines {
        let stack = line.rsplit_once(' ').map(|(s, _)| s).unwrap_or(line);
        for name in stack.split(';') {
            if map.get(name).is_some() {
                continue;
            }
            let base = match origin_of.get(name) {
                Some(Origin::App) => (232, 112, 72),
                Some(Origin::Library) => (86, 182, 204),
                Some(Origin::Stdlib) => (222, 196, 84),
                Some(Origin::Entry) => (170, 170, 170),
                None if name.starts_with("[wait") => (120, 140, 230),
                None => (150, 150, 150),
            };
            map.insert(name, shade(base, name));
        }
    }
    map
}

/// Renders one view as an SVG document; `None` when the view has no samples.
pub fn svg(
    rec: &Recording,
    d: &Diagnosis,
    view: View,
    pid: Option<u32>,
) -> Result<Option<String>, RenderError> {
    let lines = folded(rec, d, view, pid);
    if lines.is_empty() {
        return Ok(None);
    }
    let samples: u64 = lines
        .iter()
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, n)| n.parse::<u64>().ok()))
        .sum();
    let mut map = palette(rec, &lines);
    let mut opts = Options::default();
    opts.title = view.title().to_owned();
    opts.subtitle = Some(format!(
        "{} · {} samples at {} Hz over {:.1} s · each sample counts 1 (≈ {:.0} ms)",
        match pid {
            Some(p) => format!("process {p}"),
            None if rec.processes.len() > 1 => format!("all {} processes", rec.processes.len()),
            None => "all processes".to_owned(),
        },
        samples,
        rec.header.rate_hz,
        rec.duration_us() as f64 / 1e6,
        1000.0 / rec.header.rate_hz
    ));
    opts.count_name = "samples".to_owned();
    opts.name_type = "Frame:".to_owned();
    opts.deterministic = true;
    opts.palette_map = Some(&mut map);
    // Frames narrower than a pixel are invisible but cost bytes: drop them.
    opts.min_width = 1.0;
    draw(&mut opts, &lines).map(Some)
}

/// The await chains of every suspended asyncio task of every task snapshot as folded lines,
/// rooted at the route the task served (`[not a request]` for the others): each task of each
/// snapshot counts 1. Empty when no task snapshot holds a suspended task.
pub fn await_folded(rec: &Recording) -> Vec<String> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut labels: HashMap<u32, String> = HashMap::new();
    for snap in &rec.task_snapshots {
        for t in &snap.tasks {
            if t.state != crate::recording::TaskState::Suspended {
                continue;
            }
            let line = labels.entry(t.stack).or_insert_with(|| {
                rec.stacks[t.stack as usize]
                    .iter()
                    .rev()
                    .map(|f| label(rec, rec.frame(*f)))
                    .collect::<Vec<_>>()
                    .join(";")
            });
            let root = match t.route {
                Some(r) => sanitize(rec.str(r)),
                None => "[not a request]".to_owned(),
            };
            *counts.entry(format!("{root};{line}")).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|(stack, n)| format!("{stack} {n}"))
        .collect()
}

/// The flame graph of [`await_folded`]: where suspended tasks waited, by route; `None` when
/// there is nothing to draw.
pub fn await_svg(rec: &Recording) -> Result<Option<String>, RenderError> {
    let lines = await_folded(rec);
    if lines.is_empty() {
        return Ok(None);
    }
    let mut map = palette(rec, &lines);
    let mut opts = Options::default();
    opts.title = "Where requests wait: await chains of suspended asyncio tasks".to_owned();
    opts.subtitle = Some(format!(
        "{} task snapshots over {:.1} s · each suspended task of each snapshot counts 1 · rooted at its route",
        rec.task_snapshots.len(),
        rec.duration_us() as f64 / 1e6,
    ));
    opts.count_name = "task snapshots".to_owned();
    opts.name_type = "Frame:".to_owned();
    opts.deterministic = true;
    opts.palette_map = Some(&mut map);
    opts.min_width = 1.0;
    draw(&mut opts, &lines).map(Some)
}

/// inferno's script records zoom/search state in the URL with history.replaceState, which
/// throws in a document with an opaque origin (the report embeds the SVG as a data: URI):
/// guard it so zoom and search complete there too.
fn guard_replace_state(svg: String) -> String {
    svg.replace(
        "history.replaceState(null, null, parse_params(params));",
        "try { history.replaceState(null, null, parse_params(params)); } catch (e) {}",
    )
}

/// The height in pixels an SVG declares (`height="..."` on the root element).
pub fn svg_height(svg: &str) -> Option<f64> {
    let root = &svg[svg.find("<svg")?..];
    let root = &root[..root.find('>')?];
    let h = &root[root.find(" height=\"")? + 9..];
    h[..h.find('"')?].trim_end_matches("px").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::catalog::Catalog;
    use crate::analysis::diagnose::{diagnose, Options as DOpts};
    use crate::recording::testing::*;

    #[test]
    fn views_select_the_right_samples_and_escape_names() {
        let evil = "<script>alert(1)</script>";
        let base = vec![
            frame("Runner.run", "/usr/lib/python3.11/asyncio/runners.py", 118),
            frame(
                "Server.run",
                "/v/lib/python3.11/site-packages/uvicorn/server.py",
                86,
            ),
        ];
        let mut blocked = vec![frame(evil, "/srv/app/x;y.py", 3)];
        blocked.extend(base.clone());
        let mut b = RecordingBuilder::new(header(1, 100.0));
        for i in 0..20u64 {
            let main = if (5..15).contains(&i) {
                thread(
                    1,
                    "Main\"Thread'",
                    'S',
                    "clock_nanosleep",
                    false,
                    blocked.clone(),
                )
            } else {
                thread(1, "Main\"Thread'", 'S', "epoll_pwait", false, base.clone())
            };
            let worker = thread(
                2,
                "cruncher",
                'R',
                "running",
                true,
                vec![frame("crunch", "/srv/app/jobs.py", 5)],
            );
            b.sample(1, i * 10_000, 0, &[main, worker]);
        }
        let rec = b.finish(end(200_000, 20));
        let d = diagnose(&rec, &Catalog::builtin(), &DOpts::default());
        let blocked = folded(&rec, &d, View::LoopBlocked, None);
        assert_eq!(blocked.len(), 1, "{blocked:?}");
        assert!(blocked[0].ends_with(" 10"));
        assert!(blocked[0].contains("x:y.py"), "`;` in names is replaced");
        let cpu = folded(&rec, &d, View::Cpu, None);
        assert!(cpu.iter().all(|l| l.contains("cruncher")));
        let off = folded(&rec, &d, View::OffCpu, None);
        assert!(
            off.iter().any(|l| l.contains("[wait: sleep] 10")),
            "{off:?}"
        );
        let wall = folded(&rec, &d, View::Wall, None);
        assert_eq!(
            wall.iter()
                .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
                .sum::<u64>(),
            40
        );
        let svg = svg(&rec, &d, View::LoopBlocked, None).unwrap().unwrap();
        assert!(
            !svg.contains("\n        history.replaceState"),
            "replaceState is guarded"
        );
        assert!(svg.contains("try { history.replaceState"));
        assert!(svg_height(&svg).unwrap() > 50.0);
        assert!(
            !svg.contains(evil),
            "untrusted names are escaped in the SVG"
        );
        assert!(svg.contains("&lt;script&gt;"));
        assert!(svg.contains("Event loop blocked"));
    }
}
