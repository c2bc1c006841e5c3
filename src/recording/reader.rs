//! Streaming reader and the fully loaded [`Recording`].
//!
//! [`RecordingReader`] yields records one at a time from a gzip-compressed or plain file. A
//! file cut short (a recorder killed with SIGKILL, a full disk) is read up to its last complete
//! record and [`RecordingReader::truncated`] says why it stopped; records of a type this version
//! does not know are skipped and counted, so newer minor additions stay readable.

use super::format::*;
use super::{RecordingError, RECORDING_FILE};
use flate2::read::MultiGzDecoder;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Reads records one by one.
pub struct RecordingReader {
    path: PathBuf,
    input: Box<dyn BufRead>,
    line: Vec<u8>,
    line_no: u64,
    truncated: Option<String>,
    unknown: u64,
    done: bool,
}

/// Resolves a path given by the user: a recording file, or an output directory holding one.
pub fn resolve_path(path: &Path) -> PathBuf {
    if path.is_dir() {
        let gz = path.join(RECORDING_FILE);
        if gz.exists() {
            return gz;
        }
        let plain = path.join(RECORDING_FILE.trim_end_matches(".gz"));
        if plain.exists() {
            return plain;
        }
        return gz;
    }
    path.to_path_buf()
}

impl RecordingReader {
    /// Opens a recording (file or output directory); gzip is detected from the content.
    pub fn open(path: &Path) -> Result<Self, RecordingError> {
        let path = resolve_path(path);
        let mut file = File::open(&path).map_err(|source| RecordingError::Open {
            path: path.clone(),
            source,
        })?;
        let mut magic = [0u8; 2];
        let n = file
            .read(&mut magic)
            .map_err(|source| RecordingError::Open {
                path: path.clone(),
                source,
            })?;
        let file = File::open(&path).map_err(|source| RecordingError::Open {
            path: path.clone(),
            source,
        })?;
        let input: Box<dyn BufRead> = if n == 2 && magic == [0x1f, 0x8b] {
            Box::new(BufReader::with_capacity(
                256 * 1024,
                MultiGzDecoder::new(BufReader::new(file)),
            ))
        } else {
            Box::new(BufReader::with_capacity(256 * 1024, file))
        };
        Ok(Self::from_reader(path, input))
    }

    /// Reads records from any buffered reader (`path` is only used in messages).
    pub fn from_reader(path: PathBuf, input: Box<dyn BufRead>) -> Self {
        RecordingReader {
            path,
            input,
            line: Vec::with_capacity(4096),
            line_no: 0,
            truncated: None,
            unknown: 0,
            done: false,
        }
    }

    /// Why reading stopped before the end record, when the file was cut short.
    pub fn truncated(&self) -> Option<&str> {
        self.truncated.as_deref()
    }

    /// How many records of unknown types were skipped.
    pub fn unknown_records(&self) -> u64 {
        self.unknown
    }

    /// The next record, `Ok(None)` at the end (or at the cut of a truncated file).
    pub fn next_record(&mut self) -> Result<Option<Record>, RecordingError> {
        loop {
            if self.done {
                return Ok(None);
            }
            self.line.clear();
            match self.input.read_until(b'\n', &mut self.line) {
                Ok(0) => {
                    self.done = true;
                    return Ok(None);
                }
                Ok(_) => {}
                Err(e) => {
                    // A gzip stream cut short ends with UnexpectedEof (or a corrupt block).
                    self.done = true;
                    self.truncated = Some(format!(
                        "the file ends abruptly after record {} ({e})",
                        self.line_no
                    ));
                    return Ok(None);
                }
            }
            self.line_no += 1;
            let complete = self.line.last() == Some(&b'\n');
            match serde_json::from_slice::<Record>(&self.line) {
                Ok(record) => return Ok(Some(record)),
                Err(e) => {
                    if !complete {
                        self.done = true;
                        self.truncated = Some(format!(
                            "the last record (line {}) is incomplete",
                            self.line_no
                        ));
                        return Ok(None);
                    }
                    // A well-formed envelope of a type we do not know: skip it.
                    #[derive(serde::Deserialize)]
                    struct Envelope {
                        #[serde(rename = "type")]
                        kind: String,
                    }
                    if let Ok(env) = serde_json::from_slice::<Envelope>(&self.line) {
                        if !Record::TYPES.contains(&env.kind.as_str()) {
                            self.unknown += 1;
                            continue;
                        }
                    }
                    if self.line_no == 1 {
                        return Err(RecordingError::NotARecording {
                            path: self.path.clone(),
                            why: format!("first line is not a loopprof record: {e}"),
                        });
                    }
                    return Err(RecordingError::Corrupt {
                        path: self.path.clone(),
                        why: format!("line {}: {e}", self.line_no),
                    });
                }
            }
        }
    }
}

