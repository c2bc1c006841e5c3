//! The Trace Event Format (the JSON object form of
//! <https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU>): what
//! Perfetto UI (ui.perfetto.dev) and `chrome://tracing` open.
//!
//! One track per sampled thread (`process_name`/`thread_name` metadata events), holding
//! complete (`X`) slices: consecutive samples of one state are one slice, from halfway to the
//! previous sample to halfway to the next (as the diagnosis times blocks). An event-loop
//! thread's state is its loop state (`idle`, `busy`, `stall`, `gil-wait`, `overhead`,
//! `not-loop`), a stall's slice named after its finding's category; another thread's state is
//! its activity (`on-cpu`, `native`, `waiting:socket`, `gil-wait`). A slice's `args` hold its
//! innermost frame and the route served. Instants (`i`) mark each `--probe` request and the
//! first stall sample of each finding; a counter (`C`) per process carries its CPU use. Times
//! are microseconds since the recording started. What is lost: the full stacks (use the
//! `speedscope` or `pprof` exports for those).

use crate::analysis::diagnose::{coverage_ms, Diagnosis};
use crate::analysis::loops::{self, LoopState};
use crate::recording::frames::short_file;
use crate::recording::Recording;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

/// What a thread sample shows on its track.
fn state_of(
    rec: &Recording,
    d: &Diagnosis,
    s: &crate::recording::Sample,
    t: &crate::recording::ThreadSample,
) -> String {
    match d.loops.iter().find(|l| l.pid == s.pid && l.tid == t.tid) {
        Some(lt) => match d.stall_samples.get(&(s.pid, t.tid, s.t_us)) {
            Some(i) => format!(
                "stall: {}",
                d.findings.get(*i).map_or("?", |f| f.category.as_str())
            ),
            None => match loops::classify(rec, lt, s, t) {
                LoopState::Idle => "idle".into(),
                LoopState::Overhead => "overhead".into(),
                LoopState::Busy { .. } => "busy".into(),
                LoopState::GilWait => "gil-wait".into(),
                LoopState::NotLoop => "not-loop".into(),
            },
        },
        None => loops::activity(rec, s, t).label(),
    }
}

/// One slice being built: state, start µs, end µs, leaf frame, route.
struct Open {
    state: String,
    start: f64,
    end: f64,
    leaf: String,
    route: Option<String>,
}

fn slice(pid: u32, tid: u32, o: Open) -> Value {
    let mut args = json!({ "leaf": o.leaf });
    if let Some(r) = o.route {
        args["route"] = json!(r);
    }
    json!({
        "ph": "X", "pid": pid, "tid": tid, "name": o.state,
        "ts": o.start, "dur": (o.end - o.start).max(0.0), "args": args,
    })
}

