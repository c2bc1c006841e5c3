//! Streaming writer: interns strings, frames and stacks, and writes records as JSON Lines.
//!
//! Everything a sampler produces goes through [`RecordingWriter::write_sample`], which turns
//! raw stacks into ids and emits the `string`/`frame`/`stack` definitions the first time each
//! is seen. The writer flushes (a gzip sync flush when compressed) at most once per
//! `flush_every`, so a recorder killed at any moment leaves a file readable up to its last
//! flush.

use super::format::*;
use super::RecordingError;
use flate2::write::GzEncoder;
use flate2::Compression;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// A Python frame as read from the target, before interning.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawFrame {
    /// Qualified function name.
    pub name: String,
    /// Absolute file name.
    pub file: String,
    /// Line number.
    pub line: i32,
}

/// One Python thread of one tick, before interning.
#[derive(Debug, Clone, PartialEq)]
pub struct RawThread {
    /// OS thread id (0 if unknown).
    pub tid: u32,
    /// Thread name.
    pub name: Option<String>,
    /// py-spy's `active`.
    pub active: bool,
    /// py-spy's `owns_gil`.
    pub gil: bool,
    /// OS state letter.
    pub state: char,
    /// Current syscall name, `"running"`, or `None`.
    pub syscall: Option<String>,
    /// Scheduler times `[run ns, run-queue wait ns]`, if known.
    pub sched: Option<[u64; 2]>,
    /// Times the thread was scheduled onto a CPU (schedstat's third field), if known.
    pub runs: Option<u64>,
    /// What the thread waits on, when blocked in a system call on a file descriptor.
    pub wait: Option<String>,
    /// The HTTP route its stack was serving (`GET /orders/{order_id}`), when read.
    pub route: Option<String>,
    /// An opaque identity of the request being served, (scope address, the scope dict's
    /// version tag) (not written: it becomes [`crate::recording::ThreadSample::req`]).
    pub request: Option<(u64, u64)>,
    /// Frames, innermost first.
    pub frames: Vec<RawFrame>,
    /// The sampler stopped the thread to read it.
    pub stopped: bool,
}

/// One asyncio task of a task snapshot, before interning.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTask {
    /// The task object's address.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its event loop's address.
    pub loop_id: u64,
    /// Where its coroutine is.
    pub state: TaskState,
    /// The await chain, innermost first.
    pub frames: Vec<RawFrame>,
    /// The type of the future it waits for.
    pub waits_for: Option<String>,
    /// The tasks it awaits.
    pub awaits: Vec<u64>,
    /// The HTTP route it serves.
    pub route: Option<String>,
}

/// What one tick says of itself besides its threads (see [`RecordingWriter::write_sample`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct TickMeta {
    /// Process id.
    pub pid: u32,
    /// Microseconds since the recording started.
    pub t_us: u64,
    /// How long the threads were stopped (with `--nonblocking`, the read took), µs.
    pub read_us: u32,
    /// How late the tick started, µs.
    pub late_us: u32,
    /// Cumulative process CPU time, µs.
    pub cpu_us: u64,
    /// The garbage collector's state, when read.
    pub gc: Option<GcSample>,
    /// Python threads whose stack could not be read in this tick (left out of it).
    pub lost: u32,
}

/// Where the lines go: a gzip file, a plain file, or any writer. The gzip encoder is fed
/// through a buffer: compressing each ~200-byte line on its own cost more than the rest of
/// the writer's work together.
enum Output {
    Gzip(BufWriter<GzEncoder<BufWriter<File>>>),
    Plain(BufWriter<File>),
    Other(Box<dyn Write + Send>),
}

impl Output {
    fn get(&mut self) -> &mut dyn Write {
        match self {
            Output::Gzip(w) => w,
            Output::Plain(w) => w,
            Output::Other(w) => w,
        }
    }

    /// Finishes the stream: writes the gzip trailer and flushes every layer.
    fn finish(self) -> std::io::Result<()> {
        match self {
            Output::Gzip(w) => w
                .into_inner()
                .map_err(|e| e.into_error())?
                .finish()?
                .flush(),
            Output::Plain(mut w) => w.flush(),
            Output::Other(mut w) => w.flush(),
        }
    }
}

/// Writes a recording file record by record.
pub struct RecordingWriter {
    out: Output,
    strings: HashMap<String, u32>,
    frames: HashMap<(u32, u32, i32), u32>,
    stacks: HashMap<Vec<u32>, u32>,
    line: Vec<u8>,
    last_flush: Instant,
    flush_every: Duration,
    bytes: u64,
    /// The header's time unit in µs (1 until a header is written).
    unit: u64,
    /// Per process: the last tick's time (in units) and CPU time (µs).
    last_tick: HashMap<u32, (u64, u64)>,
    /// Per (process, thread): the last cumulative scheduler times, in units.
    last_sched: HashMap<(u32, u32), [u64; 2]>,
    last_runs: HashMap<(u32, u32), u64>,
    /// Per (pid, tid): the last request identity and its number.
    last_request: HashMap<(u32, u32), ((u64, u64), u32)>,
    /// Per process: the last collection counts of each GC generation.
    last_gc: HashMap<u32, [u64; 3]>,
}

