//! Imports of py-spy captures made elsewhere: `py-spy record --format speedscope` (JSON) and
//! `--format raw` (folded stacks, `frame;frame;... COUNT`). Each is turned into a recording
//! (the current format, written to memory and read back, so every later stage sees what it
//! always sees) with its [`Recording::imported`] set, so `report` draws the flame graphs and
//! runs whatever diagnosis stacks alone allow, and says what it could not know.
//!
//! What a capture lacks, and how it is filled: thread states and system calls (state `?`, no
//! syscall: the analysis sees a thread waiting for an unknown reason, and tells an idle event
//! loop by its frames alone; py-spy records only threads it judges active unless run with
//! `--idle`), timestamps (sample `i` of a thread is put at `i / rate`; a
//! speedscope capture gives the rate as the inverse of its weights, a raw one none: 100 Hz,
//! py-spy's default, is assumed), processes (one, pid 0), thread ids (1, 2, ... in the
//! capture's order) and, for a raw capture, the order of samples (its lines are aggregated
//! counts: each line's samples are put one after the other). The quality check then marks the
//! recording as imported and untrusted, so no verdict or gate is drawn from made-up timing.

use super::format::*;
use super::{
    load_from, RawFrame, RawThread, Recording, RecordingError, RecordingReader, RecordingWriter,
    TickMeta,
};
use serde::Deserialize;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Which kind of capture a recording was imported from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportKind {
    /// `py-spy record --format speedscope`.
    PySpySpeedscope,
    /// `py-spy record --format raw` (folded stacks).
    PySpyRaw,
}

impl ImportKind {
    /// How the format is called on py-spy's command line.
    pub fn name(self) -> &'static str {
        match self {
            ImportKind::PySpySpeedscope => "py-spy speedscope",
            ImportKind::PySpyRaw => "py-spy raw (folded)",
        }
    }
}

/// The rate a raw capture is assumed to be sampled at (py-spy's default), Hz.
pub const RAW_RATE_HZ: f64 = 100.0;
/// Most samples an import makes (a raw line's count is a claim of the file).
const MAX_SAMPLES: u64 = 5_000_000;
/// Most frames over all samples (samples x depth): bounds the work a small file can ask for.
const MAX_FRAMES: u64 = 50_000_000;
/// Deepest stack kept (the sampler's own limit).
const MAX_DEPTH: usize = 4096;

#[derive(Deserialize)]
struct SsFile {
    shared: SsShared,
    profiles: Vec<SsProfile>,
    #[serde(default)]
    exporter: Option<String>,
}

#[derive(Deserialize)]
struct SsShared {
    frames: Vec<SsFrame>,
}

#[derive(Deserialize)]
struct SsFrame {
    name: String,
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    line: Option<i64>,
}

#[derive(Deserialize)]
struct SsProfile {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    #[serde(default)]
    unit: String,
    #[serde(default)]
    samples: Vec<Vec<usize>>,
    #[serde(default)]
    weights: Vec<f64>,
}

/// What kind of py-spy capture `bytes` holds, if any (a loopprof recording is none).
pub fn sniff(bytes: &[u8]) -> Option<ImportKind> {
    let head = &bytes[..bytes.len().min(4096)];
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        // Cut in the middle of a UTF-8 sequence at the 4096th byte: the valid part.
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()]).ok()?,
        Err(_) => return None,
    };
    let start = text.trim_start();
    if start.starts_with('{') {
        if start.contains("speedscope.app/file-format-schema")
            && !start.contains("\"type\":\"header\"")
        {
            return Some(ImportKind::PySpySpeedscope);
        }
        return None;
    }
    let line = start.lines().next()?;
    let (stack, count) = line.rsplit_once(' ')?;
    (!stack.is_empty() && count.parse::<u64>().is_ok()).then_some(ImportKind::PySpyRaw)
}

/// A frame as py-spy writes it in folded stacks: `name (file:line)`, `name (file)` or `name`.
fn folded_frame(s: &str) -> RawFrame {
    if let Some(inner) = s.strip_suffix(')') {
        if let Some((name, loc)) = inner.rsplit_once(" (") {
            let (file, line) = match loc.rsplit_once(':') {
                Some((f, l)) if l.parse::<i32>().is_ok() => (f, l.parse().unwrap_or(0)),
                _ => (loc, 0),
            };
            return RawFrame {
                name: name.to_owned(),
                file: file.to_owned(),
                line,
            };
        }
    }
    RawFrame {
        name: s.to_owned(),
        file: String::new(),
        line: 0,
    }
}