/// The trace of a recording, as JSON text.
pub fn to_string(rec: &Recording, d: &Diagnosis) -> String {
    let mut events: Vec<Value> = Vec::new();
    // Per thread: its samples in time order.
    let mut threads: BTreeMap<(u32, u32), Vec<(usize, usize)>> = BTreeMap::new();
    for (i, s) in rec.samples.iter().enumerate() {
        for (j, t) in s.threads.iter().enumerate() {
            threads.entry((s.pid, t.tid)).or_default().push((i, j));
        }
    }
    for p in &rec.processes {
        events.push(json!({
            "ph": "M", "pid": p.pid, "tid": 0, "name": "process_name",
            "args": { "name": format!("{} {}", p.pid, p.cmdline.join(" ")) },
        }));
    }
    for ((pid, tid), list) in &threads {
        let (i0, j0) = list[0];
        let name = rec.thread_name(&rec.samples[i0].threads[j0]).unwrap_or("?");
        let is_loop = d.loops.iter().any(|l| l.pid == *pid && l.tid == *tid);
        events.push(json!({
            "ph": "M", "pid": pid, "tid": tid, "name": "thread_name",
            "args": { "name": format!("{name}{}", if is_loop { " (event loop)" } else { "" }) },
        }));
        let times: Vec<u64> = list.iter().map(|(i, _)| rec.samples[*i].t_us).collect();
        let cover = coverage_ms(&times);
        let mut open: Option<Open> = None;
        for (k, (i, j)) in list.iter().enumerate() {
            let s = &rec.samples[*i];
            let t = &s.threads[*j];
            let state = state_of(rec, d, s, t);
            // Halfway to the neighbouring samples (the ends: half the coverage).
            let at = times[k] as f64;
            let start = match k.checked_sub(1) {
                Some(p) => (times[p] as f64 + at) / 2.0,
                None => at - cover[k] * 500.0,
            };
            let end = match times.get(k + 1) {
                Some(n) => (at + *n as f64) / 2.0,
                None => at + cover[k] * 500.0,
            };
            let leaf = rec
                .stack(t.stack)
                .next()
                .map(|f| {
                    format!(
                        "{} ({}:{})",
                        rec.str(f.name),
                        short_file(rec.str(f.file)),
                        f.line
                    )
                })
                .unwrap_or_default();
            let route = t.route.map(|r| rec.str(r).to_owned());
            match &mut open {
                Some(o) if o.state == state && o.route == route => o.end = end,
                _ => {
                    if let Some(o) = open.take() {
                        events.push(slice(*pid, *tid, o));
                    }
                    open = Some(Open {
                        state,
                        start,
                        end,
                        leaf,
                        route,
                    });
                }
            }
        }
        if let Some(o) = open {
            events.push(slice(*pid, *tid, o));
        }
    }
    // The first stall sample of each finding.
    let mut first: HashMap<usize, (u32, u32, u64)> = HashMap::new();
    for (&(pid, tid, t), &i) in &d.stall_samples {
        let e = first.entry(i).or_insert((pid, tid, t));
        if t < e.2 {
            *e = (pid, tid, t);
        }
    }
    let mut marks: Vec<_> = first.into_iter().collect();
    marks.sort_by_key(|(i, _)| *i);
    for (i, (pid, tid, t)) in marks {
        if let Some(f) = d.findings.get(i) {
            events.push(json!({
                "ph": "i", "s": "t", "pid": pid, "tid": tid, "ts": t,
                "name": format!("finding: {}", f.category),
                "args": { "title": f.title, "max_stall_ms": f.max_stall_ms },
            }));
        }
    }
    for p in &rec.probes {
        events.push(json!({
            "ph": "i", "s": "g", "pid": rec.header.target.pid, "tid": 0, "ts": p.t_us,
            "name": format!("probe {}", p.url),
            "args": { "latency_ms": p.latency_ms, "status": p.status, "error": p.error },
        }));
    }
    // CPU per process: the CPU time used between two ticks over the time between them.
    let mut last: HashMap<u32, (u64, u64)> = HashMap::new();
    for s in &rec.samples {
        if let Some((t0, c0)) = last.insert(s.pid, (s.t_us, s.cpu_us)) {
            if s.t_us > t0 {
                let pct = 100.0 * s.cpu_us.saturating_sub(c0) as f64 / (s.t_us - t0) as f64;
                events.push(json!({
                    "ph": "C", "pid": s.pid, "tid": 0, "ts": s.t_us, "name": "cpu",
                    "args": { "cpu %": (pct * 10.0).round() / 10.0 },
                }));
            }
        }
    }
    serde_json::to_string(&json!({
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "exporter": format!("loopprof {}", crate::VERSION),
            "started_at": rec.header.started_at,
            "target": rec.header.target.cmdline.join(" "),
        },
    }))
    .expect("trace serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::catalog::Catalog;
    use crate::analysis::diagnose::{diagnose, Options};

    #[test]
    fn tracks_hold_non_overlapping_slices_covering_every_sample() {
        let rec = crate::recording::testing::tiny_recording();
        let d = diagnose(&rec, &Catalog::builtin(), &Options::default());
        let v: Value = serde_json::from_str(&to_string(&rec, &d)).unwrap();
        let events = v["traceEvents"].as_array().unwrap();
        let mut by_track: BTreeMap<(u64, u64), Vec<(f64, f64)>> = BTreeMap::new();
        for e in events {
            assert!(e["ph"].is_string() && e["pid"].is_u64() && e["name"].is_string());
            if e["ph"] == "X" {
                let k = (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap());
                let ts = e["ts"].as_f64().unwrap();
                by_track
                    .entry(k)
                    .or_default()
                    .push((ts, ts + e["dur"].as_f64().unwrap()));
            }
        }
        let threads: std::collections::BTreeSet<(u64, u64)> = rec
            .samples
            .iter()
            .flat_map(|s| s.threads.iter().map(move |t| (s.pid as u64, t.tid as u64)))
            .collect();
        assert_eq!(
            by_track.keys().copied().collect::<Vec<_>>(),
            threads.into_iter().collect::<Vec<_>>()
        );
        for slices in by_track.values() {
            for w in slices.windows(2) {
                assert!(w[0].1 <= w[1].0 + 1e-6, "slices overlap: {w:?}");
            }
        }
        assert!(events
            .iter()
            .any(|e| e["ph"] == "M" && e["name"] == "thread_name"));
    }

    #[test]
    fn slices_meet_halfway_between_unevenly_spaced_samples() {
        use crate::recording::testing::{end, frame, header, thread, RecordingBuilder};
        let mut b = RecordingBuilder::new(header(7, 100.0));
        let worker = |syscall: &str| {
            thread(
                8,
                "worker",
                'S',
                syscall,
                false,
                vec![frame("work", "/srv/app.py", 1)],
            )
        };
        // Samples at 0, 10 and 40 ms: waiting on a lock, sleeping, on a lock again.
        b.sample(7, 0, 0, &[worker("futex")]);
        b.sample(7, 10_000, 0, &[worker("clock_nanosleep")]);
        b.sample(7, 40_000, 0, &[worker("futex")]);
        let rec = b.finish(end(40_000, 3));
        let d = diagnose(&rec, &Catalog::builtin(), &Options::default());
        let v: Value = serde_json::from_str(&to_string(&rec, &d)).unwrap();
        let spans: Vec<(String, f64, f64)> = v["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["ph"] == "X")
            .map(|e| {
                let ts = e["ts"].as_f64().unwrap();
                (
                    e["name"].as_str().unwrap().to_owned(),
                    ts,
                    ts + e["dur"].as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(spans.len(), 3, "{spans:?}");
        assert_eq!(spans[1].0, "waiting:sleep");
        // Each boundary is halfway between the two samples on either side of it.
        assert_eq!((spans[0].2, spans[1].1), (5_000.0, 5_000.0));
        assert_eq!((spans[1].2, spans[2].1), (25_000.0, 25_000.0));
    }
}