/// A recording loaded into memory with every id resolved and checked.
#[derive(Debug, Clone)]
pub struct Recording {
    /// The header.
    pub header: Header,
    /// Interned strings, indexed by id.
    pub strings: Vec<String>,
    /// Interned frames, indexed by id.
    pub frames: Vec<FrameDef>,
    /// Interned stacks (frame ids, innermost first), indexed by id.
    pub stacks: Vec<Vec<u32>>,
    /// Source lines by (file string id, line).
    pub sources: HashMap<(u32, i32), String>,
    /// Every process sampled: the header's, then those that started later.
    pub processes: Vec<ProcessInfo>,
    /// Process events in order.
    pub process_events: Vec<ProcessEvent>,
    /// Samples in file order (ordered by time within each process).
    pub samples: Vec<Sample>,
    /// Failed ticks.
    pub errors: Vec<SampleError>,
    /// Probe requests (`record --probe`), in time order.
    pub probes: Vec<ProbeResult>,
    /// Route tables of the recorded applications (version 4).
    pub routes: Vec<RouteDef>,
    /// Asyncio task snapshots in file order (version 6).
    pub task_snapshots: Vec<TaskSnapshot>,
    /// Set when this is not a loopprof recording but a py-spy capture imported as one
    /// ([`super::import`]): its thread states and timing are made up.
    pub imported: Option<super::import::ImportKind>,
    /// The end record; `None` when the file was cut short.
    pub end: Option<End>,
    /// Problems met while reading (truncation, skipped records), for the user.
    pub warnings: Vec<String>,
    /// Caches of facts later stages derive from the strings and stacks (filled on first
    /// use, never written).
    pub derived: super::derived::Derived,
}

impl Recording {
    /// The string with this id.
    pub fn str(&self, id: u32) -> &str {
        &self.strings[id as usize]
    }

    /// The frame with this id.
    pub fn frame(&self, id: u32) -> &FrameDef {
        &self.frames[id as usize]
    }

    /// The frames of a stack, innermost first.
    pub fn stack(&self, id: u32) -> impl Iterator<Item = &FrameDef> + '_ {
        self.stacks[id as usize].iter().map(|f| self.frame(*f))
    }

    /// A thread's name, if recorded.
    pub fn thread_name(&self, t: &ThreadSample) -> Option<&str> {
        t.name.map(|id| self.str(id))
    }

    /// The source text of a frame's line, if it was recorded.
    pub fn source_line(&self, frame: &FrameDef) -> Option<&str> {
        self.sources
            .get(&(frame.file, frame.line))
            .map(|s| s.as_str())
    }

    /// Duration covered, in microseconds: the end record's, or the last sample's time.
    pub fn duration_us(&self) -> u64 {
        match &self.end {
            Some(end) => end.duration_us,
            None => self.samples.iter().map(|s| s.t_us).max().unwrap_or(0),
        }
    }
}

/// Loads a whole recording (file or output directory), checking every reference.
pub fn load(path: &Path) -> Result<Recording, RecordingError> {
    let path = resolve_path(path);
    if let Some(rec) = import_if_capture(&path)? {
        return Ok(rec);
    }
    load_from(RecordingReader::open(&path)?)
}

/// A py-spy capture at `path` imported as a recording ([`super::import`]); `None` for
/// anything else (a recording, or what the reader will refuse with its own error).
fn import_if_capture(path: &Path) -> Result<Option<Recording>, RecordingError> {
    /// Largest capture read (bytes).
    const MAX_CAPTURE: u64 = 1 << 30;
    let open_err = |source| RecordingError::Open {
        path: path.to_path_buf(),
        source,
    };
    let Ok(mut file) = File::open(path) else {
        return Ok(None); // the reader says why
    };
    let mut head = Vec::with_capacity(4096);
    (&mut file)
        .take(4096)
        .read_to_end(&mut head)
        .map_err(open_err)?;
    if super::import::sniff(&head).is_none() {
        return Ok(None);
    }
    let mut bytes = head;
    file.take(MAX_CAPTURE)
        .read_to_end(&mut bytes)
        .map_err(open_err)?;
    super::import::from_bytes(path, &bytes)
}