/// The capture's distinct stacks (frames innermost first), and each thread's samples in
/// order, as indexes into them.
struct Threads {
    stacks: Vec<Vec<RawFrame>>,
    threads: Vec<(String, Vec<usize>)>,
}

/// Counts samples and frames against [`MAX_SAMPLES`] and [`MAX_FRAMES`].
#[derive(Default)]
struct Budget {
    samples: u64,
    frames: u64,
}

impl Budget {
    fn take(&mut self, samples: u64, depth: usize) -> Result<(), String> {
        self.samples = self.samples.saturating_add(samples);
        self.frames = self
            .frames
            .saturating_add(samples.saturating_mul(depth as u64));
        if self.samples > MAX_SAMPLES {
            return Err(format!("more than {MAX_SAMPLES} samples"));
        }
        if self.frames > MAX_FRAMES {
            return Err(format!("more than {MAX_FRAMES} frames over all samples"));
        }
        Ok(())
    }
}

fn parse_speedscope(bytes: &[u8]) -> Result<(Threads, f64, String), String> {
    let f: SsFile =
        serde_json::from_slice(bytes).map_err(|e| format!("not speedscope JSON: {e}"))?;
    let frames: Vec<RawFrame> = f
        .shared
        .frames
        .iter()
        .map(|fr| RawFrame {
            name: fr.name.clone(),
            file: fr.file.clone().unwrap_or_default(),
            line: fr.line.unwrap_or(0).clamp(0, i32::MAX as i64) as i32,
        })
        .collect();
    let mut rate = None;
    let mut out = Threads {
        stacks: Vec::new(),
        threads: Vec::new(),
    };
    let mut index: HashMap<&[usize], usize> = HashMap::new();
    let mut budget = Budget::default();
    for p in &f.profiles {
        if p.kind != "sampled" {
            return Err(format!(
                "profile {:?} is {:?}, not \"sampled\"",
                p.name, p.kind
            ));
        }
        // A weight is the time one sample stands for, in the profile's unit.
        let unit_s = match p.unit.as_str() {
            "seconds" => Some(1.0),
            "milliseconds" => Some(1e-3),
            "microseconds" => Some(1e-6),
            "nanoseconds" => Some(1e-9),
            _ => None,
        };
        if let (Some(w), Some(unit_s)) = (
            p.weights.first().filter(|w| **w > 0.0 && w.is_finite()),
            unit_s,
        ) {
            rate.get_or_insert(1.0 / (w * unit_s));
        }
        let mut samples = Vec::with_capacity(p.samples.len().min(MAX_SAMPLES as usize));
        for s in &p.samples {
            let s = &s[s.len().saturating_sub(MAX_DEPTH)..];
            budget.take(1, s.len())?;
            let id = match index.get(s) {
                Some(id) => *id,
                None => {
                    let mut stack = Vec::with_capacity(s.len());
                    for i in s.iter().rev() {
                        stack.push(frames.get(*i).cloned().ok_or_else(|| {
                            format!("a sample uses frame {i}, which is not defined")
                        })?);
                    }
                    out.stacks.push(stack);
                    index.insert(s, out.stacks.len() - 1);
                    out.stacks.len() - 1
                }
            };
            samples.push(id);
        }
        out.threads.push((p.name.clone(), samples));
    }
    let rate = rate.unwrap_or(RAW_RATE_HZ).clamp(0.1, 100_000.0);
    Ok((out, rate, f.exporter.unwrap_or_default()))
}