impl RecordingWriter {
    /// Creates `path` (gzip-compressed when `compress`) and returns a writer for it. The file
    /// must not exist yet ([`super::outdir::create_new`]: never overwritten, never written
    /// through a symlink).
    pub fn create(path: &Path, compress: bool) -> Result<Self, RecordingError> {
        let file: File = super::outdir::create_new(path)?;
        let buffered = BufWriter::with_capacity(64 * 1024, file);
        let out = if compress {
            Output::Gzip(BufWriter::with_capacity(
                64 * 1024,
                GzEncoder::new(buffered, Compression::new(6)),
            ))
        } else {
            Output::Plain(buffered)
        };
        Ok(Self::with_output(out))
    }

    /// Wraps any writer (used by tests and tools that build recordings in memory).
    pub fn from_writer(out: Box<dyn Write + Send>) -> Self {
        Self::with_output(Output::Other(out))
    }

    fn with_output(out: Output) -> Self {
        RecordingWriter {
            out,
            strings: HashMap::new(),
            frames: HashMap::new(),
            stacks: HashMap::new(),
            line: Vec::with_capacity(1024),
            last_flush: Instant::now(),
            flush_every: Duration::from_millis(500),
            bytes: 0,
            unit: 1,
            last_tick: HashMap::new(),
            last_sched: HashMap::new(),
            last_runs: HashMap::new(),
            last_request: HashMap::new(),
            last_gc: HashMap::new(),
        }
    }

    /// Uncompressed bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// Writes one record as a line.
    pub fn write(&mut self, record: &Record) -> Result<(), RecordingError> {
        if let Record::Header(h) = record {
            self.unit = u64::from(h.time_unit());
        }
        self.line.clear();
        serde_json::to_writer(&mut self.line, record)
            .map_err(|e| RecordingError::Write(std::io::Error::other(e)))?;
        self.line.push(b'\n');
        self.out
            .get()
            .write_all(&self.line)
            .map_err(RecordingError::Write)?;
        self.bytes += self.line.len() as u64;
        if self.last_flush.elapsed() >= self.flush_every {
            self.flush()?;
        }
        Ok(())
    }

    /// Flushes everything written so far to the file (readable even if the process dies next).
    pub fn flush(&mut self) -> Result<(), RecordingError> {
        self.last_flush = Instant::now();
        self.out.get().flush().map_err(RecordingError::Write)
    }

    /// Returns the id of `s`, writing its definition the first time.
    pub fn intern_str(&mut self, s: &str) -> Result<u32, RecordingError> {
        if let Some(id) = self.strings.get(s) {
            return Ok(*id);
        }
        let id = self.strings.len() as u32;
        self.strings.insert(s.to_owned(), id);
        self.write(&Record::String(StringDef {
            id,
            s: s.to_owned(),
        }))?;
        Ok(id)
    }

    /// Returns the id of a frame, writing its definition (and its strings) the first time.
    /// The boolean is `true` when the frame was new.
    pub fn intern_frame(&mut self, f: &RawFrame) -> Result<(u32, bool), RecordingError> {
        let name = self.intern_str(&f.name)?;
        let file = self.intern_str(&f.file)?;
        let key = (name, file, f.line);
        if let Some(id) = self.frames.get(&key) {
            return Ok((*id, false));
        }
        let id = self.frames.len() as u32;
        self.frames.insert(key, id);
        self.write(&Record::Frame(FrameDef {
            id,
            name,
            file,
            line: f.line,
        }))?;
        Ok((id, true))
    }