/// Turns version-2 `tick` records (differences) back into absolute samples.
struct TickState {
    unit: u64,
    /// Per process: running sums of time (units) and CPU time (µs).
    process: HashMap<u32, (u64, i64)>,
    /// Per (process, thread): running sums of the scheduler times (units).
    sched: HashMap<(u32, u32), [i64; 2]>,
    runs: HashMap<(u32, u32), i64>,
    /// Per process: running sums of the GC collections per generation.
    gc: HashMap<u32, [u64; 3]>,
    /// System call names, each held once.
    syscalls: HashMap<String, std::sync::Arc<str>>,
}

impl TickState {
    fn new(unit: u32) -> Self {
        TickState {
            unit: u64::from(unit.max(1)),
            process: HashMap::new(),
            sched: HashMap::new(),
            runs: HashMap::new(),
            gc: HashMap::new(),
            syscalls: HashMap::new(),
        }
    }

    fn sample(&mut self, t: Tick) -> Sample {
        let unit = self.unit;
        let (time, cpu) = self.process.entry(t.pid).or_insert((0, 0));
        *time = time.saturating_add(t.dt);
        *cpu = cpu.saturating_add(t.dcpu_us);
        let (t_units, cpu_us) = (*time, (*cpu).max(0) as u64);
        let pid = t.pid;
        let threads = t
            .threads
            .into_iter()
            .map(|th| {
                let sched = th.dsched.map(|d| {
                    let sum = self.sched.entry((pid, th.tid)).or_insert([0, 0]);
                    sum[0] = sum[0].saturating_add(d[0]);
                    sum[1] = sum[1].saturating_add(d[1]);
                    let ns = |v: i64| (v.max(0) as u64).saturating_mul(unit * 1000);
                    [ns(sum[0]), ns(sum[1])]
                });
                let runs = th.druns.map(|d| {
                    let sum = self.runs.entry((pid, th.tid)).or_insert(0);
                    *sum = sum.saturating_add(d);
                    (*sum).max(0) as u64
                });
                ThreadSample {
                    runs,
                    tid: th.tid,
                    name: th.name,
                    active: th.active,
                    gil: th.gil,
                    state: th.state,
                    syscall: th.syscall.map(|s| match self.syscalls.get(&s) {
                        Some(shared) => shared.clone(),
                        None => {
                            let shared: std::sync::Arc<str> = s.as_str().into();
                            self.syscalls.insert(s, shared.clone());
                            shared
                        }
                    }),
                    stack: th.stack,
                    sched,
                    wait: th.wait,
                    route: th.route,
                    req: th.req,
                    stopped: th.stopped,
                }
            })
            .collect();
        let gc = t.gc.map(|g| {
            let sum = self.gc.entry(pid).or_insert([0; 3]);
            for (s, d) in sum.iter_mut().zip(g.dn) {
                *s = s.saturating_add(d);
            }
            GcSample {
                collecting: g.on,
                collections: *sum,
            }
        });
        Sample {
            gc,
            pid,
            t_us: t_units.saturating_mul(unit),
            read_us: t.read_us,
            late_us: (u64::from(t.late) * unit).min(u64::from(u32::MAX)) as u32,
            cpu_us,
            threads,
            lost: t.lost,
        }
    }
}