fn parse_raw(bytes: &[u8]) -> Result<Threads, String> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Threads {
        stacks: Vec::new(),
        threads: Vec::new(),
    };
    // Threads in the order the capture first names them.
    let mut thread_index: HashMap<String, usize> = HashMap::new();
    let mut budget = Budget::default();
    for (no, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (stack, count) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("line {}: not `frames COUNT`", no + 1))?;
        let count: u64 = count
            .parse()
            .map_err(|_| format!("line {}: {count:?} is not a sample count", no + 1))?;
        let mut parts: Vec<&str> = stack.split(';').collect();
        // `py-spy record --threads` puts the thread first: `thread (TID): NAME`, and
        // `--subprocesses` the process before it.
        let mut thread = String::from("?");
        while let Some(first) = parts.first() {
            if first.starts_with("thread (") || first.starts_with("process ") {
                thread = if thread == "?" {
                    (*first).to_owned()
                } else {
                    format!("{thread} {first}")
                };
                parts.remove(0);
            } else {
                break;
            }
        }
        let parts = &parts[parts.len().saturating_sub(MAX_DEPTH)..];
        budget.take(count, parts.len())?;
        out.stacks
            .push(parts.iter().rev().map(|s| folded_frame(s)).collect());
        let stack = out.stacks.len() - 1;
        let t = match thread_index.get(&thread) {
            Some(t) => *t,
            None => {
                out.threads.push((thread.clone(), Vec::new()));
                thread_index.insert(thread, out.threads.len() - 1);
                out.threads.len() - 1
            }
        };
        out.threads[t]
            .1
            .extend(std::iter::repeat_n(stack, count as usize));
    }
    if out.threads.is_empty() {
        return Err("no sample in the file".into());
    }
    Ok(out)
}

