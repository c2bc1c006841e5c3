//! Builders for small hand-made recordings, for unit tests and synthetic benchmarks.
//!
//! [`RecordingBuilder`] writes records through the real [`RecordingWriter`] into memory and
//! loads them back through the real reader, so tests exercise the wire format end to end.

use super::format::*;
use super::{
    load_from, RawFrame, RawTask, RawThread, Recording, RecordingReader, RecordingWriter, TickMeta,
};
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Builds a recording in memory.
pub struct RecordingBuilder {
    buf: SharedBuf,
    writer: RecordingWriter,
}

/// A frame from `(function, file, line)`.
pub fn frame(name: &str, file: &str, line: i32) -> RawFrame {
    RawFrame {
        name: name.into(),
        file: file.into(),
        line,
    }
}

/// A suspended asyncio task `id` named `name`, serving `route` (if any), with its await
/// chain `frames` (innermost first).
pub fn task(id: u64, name: &str, route: Option<&str>, frames: Vec<RawFrame>) -> RawTask {
    RawTask {
        id,
        name: name.into(),
        loop_id: 1,
        state: TaskState::Suspended,
        frames,
        waits_for: Some("_asyncio.Future".into()),
        awaits: Vec::new(),
        route: route.map(str::to_owned),
    }
}

/// A thread sample with the given flags and frames (innermost first).
pub fn thread(
    tid: u32,
    name: &str,
    state: char,
    syscall: &str,
    gil: bool,
    frames: Vec<RawFrame>,
) -> RawThread {
    RawThread {
        tid,
        name: Some(name.into()),
        active: state == 'R',
        gil,
        state,
        syscall: Some(syscall.into()),
        sched: None,
        runs: None,
        wait: None,
        route: None,
        request: None,
        frames,
        stopped: true,
    }
}

/// The frames FastAPI and uvicorn put between an endpoint function and the code below them,
/// innermost first: `endpoint` at `file:40`, `run_endpoint_function`, then
/// `RequestResponseCycle.run_asgi`, with the libraries under `site_packages`.
pub fn fastapi_request_frames(endpoint: &str, file: &str, site_packages: &str) -> Vec<RawFrame> {
    vec![
        frame(endpoint, file, 40),
        frame(
            "run_endpoint_function",
            &format!("{site_packages}/fastapi/routing.py"),
            381,
        ),
        frame(
            "RequestResponseCycle.run_asgi",
            &format!("{site_packages}/uvicorn/protocols/http/httptools_impl.py"),
            422,
        ),
    ]
}

/// A header for one Python 3.11 process `pid` recorded at `rate_hz`.
pub fn header(pid: u32, rate_hz: f64) -> Header {
    Header {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        loopprof_version: crate::VERSION.into(),
        py_spy_version: crate::PY_SPY_VERSION.into(),
        started_at: "2026-01-01T00:00:00.000000Z".into(),
        rate_hz,
        host: "test".into(),
        target: Target {
            how: TargetKind::Pid,
            pid,
            cmdline: vec!["uvicorn".into(), "app:app".into()],
            pattern: None,
        },
        options: CaptureOptionsRecord {
            nonblocking: false,
            subprocesses: true,
            locking: "python-threads".into(),
            max_stop_pct: None,
            task_interval_ms: None,
        },
        processes: vec![ProcessInfo {
            pid,
            ppid: 1,
            cmdline: vec!["uvicorn".into(), "app:app".into()],
            python_version: "3.11.7".into(),
            exe: "/usr/bin/python3.11".into(),
        }],
        clock_ticks_per_s: 100,
        time_unit_us: time_unit_for(rate_hz),
    }
}

impl RecordingBuilder {
    /// Starts a recording with this header.
    pub fn new(header: Header) -> Self {
        let buf = SharedBuf::default();
        let mut writer = RecordingWriter::from_writer(Box::new(buf.clone()));
        writer.write(&Record::Header(header)).unwrap();
        RecordingBuilder { buf, writer }
    }

    /// Adds one sample.
    pub fn sample(&mut self, pid: u32, t_us: u64, cpu_us: u64, threads: &[RawThread]) -> &mut Self {
        self.writer
            .write_sample(
                &TickMeta {
                    pid,
                    t_us,
                    read_us: 500,
                    cpu_us,
                    ..TickMeta::default()
                },
                threads,
            )
            .unwrap();
        self
    }