/// Loads a whole recording from an open reader, checking every reference.
pub fn load_from(mut reader: RecordingReader) -> Result<Recording, RecordingError> {
    let path = reader.path.clone();
    let corrupt = |why: String| RecordingError::Corrupt {
        path: path.clone(),
        why,
    };
    let header = read_header(&mut reader)?;
    let mut rec = Recording {
        processes: header.processes.clone(),
        header,
        strings: Vec::new(),
        frames: Vec::new(),
        stacks: Vec::new(),
        sources: HashMap::new(),
        process_events: Vec::new(),
        samples: Vec::new(),
        errors: Vec::new(),
        probes: Vec::new(),
        routes: Vec::new(),
        task_snapshots: Vec::new(),
        imported: None,
        end: None,
        warnings: Vec::new(),
        derived: Default::default(),
    };
    let mut ticks = TickState::new(rec.header.time_unit());
    // Before version 7 a blocking-mode recording did not say which samples stopped their
    // thread: nearly all did.
    let all_stopped = rec.header.version < 7 && !rec.header.options.nonblocking;
    while let Some(record) = reader.next_record()? {
        let mut record = match record {
            Record::Tick(t) => Record::Sample(ticks.sample(t)),
            other => other,
        };
        if let (true, Record::Sample(s)) = (all_stopped, &mut record) {
            for t in &mut s.threads {
                t.stopped = true;
            }
        }
        rec.add(record).map_err(corrupt)?;
    }
    if let Some(why) = reader.truncated() {
        rec.warnings.push(format!(
            "the recording was cut short ({why}); read {} samples up to t={:.3}s",
            rec.samples.len(),
            rec.duration_us() as f64 / 1e6
        ));
    } else if rec.end.is_none() {
        rec.warnings.push(format!(
            "the recording has no end record (the recorder was stopped abruptly); read {} samples",
            rec.samples.len()
        ));
    }
    if reader.unknown_records() > 0 {
        rec.warnings.push(format!(
            "skipped {} records of types this loopprof does not know (written by a newer version)",
            reader.unknown_records()
        ));
    }
    Ok(rec)
}