    /// Returns the id of a stack (frames innermost first). Frames seen for the first time are
    /// appended to `new_frames` so the caller can record their source lines.
    pub fn intern_stack<'a>(
        &mut self,
        frames: &'a [RawFrame],
        new_frames: &mut Vec<&'a RawFrame>,
    ) -> Result<u32, RecordingError> {
        let mut ids = Vec::with_capacity(frames.len());
        for f in frames {
            let (id, new) = self.intern_frame(f)?;
            if new {
                new_frames.push(f);
            }
            ids.push(id);
        }
        if let Some(id) = self.stacks.get(&ids) {
            return Ok(*id);
        }
        let id = self.stacks.len() as u32;
        self.write(&Record::Stack(StackDef {
            id,
            frames: ids.clone(),
        }))?;
        self.stacks.insert(ids, id);
        Ok(id)
    }

    /// Writes the text of a source line.
    pub fn write_source(
        &mut self,
        file: &str,
        line: i32,
        text: &str,
    ) -> Result<(), RecordingError> {
        let file = self.intern_str(file)?;
        self.write(&Record::Source(SourceLine {
            file,
            line,
            text: text.to_owned(),
        }))
    }

    /// Interns the tasks of one task snapshot (`snapshot.tasks` is ignored: the records are
    /// built from `tasks`) and writes it. Returns the frames seen for the first time.
    pub fn write_tasks<'a>(
        &mut self,
        mut snapshot: TaskSnapshot,
        tasks: &'a [RawTask],
    ) -> Result<Vec<&'a RawFrame>, RecordingError> {
        let mut new_frames = Vec::new();
        snapshot.tasks = Vec::with_capacity(tasks.len());
        for t in tasks {
            let stack = self.intern_stack(&t.frames, &mut new_frames)?;
            let name = self.intern_str(&t.name)?;
            let waits_for = t
                .waits_for
                .as_deref()
                .map(|w| self.intern_str(w))
                .transpose()?;
            let route = t.route.as_deref().map(|r| self.intern_str(r)).transpose()?;
            snapshot.tasks.push(TaskRecord {
                id: t.id,
                name,
                loop_id: t.loop_id,
                state: t.state,
                stack,
                waits_for,
                awaits: t.awaits.clone(),
                route,
            });
        }
        self.write(&Record::Tasks(snapshot))?;
        Ok(new_frames)
    }

    /// Interns the threads of one tick and writes the sample, with what the tick says of
    /// itself (`tick`: times, CPU, the garbage collector's state when read, threads lost).
    /// Returns the frames that were new in this sample (their source lines have not been
    /// recorded yet).
    pub fn write_sample<'a>(
        &mut self,
        tick: &TickMeta,
        threads: &'a [RawThread],
    ) -> Result<Vec<&'a RawFrame>, RecordingError> {
        let TickMeta {
            pid,
            t_us,
            read_us,
            late_us,
            cpu_us,
            gc,
            lost,
        } = *tick;
        let mut new_frames = Vec::new();
        let mut out = Vec::with_capacity(threads.len());
        let unit = self.unit;
        let sched_unit_ns = unit * 1000;
        for t in threads {
            let name = match &t.name {
                Some(n) => Some(self.intern_str(n)?),
                None => None,
            };
            let stack = self.intern_stack(&t.frames, &mut new_frames)?;
            let wait = match &t.wait {
                Some(w) => Some(self.intern_str(w)?),
                None => None,
            };
            let route = match &t.route {
                Some(r) => Some(self.intern_str(r)?),
                None => None,
            };
            let dsched = t.sched.map(|s| {
                let now = [s[0] / sched_unit_ns, s[1] / sched_unit_ns];
                let before = self.last_sched.insert((pid, t.tid), now).unwrap_or([0, 0]);
                [
                    now[0] as i64 - before[0] as i64,
                    now[1] as i64 - before[1] as i64,
                ]
            });
            let druns = t.runs.map(|r| {
                let before = self.last_runs.insert((pid, t.tid), r).unwrap_or(0);
                r as i64 - before as i64
            });
            let req = t.request.map(|id| {
                let e = self.last_request.entry((pid, t.tid)).or_insert((id, 0));
                if e.0 != id {
                    *e = (id, e.1.wrapping_add(1));
                }
                e.1
            });
            out.push(TickThread {
                tid: t.tid,
                name,
                active: t.active,
                gil: t.gil,
                state: t.state,
                syscall: t.syscall.clone(),
                stack,
                dsched,
                druns,
                wait,
                route,
                req,
                stopped: t.stopped,
            });
        }
        // Times are rounded to the unit once, as running sums, so no error accumulates.
        let t_units = (t_us + unit / 2) / unit;
        let (last_t, last_cpu) = self
            .last_tick
            .insert(pid, (t_units, cpu_us))
            .unwrap_or((0, 0));
        // Generation 0 is collected every few thousand allocations, on most ticks of a busy
        // process: its count would add bytes to nearly every tick and says nothing the
        // `on` flag does not, so only generations 1 and 2 are counted.
        // A tick where nothing happened carries no `gc` at all.
        let gc = gc
            .map(|g| {
                let before = self.last_gc.insert(pid, g.collections).unwrap_or([0; 3]);
                TickGc {
                    on: g.collecting,
                    dn: [0, 1, 2].map(|i| {
                        if i == 0 {
                            0
                        } else {
                            g.collections[i].saturating_sub(before[i])
                        }
                    }),
                }
            })
            .filter(|g| g.on || g.dn != [0; 3]);
        self.write(&Record::Tick(Tick {
            pid,
            dt: t_units.saturating_sub(last_t),
            read_us,
            late: ((u64::from(late_us) + unit / 2) / unit).min(u64::from(u32::MAX)) as u32,
            dcpu_us: cpu_us as i64 - last_cpu as i64,
            threads: out,
            gc,
            lost,
        }))?;
        Ok(new_frames)
    }

    /// Writes the end record and finishes the file (the gzip trailer included).
    pub fn finish(mut self, end: &End) -> Result<(), RecordingError> {
        self.write(&Record::End(end.clone()))?;
        self.out.finish().map_err(RecordingError::Write)
    }
}