    /// Adds one asyncio task snapshot of process `pid` at `t_us`.
    pub fn tasks(&mut self, pid: u32, t_us: u64, tasks: &[RawTask]) -> &mut Self {
        self.writer
            .write_tasks(
                TaskSnapshot {
                    pid,
                    t_us,
                    read_us: 200,
                    tasks: Vec::new(),
                    unreadable: 0,
                    truncated: false,
                },
                tasks,
            )
            .unwrap();
        self
    }

    /// Adds one sample that could not read `lost` more Python threads.
    pub fn sample_lost(
        &mut self,
        pid: u32,
        t_us: u64,
        threads: &[RawThread],
        lost: u32,
    ) -> &mut Self {
        self.writer
            .write_sample(
                &TickMeta {
                    pid,
                    t_us,
                    read_us: 500,
                    lost,
                    ..TickMeta::default()
                },
                threads,
            )
            .unwrap();
        self
    }

    /// Adds one sample with the garbage collector's state.
    pub fn sample_gc(
        &mut self,
        pid: u32,
        t_us: u64,
        cpu_us: u64,
        gc: GcSample,
        threads: &[RawThread],
    ) -> &mut Self {
        self.writer
            .write_sample(
                &TickMeta {
                    pid,
                    t_us,
                    read_us: 500,
                    cpu_us,
                    gc: Some(gc),
                    ..TickMeta::default()
                },
                threads,
            )
            .unwrap();
        self
    }

    /// Adds the text of a source line.
    pub fn source(&mut self, file: &str, line: i32, text: &str) -> &mut Self {
        self.writer.write_source(file, line, text).unwrap();
        self
    }

    /// Adds any record.
    pub fn record(&mut self, r: Record) -> &mut Self {
        self.writer.write(&r).unwrap();
        self
    }

    /// The bytes written so far (no end record).
    pub fn bytes(&self) -> Vec<u8> {
        self.buf.0.lock().unwrap().clone()
    }

    /// Writes the end record and returns the file's bytes (plain JSON Lines).
    pub fn finish_bytes(self, end: End) -> Vec<u8> {
        let buf = self.buf.clone();
        self.writer.finish(&end).unwrap();
        let bytes = buf.0.lock().unwrap().clone();
        bytes
    }

    /// Writes the end record and loads the result through the reader.
    pub fn finish(self, end: End) -> Recording {
        let buf = self.buf.clone();
        self.writer.finish(&end).unwrap();
        let bytes = buf.0.lock().unwrap().clone();
        load_from(RecordingReader::from_reader(
            "memory".into(),
            Box::new(std::io::Cursor::new(bytes)),
        ))
        .unwrap()
    }
}

/// An end record for `samples` samples over `duration_us`.
pub fn end(duration_us: u64, samples: u64) -> End {
    End {
        duration_us,
        reason: EndReason::Duration,
        samples,
        errors: 0,
        late: 0,
        missed: 0,
        processes: 1,
        stopped_us: 0,
        ..End::default()
    }
}

/// Four samples of one uvicorn MainThread at 100 Hz: idle, two in `time.sleep` inside
/// `rate_limited`, one computing in `crunch` with the GIL.
pub fn tiny_recording() -> Recording {
    let idle = vec![
        frame(
            "EpollSelector.select",
            "/usr/lib/python3.11/selectors.py",
            468,
        ),
        frame(
            "BaseEventLoop._run_once",
            "/usr/lib/python3.11/asyncio/base_events.py",
            1884,
        ),
    ];
    let sleep = vec![
        frame("rate_limited", "/srv/app/views.py", 12),
        frame("Handle._run", "/usr/lib/python3.11/asyncio/events.py", 80),
    ];
    let cpu = vec![
        frame("crunch", "/srv/app/views.py", 30),
        frame("Handle._run", "/usr/lib/python3.11/asyncio/events.py", 80),
    ];
    let mut b = RecordingBuilder::new(header(100, 100.0));
    b.sample(
        100,
        0,
        0,
        &[thread(100, "MainThread", 'S', "epoll_wait", false, idle)],
    )
    .sample(
        100,
        10_000,
        5_000,
        &[thread(
            100,
            "MainThread",
            'S',
            "clock_nanosleep",
            false,
            sleep.clone(),
        )],
    )
    .sample(
        100,
        20_000,
        10_000,
        &[thread(
            100,
            "MainThread",
            'S',
            "clock_nanosleep",
            false,
            sleep,
        )],
    )
    .sample(
        100,
        30_000,
        15_000,
        &[thread(100, "MainThread", 'R', "running", true, cpu)],
    );
    b.finish(end(30_000, 4))
}