/// The header, checked: a loopprof recording of a version this build reads.
fn read_header(reader: &mut RecordingReader) -> Result<Header, RecordingError> {
    let path = reader.path.clone();
    let header = match reader.next_record()? {
        Some(Record::Header(h)) => h,
        Some(_) => {
            return Err(RecordingError::NotARecording {
                path,
                why: "it does not start with a header record".into(),
            })
        }
        None => {
            return Err(RecordingError::NotARecording {
                why: match reader.truncated() {
                    Some(t) => format!("it holds no complete record: {t}"),
                    None => "it is empty".into(),
                },
                path,
            })
        }
    };
    if header.format != FORMAT_NAME {
        return Err(RecordingError::NotARecording {
            path,
            why: format!("format is {:?}", header.format),
        });
    }
    if header.version > FORMAT_VERSION {
        return Err(RecordingError::Version {
            path,
            found: header.version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(header)
}

impl Recording {
    /// Adds one record (after the header), checking its references; `Err` says why the
    /// recording is corrupt.
    fn add(&mut self, record: Record) -> Result<(), String> {
        match record {
            Record::Header(_) => return Err("a second header record".into()),
            Record::String(s) => {
                if s.id as usize != self.strings.len() {
                    return Err(format!("string id {} out of order", s.id));
                }
                self.strings.push(s.s);
            }
            Record::Frame(f) => {
                if f.id as usize != self.frames.len() {
                    return Err(format!("frame id {} out of order", f.id));
                }
                if f.name as usize >= self.strings.len() || f.file as usize >= self.strings.len() {
                    return Err(format!("frame {} uses an undefined string", f.id));
                }
                self.frames.push(f);
            }
            Record::Stack(s) => {
                if s.id as usize != self.stacks.len() {
                    return Err(format!("stack id {} out of order", s.id));
                }
                if s.frames.iter().any(|f| *f as usize >= self.frames.len()) {
                    return Err(format!("stack {} uses an undefined frame", s.id));
                }
                self.stacks.push(s.frames);
            }
            Record::Source(s) => {
                if s.file as usize >= self.strings.len() {
                    return Err("source line uses an undefined string".into());
                }
                self.sources.insert((s.file, s.line), s.text);
            }
            Record::Process(ev) => {
                if ev.event == ProcessEventKind::Started
                    && !self.processes.iter().any(|p| p.pid == ev.process.pid)
                {
                    self.processes.push(ev.process.clone());
                }
                self.process_events.push(ev);
            }
            Record::Sample(s) => {
                for t in &s.threads {
                    if t.stack as usize >= self.stacks.len()
                        || t.name.is_some_and(|n| n as usize >= self.strings.len())
                        || t.wait.is_some_and(|n| n as usize >= self.strings.len())
                        || t.route.is_some_and(|n| n as usize >= self.strings.len())
                    {
                        return Err(format!(
                            "sample at t={}us uses an undefined stack or name",
                            s.t_us
                        ));
                    }
                }
                self.samples.push(s);
            }
            Record::SampleError(e) => self.errors.push(e),
            Record::Probe(p) => self.probes.push(p),
            Record::Route(r) => self.routes.push(r),
            Record::Tasks(t) => {
                let strings = self.strings.len();
                for task in &t.tasks {
                    if task.stack as usize >= self.stacks.len()
                        || task.name as usize >= strings
                        || task.waits_for.is_some_and(|n| n as usize >= strings)
                        || task.route.is_some_and(|n| n as usize >= strings)
                    {
                        return Err(format!(
                            "task snapshot at t={}us uses an undefined stack or string",
                            t.t_us
                        ));
                    }
                }
                self.task_snapshots.push(t);
            }
            Record::End(e) => self.end = Some(e),
            Record::Tick(_) => unreachable!("ticks are turned into samples above"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::testing::{end, frame, header, thread, RecordingBuilder};
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn builder_with_samples(n: u64) -> RecordingBuilder {
        let mut b = RecordingBuilder::new(header(7, 100.0));
        for i in 0..n {
            let f = vec![frame(
                &format!("handler_{}", i % 3),
                "/srv/app.py",
                10 + i as i32,
            )];
            b.sample(
                7,
                i * 10_000,
                i * 1000,
                &[thread(7, "MainThread", 'S', "futex", false, f)],
            );
        }
        b
    }

    fn load_bytes(bytes: Vec<u8>) -> Result<Recording, RecordingError> {
        load_from(RecordingReader::from_reader(
            "memory".into(),
            Box::new(std::io::Cursor::new(bytes)),
        ))
    }

    #[test]
    fn a_scope_address_reused_with_another_version_tag_is_another_request() {
        let mut b = RecordingBuilder::new(header(7, 100.0));
        // (address, version tag) per sample: the same dict twice, its address handed to the
        // next request's dict (another tag), then a new address.
        let ids = [
            (0x1000, 5),
            (0x1000, 5),
            (0x1000, 9),
            (0x1000, 9),
            (0x2000, 9),
        ];
        for (i, id) in ids.iter().enumerate() {
            let mut t = thread(
                7,
                "MainThread",
                'R',
                "running",
                true,
                vec![frame("cpu", "/srv/app.py", 3)],
            );
            t.request = Some(*id);
            b.sample(7, i as u64 * 10_000, 0, &[t]);
        }
        let rec = b.finish(end(50_000, 5));
        let reqs: Vec<Option<u32>> = rec.samples.iter().map(|s| s.threads[0].req).collect();
        assert_eq!(reqs, [Some(0), Some(0), Some(1), Some(1), Some(2)]);
    }

    #[test]
    fn round_trips_through_the_wire_format() {
        let rec = builder_with_samples(5).finish(end(50_000, 5));
        assert_eq!(rec.samples.len(), 5);
        assert_eq!(rec.end.as_ref().unwrap().samples, 5);
        let t = &rec.samples[4].threads[0];
        assert_eq!(rec.thread_name(t), Some("MainThread"));
        let f = rec.stack(t.stack).next().unwrap();
        assert_eq!(rec.str(f.name), "handler_1");
        assert_eq!(f.line, 14);
        assert!(rec.warnings.is_empty());
    }

    #[test]
    fn a_file_cut_at_any_byte_reads_up_to_its_last_complete_record() {
        let bytes = builder_with_samples(6).bytes();
        let header_len = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
        let mut last = 0;
        for cut in header_len..bytes.len() {
            let rec = load_bytes(bytes[..cut].to_vec()).expect("cut file loads");
            assert!(rec.end.is_none());
            assert!(!rec.warnings.is_empty());
            assert!(
                rec.samples.len() >= last,
                "never fewer samples for a longer prefix"
            );
            last = rec.samples.len();
        }
        assert_eq!(last, 6);
    }

    #[test]
    fn a_cut_gzip_stream_reads_up_to_its_last_flush() {
        let plain = builder_with_samples(40).bytes();
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        let half = plain.len() / 2;
        gz.write_all(&plain[..half]).unwrap();
        gz.flush().unwrap(); // what the writer's periodic flush does
        let flushed = gz.get_ref().len();
        gz.write_all(&plain[half..]).unwrap();
        let full = gz.finish().unwrap();
        // Cut a little after the sync flush point: everything before it is readable.
        let path = std::env::temp_dir().join(format!("loopprof-cut-{}.gz", std::process::id()));
        std::fs::write(&path, &full[..flushed + 7]).unwrap();
        let rec = load(&path).expect("cut gzip loads");
        std::fs::remove_file(&path).unwrap();
        assert!(rec.samples.len() >= 15, "{} samples", rec.samples.len());
        assert!(rec.warnings.iter().any(|w| w.contains("cut short")));
    }

    #[test]
    fn unknown_record_types_are_skipped_and_bad_input_is_refused() {
        let mut bytes = builder_with_samples(2).bytes();
        bytes.extend_from_slice(b"{\"type\":\"future_thing\",\"data\":{\"x\":1}}\n");
        let rec = load_bytes(bytes).unwrap();
        assert_eq!(rec.samples.len(), 2);
        assert!(rec.warnings.iter().any(|w| w.contains("newer version")));

        assert!(matches!(
            load_bytes(b"hello world\n".to_vec()),
            Err(RecordingError::NotARecording { .. })
        ));
        assert!(matches!(
            load_bytes(Vec::new()),
            Err(RecordingError::NotARecording { .. })
        ));
        let mut newer = builder_with_samples(0).bytes();
        let text = String::from_utf8(newer.clone())
            .unwrap()
            .replace(&format!("\"version\":{FORMAT_VERSION}"), "\"version\":99");
        newer = text.into_bytes();
        assert!(matches!(
            load_bytes(newer),
            Err(RecordingError::Version { found: 99, .. })
        ));
    }

    #[test]
    fn a_corrupt_record_of_any_known_type_is_an_error_never_skipped() {
        for kind in Record::TYPES {
            // A well-formed envelope of a known type whose payload does not parse, in the
            // middle of a recording (not its last line, which could be a cut).
            let mut bytes = builder_with_samples(0).bytes();
            let header_len = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
            let rest = bytes.split_off(header_len);
            bytes.extend_from_slice(
                format!("{{\"type\":\"{kind}\",\"data\":{{\"pid\":\"x\"}}}}\n").as_bytes(),
            );
            bytes.extend_from_slice(&rest);
            match load_bytes(bytes) {
                Err(RecordingError::Corrupt { why, .. }) => {
                    assert!(why.contains("line 2"), "{kind}: {why}")
                }
                other => panic!("{kind}: a corrupt record must be an error, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_known_types_are_exactly_the_record_variants() {
        // serde lists every variant it accepts when it meets an unknown one.
        let err = serde_json::from_str::<Record>(r#"{"type":"no_such_type","data":{}}"#)
            .unwrap_err()
            .to_string();
        let listed = &err[err.find("expected one of").expect(&err)..];
        let mut variants: Vec<&str> = listed.split('`').skip(1).step_by(2).collect();
        let mut known = Record::TYPES.to_vec();
        variants.sort_unstable();
        known.sort_unstable();
        assert_eq!(
            variants, known,
            "Record::TYPES must list every Record variant"
        );
    }

    #[test]
    fn ticks_read_back_as_the_samples_written_to_the_unit() {
        // Two processes interleaved, a thread that appears late, jittery times.
        let mut b = RecordingBuilder::new(header(7, 100.0));
        let mut expected = Vec::new();
        for i in 0..50u64 {
            for pid in [7u32, 9] {
                let t_us = i * 10_000 + (i * 7919 % 613) + u64::from(pid);
                let cpu_us = i * 3_000 + u64::from(pid) * 1_000_000;
                let mut main = thread(
                    pid,
                    "MainThread",
                    'R',
                    "running",
                    true,
                    vec![frame("f", "/a.py", 1)],
                );
                main.sched = Some([i * 9_876_543 + 123_456_789, i * i * 1_234_567]);
                let mut threads = vec![main];
                if i >= 20 {
                    let mut worker = thread(
                        pid + 1,
                        "w",
                        'S',
                        "futex",
                        false,
                        vec![frame("g", "/b.py", 2)],
                    );
                    worker.sched = Some([(i - 20) * 55_555, 17]);
                    threads.push(worker);
                }
                b.sample(pid, t_us, cpu_us, &threads);
                expected.push((pid, t_us, cpu_us, threads));
            }
        }
        let text = String::from_utf8(b.bytes()).unwrap();
        assert!(
            text.contains("\"type\":\"tick\""),
            "the writer writes ticks"
        );
        assert!(!text.contains("\"type\":\"sample\""));
        let rec = load_bytes(text.into_bytes()).unwrap();
        assert_eq!(rec.samples.len(), expected.len());
        let unit = u64::from(rec.header.time_unit());
        assert_eq!(unit, 100, "a hundredth of the 10 ms period");
        for (s, (pid, t_us, cpu_us, threads)) in rec.samples.iter().zip(&expected) {
            assert_eq!(s.pid, *pid);
            // Rounded once to the unit: never more than half a unit off, whatever the length.
            assert!(s.t_us.abs_diff(*t_us) <= unit / 2, "{} vs {}", s.t_us, t_us);
            assert_eq!(s.cpu_us, *cpu_us, "CPU time keeps full precision");
            assert_eq!(s.threads.len(), threads.len());
            for (got, want) in s.threads.iter().zip(threads) {
                assert_eq!(got.tid, want.tid);
                assert_eq!(got.state, want.state);
                let (g, w) = (got.sched.unwrap(), want.sched.unwrap());
                for k in 0..2 {
                    assert!(g[k] <= w[k] && w[k] - g[k] < unit * 1000, "{g:?} vs {w:?}");
                }
            }
        }
    }

    #[test]
    fn version_1_samples_are_still_read() {
        let mut bytes = builder_with_samples(0).bytes();
        bytes.extend_from_slice(
            b"{\"type\":\"string\",\"data\":{\"id\":0,\"s\":\"f\"}}\n{\"type\":\"frame\",\"data\":{\"id\":0,\"name\":0,\"file\":0,\"line\":3}}\n{\"type\":\"stack\",\"data\":{\"id\":0,\"frames\":[0]}}\n{\"type\":\"sample\",\"data\":{\"pid\":7,\"t_us\":12345,\"read_us\":17,\"cpu_us\":99,\"threads\":[{\"tid\":7,\"active\":true,\"gil\":true,\"state\":\"R\",\"stack\":0,\"sched\":[123456789,5]}]}}\n",
        );
        let rec = load_bytes(bytes).unwrap();
        assert_eq!(rec.samples.len(), 1);
        let s = &rec.samples[0];
        assert_eq!((s.t_us, s.read_us, s.cpu_us), (12345, 17, 99));
        assert_eq!(s.threads[0].sched, Some([123456789, 5]));
    }

    /// Format 7 says which thread samples stopped their thread; older blocking-mode files
    /// did not, and nearly all of theirs did: they load as stopped, `--nonblocking` ones not.
    #[test]
    fn stopped_is_read_and_older_blocking_recordings_load_as_stopped() {
        let mut b = builder_with_samples(0);
        let mut kept = thread(7, "MainThread", 'S', "futex", false, vec![]);
        kept.stopped = false;
        b.sample(
            7,
            0,
            0,
            &[thread(7, "MainThread", 'R', "running", true, vec![])],
        );
        b.sample(7, 10_000, 0, &[kept]);
        let text = String::from_utf8(b.bytes()).unwrap();
        let rec = load_bytes(text.clone().into_bytes()).unwrap();
        let stopped: Vec<bool> = rec.samples.iter().map(|s| s.threads[0].stopped).collect();
        assert_eq!(stopped, [true, false]);
        let v6 = text
            .replace(&format!("\"version\":{FORMAT_VERSION}"), "\"version\":6")
            .replace(",\"stopped\":true", "");
        let rec = load_bytes(v6.clone().into_bytes()).unwrap();
        assert!(rec.samples.iter().all(|s| s.threads[0].stopped));
        let nonblocking = v6.replace("\"nonblocking\":false", "\"nonblocking\":true");
        assert_ne!(nonblocking, v6, "the header names the mode");
        let rec = load_bytes(nonblocking.into_bytes()).unwrap();
        assert!(rec.samples.iter().all(|s| !s.threads[0].stopped));
    }

    #[test]
    fn undefined_references_are_corrupt() {
        let mut bytes = builder_with_samples(1).bytes();
        bytes.extend_from_slice(
            b"{\"type\":\"sample\",\"data\":{\"pid\":7,\"t_us\":5,\"read_us\":1,\"cpu_us\":0,\"threads\":[{\"tid\":7,\"active\":false,\"gil\":false,\"state\":\"S\",\"stack\":42}]}}\n",
        );
        assert!(matches!(
            load_bytes(bytes),
            Err(RecordingError::Corrupt { .. })
        ));
    }
}