#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buffer lock").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Imports the py-spy capture `bytes` (read from `path`, used in messages and as the
/// target's name); `Ok(None)` when it is not one (a loopprof recording, or anything else).
pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Option<Recording>, RecordingError> {
    let Some(kind) = sniff(bytes) else {
        return Ok(None);
    };
    let bad = |why: String| RecordingError::NotARecording {
        path: path.to_path_buf(),
        why: format!("a {} capture that cannot be read: {why}", kind.name()),
    };
    let (threads, rate, exporter) = match kind {
        ImportKind::PySpySpeedscope => parse_speedscope(bytes).map_err(bad)?,
        ImportKind::PySpyRaw => (parse_raw(bytes).map_err(bad)?, RAW_RATE_HZ, String::new()),
    };
    let header = Header {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        loopprof_version: crate::VERSION.into(),
        py_spy_version: if exporter.is_empty() {
            "?".into()
        } else {
            exporter
        },
        started_at: "1970-01-01T00:00:00.000000Z".into(),
        rate_hz: rate,
        host: String::new(),
        target: Target {
            how: TargetKind::Other,
            pid: 0,
            cmdline: vec![format!("{} capture {}", kind.name(), path.display())],
            pattern: None,
        },
        options: CaptureOptionsRecord {
            nonblocking: true,
            subprocesses: false,
            locking: "none".into(),
            max_stop_pct: None,
            task_interval_ms: None,
        },
        processes: vec![ProcessInfo {
            pid: 0,
            ppid: 0,
            cmdline: vec![path.display().to_string()],
            python_version: String::new(),
            exe: String::new(),
        }],
        clock_ticks_per_s: 100,
        time_unit_us: time_unit_for(rate),
    };
    let buf = SharedBuf::default();
    let w = RecordingWriter::from_writer(Box::new(buf.clone()));
    let write = |mut w: RecordingWriter| -> Result<(), RecordingError> {
        w.write(&Record::Header(header))?;
        let Threads { stacks, threads } = &threads;
        let longest = threads.iter().map(|(_, s)| s.len()).max().unwrap_or(0);
        let period_us = 1e6 / rate;
        for i in 0..longest {
            let t_us = (i as f64 * period_us) as u64;
            let raw: Vec<RawThread> = threads
                .iter()
                .enumerate()
                .filter_map(|(k, (name, samples))| {
                    Some(RawThread {
                        tid: k as u32 + 1,
                        name: Some(name.clone()),
                        active: true,
                        gil: false,
                        state: '?',
                        syscall: None,
                        sched: None,
                        runs: None,
                        wait: None,
                        route: None,
                        request: None,
                        frames: stacks[*samples.get(i)?].clone(),
                        stopped: false,
                    })
                })
                .collect();
            w.write_sample(
                &TickMeta {
                    pid: 0,
                    t_us,
                    ..TickMeta::default()
                },
                &raw,
            )?;
        }
        w.finish(&End {
            duration_us: (longest as f64 * period_us) as u64,
            reason: EndReason::Duration,
            samples: longest as u64,
            ..End::default()
        })
    };
    write(w)?;
    let bytes = buf.0.lock().expect("buffer lock").clone();
    let reader =
        RecordingReader::from_reader(path.to_path_buf(), Box::new(std::io::Cursor::new(bytes)));
    let mut rec = load_from(reader)?;
    rec.imported = Some(kind);
    // py-spy shortens file names to their package part unless told not to: then the event
    // loop, the libraries and the application cannot be told apart.
    if !rec.strings.is_empty() && !rec.frames.iter().any(|f| rec.str(f.file).starts_with('/')) {
        rec.warnings.push(format!(
            "the capture's file names are shortened (py-spy's default for --format raw), so the event loop, libraries and application code cannot be told apart: capture with `py-spy record --format raw --full-filenames --idle`{}",
            if kind == ImportKind::PySpySpeedscope { " (or --format speedscope, which keeps them)" } else { "" }
        ));
    }
    Ok(Some(rec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raw_capture_becomes_one_thread_per_thread_prefix_with_its_counts() {
        let raw = b"thread (0x1);<module> (app.py:3);main (app.py:9);work (lib.py:12) 3\n\
                    thread (0x1);<module> (app.py:3);main (app.py:9) 2\n\
                    thread (0x2);run (pool.py:5) 1\n";
        assert_eq!(sniff(raw), Some(ImportKind::PySpyRaw));
        let rec = from_bytes(Path::new("x.txt"), raw).unwrap().unwrap();
        assert_eq!(rec.imported, Some(ImportKind::PySpyRaw));
        assert_eq!(rec.header.rate_hz, RAW_RATE_HZ);
        let per_thread: usize = rec.samples.iter().map(|s| s.threads.len()).sum();
        assert_eq!(per_thread, 6);
        let leaf = rec.stack(rec.samples[0].threads[0].stack).next().unwrap();
        assert_eq!(
            (rec.str(leaf.name), rec.str(leaf.file), leaf.line),
            ("work", "lib.py", 12)
        );
    }

    #[test]
    fn a_speedscope_capture_keeps_its_order_and_rate() {
        let json = br#"{"$schema":"https://www.speedscope.app/file-format-schema.json",
            "shared":{"frames":[{"name":"<module>","file":"/srv/app.py","line":3},
                                {"name":"handler","file":"/srv/app.py","line":20}]},
            "profiles":[{"type":"sampled","name":"MainThread","unit":"seconds","startValue":0,
                         "endValue":0.03,"samples":[[0],[0,1],[0,1]],"weights":[0.01,0.01,0.01]}],
            "exporter":"py-spy@0.4.3"}"#;
        assert_eq!(sniff(json), Some(ImportKind::PySpySpeedscope));
        let rec = from_bytes(Path::new("p.json"), json).unwrap().unwrap();
        assert_eq!(rec.header.rate_hz, 100.0);
        // The weight's unit counts: 10 ms weights in milliseconds are 100 Hz too.
        let ms = String::from_utf8_lossy(json)
            .replace("\"seconds\"", "\"milliseconds\"")
            .replace("0.01", "10");
        let rec_ms = from_bytes(Path::new("p.json"), ms.as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(rec_ms.header.rate_hz, 100.0);
        assert_eq!(rec.samples.len(), 3);
        assert_eq!(rec.samples[2].t_us, 20_000);
        let leaf = rec.stack(rec.samples[1].threads[0].stack).next().unwrap();
        assert_eq!(rec.str(leaf.name), "handler");
        assert_eq!(rec.header.py_spy_version, "py-spy@0.4.3");
    }

    #[test]
    fn recordings_and_garbage_are_not_captures_and_bad_captures_say_why() {
        assert_eq!(sniff(b"{\"type\":\"header\",\"data\":{}}\n"), None);
        assert_eq!(sniff(b"\x1f\x8b\x08"), None);
        assert_eq!(sniff(b"hello world\n"), None);
        // Short or cut non-UTF-8 input (a gzip file cut after two bytes, a stray byte).
        assert_eq!(sniff(b"\x1f\x8b"), None);
        assert_eq!(sniff(b"\xff"), None);
        assert_eq!(sniff(b""), None);
        // A small file whose counts ask for billions of frames is refused, not allocated.
        let deep = format!("{} 30000\n", vec!["f"; 2000].join(";"));
        let e = from_bytes(Path::new("d.txt"), deep.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("frames over all samples"), "{e}");
        let bad = br#"{"$schema":"https://www.speedscope.app/file-format-schema.json",
            "shared":{"frames":[]},"profiles":[{"type":"sampled","name":"t","samples":[[7]],"weights":[1]}]}"#;
        let e = from_bytes(Path::new("b.json"), bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("frame 7"), "{e}");
        let huge = b"a (x.py:1) 99999999999\n";
        let e = from_bytes(Path::new("h.txt"), huge)
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than"), "{e}");
    }
}
