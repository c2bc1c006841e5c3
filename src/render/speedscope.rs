//! speedscope's file format (<https://www.speedscope.app/file-format-schema.json>, the
//! `FileFormat` types of speedscope's `file-format-spec.ts`): one sampled profile per thread,
//! stacks from the root to the leaf, each sample weighted by the wall time it covers in
//! milliseconds (midpoints to its neighbours, as the diagnosis times blocks), so the Time
//! Order view is a real timeline. Event-loop threads get a second profile holding only the
//! samples inside reported stalls. What is lost: thread states, syscalls, wait targets and
//! routes (speedscope has no place for them; they stay in the recording and report.html).

use crate::analysis::diagnose::{coverage_ms, Diagnosis};
use crate::recording::frames::short_file;
use crate::recording::Recording;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// The schema URL speedscope recognises its format by.
pub const SCHEMA: &str = "https://www.speedscope.app/file-format-schema.json";

#[derive(Serialize)]
struct File {
    #[serde(rename = "$schema")]
    schema: &'static str,
    shared: Shared,
    profiles: Vec<Profile>,
    name: String,
    #[serde(rename = "activeProfileIndex")]
    active_profile_index: usize,
    exporter: String,
}

#[derive(Serialize)]
struct Shared {
    frames: Vec<Frame>,
}

#[derive(Serialize)]
struct Frame {
    name: String,
    file: String,
    line: i32,
}

#[derive(Serialize)]
struct Profile {
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    unit: &'static str,
    #[serde(rename = "startValue")]
    start_value: f64,
    #[serde(rename = "endValue")]
    end_value: f64,
    samples: Vec<Vec<usize>>,
    weights: Vec<f64>,
}

/// One thread's samples: (time µs, stack id).
type ThreadSamples = Vec<(u64, u32)>;

/// The speedscope JSON of a recording.
pub fn to_string(rec: &Recording, d: &Diagnosis) -> String {
    let mut threads: BTreeMap<(u32, u32), ThreadSamples> = BTreeMap::new();
    let mut names: HashMap<(u32, u32), String> = HashMap::new();
    for s in &rec.samples {
        for t in &s.threads {
            threads
                .entry((s.pid, t.tid))
                .or_default()
                .push((s.t_us, t.stack));
            if let Some(n) = rec.thread_name(t) {
                names.insert((s.pid, t.tid), n.to_owned());
            }
        }
    }
    // Frame ids of the recording map to speedscope's frame indices, in order of first use.
    let mut index: HashMap<u32, usize> = HashMap::new();
    let mut frames: Vec<Frame> = Vec::new();
    let mut stack_of = |stack: u32| -> Vec<usize> {
        rec.stacks[stack as usize]
            .iter()
            .rev()
            .map(|&f| {
                *index.entry(f).or_insert_with(|| {
                    let def = rec.frame(f);
                    frames.push(Frame {
                        name: rec.str(def.name).to_owned(),
                        file: short_file(rec.str(def.file)).to_owned(),
                        line: def.line,
                    });
                    frames.len() - 1
                })
            })
            .collect()
    };
    let mut profiles = Vec::new();
    let mut loop_first = Vec::new();
    for ((pid, tid), samples) in &threads {
        let is_loop = d.loops.iter().any(|l| l.pid == *pid && l.tid == *tid);
        let name = format!(
            "{} (thread {tid}, process {pid}){}",
            names.get(&(*pid, *tid)).map(String::as_str).unwrap_or("?"),
            if is_loop { " · event loop" } else { "" }
        );
        let times: Vec<u64> = samples.iter().map(|(t, _)| *t).collect();
        let weights = coverage_ms(&times);
        let start = samples.first().map_or(0.0, |(t, _)| *t as f64 / 1000.0);
        let stacks: Vec<Vec<usize>> = samples.iter().map(|(_, s)| stack_of(*s)).collect();
        if is_loop {
            loop_first.push(profiles.len());
            let (stall_stacks, stall_weights): (Vec<_>, Vec<_>) = samples
                .iter()
                .zip(&stacks)
                .zip(&weights)
                .filter(|(((t, _), _), _)| d.stall_samples.contains_key(&(*pid, *tid, *t)))
                .map(|((_, st), w)| (st.clone(), *w))
                .unzip();
            if !stall_stacks.is_empty() {
                profiles.push(profile(
                    format!("{name} · inside stalls"),
                    start,
                    stall_stacks,
                    stall_weights,
                ));
            }
        }
        profiles.push(profile(name, start, stacks, weights));
    }
    let file = File {
        schema: SCHEMA,
        shared: Shared { frames },
        // The first event loop's profile opens first (its stalls when there are any).
        active_profile_index: loop_first.first().copied().unwrap_or(0),
        profiles,
        name: format!(
            "loopprof: {} (pid {})",
            rec.header.target.cmdline.join(" "),
            rec.header.target.pid
        ),
        exporter: format!("loopprof {}", crate::VERSION),
    };
    serde_json::to_string(&file).expect("speedscope file serialises")
}

fn profile(name: String, start: f64, samples: Vec<Vec<usize>>, weights: Vec<f64>) -> Profile {
    let total: f64 = weights.iter().sum();
    Profile {
        kind: "sampled",
        name,
        unit: "milliseconds",
        start_value: start,
        end_value: start + total,
        samples,
        weights,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::catalog::Catalog;
    use crate::analysis::diagnose::{diagnose, Options};
    use crate::recording::testing::*;

    #[test]
    fn one_profile_per_thread_root_first_weighted_in_milliseconds() {
        let mut b = RecordingBuilder::new(header(1, 100.0));
        let stack = vec![
            frame("leaf", "/srv/app/main.py", 3),
            frame("root", "/srv/app/main.py", 1),
        ];
        for i in 0..5u64 {
            b.sample(
                1,
                i * 10_000,
                0,
                &[
                    thread(1, "MainThread", 'S', "futex", false, stack.clone()),
                    thread(2, "<worker>", 'R', "running", true, stack.clone()),
                ],
            );
        }
        let rec = b.finish(end(50_000, 5));
        let d = diagnose(&rec, &Catalog::builtin(), &Options::default());
        let v: serde_json::Value = serde_json::from_str(&to_string(&rec, &d)).unwrap();
        assert_eq!(v["$schema"], SCHEMA);
        let profiles = v["profiles"].as_array().unwrap();
        assert_eq!(profiles.len(), 2);
        let p = &profiles[1];
        assert_eq!(p["type"], "sampled");
        assert_eq!(p["unit"], "milliseconds");
        assert!(p["name"]
            .as_str()
            .unwrap()
            .starts_with("<worker> (thread 2"));
        let frames = v["shared"]["frames"].as_array().unwrap();
        let first: Vec<&str> = p["samples"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                frames[i.as_u64().unwrap() as usize]["name"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(first, ["root", "leaf"], "root first");
        let weights: f64 = p["weights"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_f64().unwrap())
            .sum();
        assert!(
            (weights - 50.0).abs() < 1e-9,
            "5 samples of 10 ms: {weights}"
        );
        assert!(
            (p["endValue"].as_f64().unwrap() - p["startValue"].as_f64().unwrap() - 50.0).abs()
                < 1e-9
        );
    }
}
