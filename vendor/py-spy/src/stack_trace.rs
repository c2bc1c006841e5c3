use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Error, Result};

use remoteprocess::{Pid, ProcessMemory};
use serde_derive::Serialize;

use crate::config::{Config, LineNo};
use crate::python_data_access::{copy_bytes, copy_string};
use crate::python_interpreters::{
    CodeObject, FrameObject, InterpreterState, ThreadState, TupleObject,
};

/// Call stack for a single python thread
#[derive(Debug, Clone, Serialize)]
pub struct StackTrace {
    /// The process id than generated this stack trace
    pub pid: Pid,
    /// The python thread id for this stack trace
    pub thread_id: u64,
    // The python thread name for this stack trace
    pub thread_name: Option<String>,
    /// The OS thread id for this stack tracee
    pub os_thread_id: Option<u64>,
    /// Whether or not the thread was active
    pub active: bool,
    /// Whether or not the thread held the GIL
    pub owns_gil: bool,
    /// The frames
    pub frames: Vec<Frame>,
    /// process commandline / parent process info
    pub process_info: Option<Arc<ProcessInfo>>,
    /// loopprof patch: the values of the `scope` argument of the innermost (at most
    /// [`MAX_SCOPE_FRAMES`]) frames whose code object takes one (an ASGI application's
    /// `(scope, receive, send)`), innermost first, read while the thread was stopped. Unchecked
    /// object addresses (0 when the slot was empty): see `PythonSpy::asgi_scope`. Read with the
    /// frame chain: while the thread was stopped, when it was (a sleeping thread is read
    /// without a stop and checked not to have run).
    #[serde(skip)]
    pub asgi_scopes: Vec<usize>,
    /// loopprof patch: the `scope` argument of the outermost such frame (the server's own
    /// scope dict, created once per request and referenced until the request ends), 0 when
    /// none: an identity of the request being served, read with the frame chain.
    #[serde(skip)]
    pub asgi_request: usize,
    /// loopprof patch: the word at offset 24 of [`Self::asgi_request`]'s dict, read with it
    /// (0 when none or unreadable). On CPython 3.8-3.13 that is `ma_version_tag`, which every
    /// dict creation and mutation sets from one interpreter-wide counter
    /// (`DICT_NEXT_VERSION`, Objects/dictobject.c), so a scope dict freed and its address
    /// reused by the next request's scope carries a different tag. From 3.14 the field is
    /// `_ma_watcher_tag` (watcher bits, no global counter) and on builds with another object
    /// header the offset holds `ob_type`: constant per object, so the address alone decides.
    #[serde(skip)]
    pub asgi_request_version: u64,
    /// loopprof patch: every Python frame's code object was already in the code cache when
    /// the frame chain was read, so every `scope` argument was looked for. False on the first
    /// read of new code (its argument positions are learnt from that read): a stack read
    /// then may serve a request without saying which, and should not be kept for reuse.
    #[serde(skip)]
    pub asgi_scopes_known: bool,
    /// loopprof patch: the thread's stack is deeper than [`MAX_FRAMES`]: only the innermost
    /// [`MAX_FRAMES`] frames were read (py-spy failed the whole read instead).
    #[serde(skip)]
    pub truncated: bool,
}

/// loopprof patch: most frames per stack whose `scope` argument is read.
pub const MAX_SCOPE_FRAMES: usize = 3;

/// loopprof patch: most frames read per stack; deeper stacks keep their innermost frames and
/// are marked [`StackTrace::truncated`]. py-spy's own limit (4096), where it failed the read.
pub const MAX_FRAMES: usize = 4096;

/// Information about a single function call in a stack trace
#[derive(Debug, Hash, Eq, PartialEq, Ord, PartialOrd, Clone, Serialize)]
pub struct Frame {
    /// The function name
    pub name: String,
    /// The full filename of the file
    pub filename: String,
    /// The module/shared library the
    pub module: Option<String>,
    /// A short, more readable, representation of the filename
    pub short_filename: Option<String>,
    /// The line number inside the file (or 0 for native frames without line information)
    pub line: i32,
    /// Local Variables associated with the frame
    pub locals: Option<Vec<LocalVariable>>,
    /// If this is an entry frame. Each entry frame corresponds to one native frame (Python 3.11)
    pub is_entry: bool,
    /// If the last frame was a shim. This is used in Python 3.12+ to detect entry frames.
    pub is_shim_entry: bool,
}

#[derive(Debug, Hash, Eq, PartialEq, Ord, PartialOrd, Clone, Serialize)]
pub struct LocalVariable {
    pub name: String,
    pub addr: usize,
    pub arg: bool,
    pub repr: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessInfo {
    pub pid: Pid,
    pub command_line: String,
    pub parent: Option<Box<ProcessInfo>>,
}

/// Given an InterpreterState, this function returns a vector of stack traces for each thread
pub fn get_stack_traces<I, P>(
    interpreter_address: usize,
    process: &P,
    threadstate_address: usize,
    config: Option<&Config>,
) -> Result<Vec<StackTrace>, Error>
where
    I: InterpreterState,
    P: ProcessMemory,
{
    let gil_thread_id = get_gil_threadid::<I, P>(threadstate_address, process)?;

    let threadstate_ptr_ptr = I::threadstate_ptr_ptr(interpreter_address);
    let mut threads: *const I::ThreadState = process
        .copy_struct(threadstate_ptr_ptr as usize)
        .context("Failed to copy PyThreadState head pointer")?;

    let mut ret = Vec::new();

    let lineno = config.map(|c| c.lineno).unwrap_or(LineNo::NoLine);
    let dump_locals = config.map(|c| c.dump_locals).unwrap_or(0);

    while !threads.is_null() {
        let thread = process
            .copy_pointer(threads)
            .context("Failed to copy PyThreadState")?;

        let mut trace = get_stack_trace(&thread, process, dump_locals > 0, lineno, None)?;
        trace.owns_gil = trace.thread_id == gil_thread_id;

        ret.push(trace);
        // This seems to happen occasionally when scanning BSS addresses for valid interpreters
        if ret.len() > 4096 {
            return Err(format_err!("Max thread recursion depth reached"));
        }
        threads = thread.next();
    }
    Ok(ret)
}

/// Gets a stack trace for an individual thread
pub fn get_stack_trace<T, P>(
    thread: &T,
    process: &P,
    copy_locals: bool,
    lineno: LineNo,
    mut cache: Option<&mut CodeCache>,
) -> Result<StackTrace, Error>
where
    T: ThreadState,
    P: ProcessMemory,
{
    let chain = read_frame_chain(thread, process, copy_locals, cache.as_deref_mut())?;
    resolve_frame_chain(thread, chain, process, copy_locals, lineno, cache)
}

/// loopprof patch: the part of a thread's stack that changes while the thread runs (its frame
/// chain), read by [`read_frame_chain`]; [`resolve_frame_chain`] turns it into a
/// [`StackTrace`] and may run after the thread was resumed when [`FrameChain::complete`].
pub struct FrameChain<F> {
    frame_ptr: *mut F,
    chain: Vec<F>,
    /// The `scope` argument of the innermost frames that take one (see
    /// [`StackTrace::asgi_scopes`]), and that of the outermost one.
    scopes: Vec<usize>,
    request: usize,
    /// See [`StackTrace::asgi_request_version`].
    request_version: u64,
    /// See [`StackTrace::asgi_scopes_known`].
    scopes_known: bool,
}

impl<F> FrameChain<F> {
    /// Whether every frame was read (with a cache bound to a process id and no locals):
    /// resolving it then reads only immutable code-object data.
    pub fn complete(&self) -> bool {
        self.frame_ptr.is_null() || !self.chain.is_empty()
    }
}

/// loopprof patch: reads a thread's frame chain (the only part of a stack that needs the
/// thread stopped). With a cache bound to a process id, the whole chain is read: first, in
/// one vectored read, the addresses this thread's chain had at the last sample (the memory is
/// read now, so a frame found there is exactly what reading it alone would give), then the
/// frames at new addresses one by one. Without one, only the first frame pointer is read and
/// [`resolve_frame_chain`] reads the frames as py-spy always did.
pub fn read_frame_chain<T, P>(
    thread: &T,
    process: &P,
    copy_locals: bool,
    cache: Option<&mut CodeCache>,
) -> Result<FrameChain<T::FrameObject>, Error>
where
    T: ThreadState,
    P: ProcessMemory,
{
    // python 3.11+ has an extra level of indirection to get the Frame from the threadstate
    let mut frame_address = thread.frame_address();
    if let Some(addr) = frame_address {
        frame_address = Some(process.copy_struct(addr)?);
    }

    let frame_ptr = thread.frame(frame_address);
    let mut chain: Vec<T::FrameObject> = Vec::new();
    let mut scopes = Vec::new();
    let mut request = 0;
    let mut request_version = 0;
    let mut scopes_known = false;
    if let (false, Some(cache)) = (copy_locals, cache) {
        if let Some(pid) = cache.pid {
            let previous = cache.chains.remove(&thread.thread_id()).unwrap_or_default();
            let known: HashMap<usize, T::FrameObject> = previous
                .iter()
                .copied()
                .zip(read_structs::<T::FrameObject>(pid, &previous))
                .filter_map(|(addr, f)| f.map(|f| (addr, f)))
                .collect();
            let mut addrs = Vec::new();
            let mut ptr = frame_ptr;
            while !ptr.is_null() && chain.len() < MAX_FRAMES {
                let frame = match known.get(&(ptr as usize)) {
                    Some(frame) => *frame,
                    None => process
                        .copy_pointer(ptr)
                        .context("Failed to copy PyFrameObject")?,
                };
                addrs.push(ptr as usize);
                ptr = frame.back();
                chain.push(frame);
            }
            // The `scope` argument of the innermost frames whose code object (as cached at
            // this address) takes one: one vectored read of the argument slots while the
            // thread is still stopped. `localsplus` (`f_localsplus` before 3.11) is the last
            // field of the frame struct and starts with the arguments, as `get_locals` reads.
            scopes_known = chain
                .iter()
                .filter(|f| f.is_python_frame())
                .all(|f| cache.entries.contains_key(&(f.code() as usize)));
            let ptr_size = std::mem::size_of::<usize>();
            let slots: Vec<usize> = chain
                .iter()
                .zip(&addrs)
                .filter(|(f, _)| f.is_python_frame())
                .filter_map(|(f, addr)| {
                    let arg = cache.entries.get(&(f.code() as usize))?.scope_arg?;
                    Some(
                        addr + std::mem::size_of::<T::FrameObject>() - ptr_size
                            + arg as usize * ptr_size,
                    )
                })
                .collect();
            // The innermost few (the most specific scope) and the outermost (the request).
            let mut wanted: Vec<usize> = slots.iter().copied().take(MAX_SCOPE_FRAMES).collect();
            let outer = slots.len().checked_sub(1);
            if slots.len() > MAX_SCOPE_FRAMES {
                wanted.push(slots[slots.len() - 1]);
            }
            let values: Vec<usize> = read_structs::<usize>(pid, &wanted)
                .into_iter()
                .map(|v| v.unwrap_or(0))
                .collect();
            if let Some(outer) = outer {
                request = values[outer.min(values.len() - 1)];
            }
            if request != 0 {
                request_version = read_structs::<u64>(pid, &[request + DICT_VERSION_OFFSET])
                    .first()
                    .copied()
                    .flatten()
                    .unwrap_or(0);
            }
            scopes = values.into_iter().take(MAX_SCOPE_FRAMES).collect();
            if cache.chains.len() >= 4096 {
                cache.chains.clear();
            }
            cache.chains.insert(thread.thread_id(), addrs);
        }
    }
    Ok(FrameChain {
        frame_ptr,
        chain,
        scopes,
        request,
        request_version,
        scopes_known,
    })
}

/// loopprof patch: offset of `ma_version_tag` in `PyDictObject` on 64-bit CPython 3.8-3.13
/// (`PyObject_HEAD`, 16 bytes, then `Py_ssize_t ma_used`; Include/cpython/dictobject.h).
const DICT_VERSION_OFFSET: usize = 24;

/// loopprof patch: turns a frame chain into a stack trace: code objects (all of them in one
/// vectored read when a cache is bound to a process id), names, files and line numbers.
pub fn resolve_frame_chain<T, P>(
    thread: &T,
    chain: FrameChain<T::FrameObject>,
    process: &P,
    copy_locals: bool,
    lineno: LineNo,
    mut cache: Option<&mut CodeCache>,
) -> Result<StackTrace, Error>
where
    T: ThreadState,
    P: ProcessMemory,
{
    let mut frames = Vec::new();
    let FrameChain {
        mut frame_ptr,
        chain,
        scopes,
        request,
        request_version,
        mut scopes_known,
    } = chain;

    // We are iterating in reverse, i.e. from last call to first call.
    // Since Python 3.12, there are shim frames inserted before a block
    // of Python frames. When we encounter one, update the last frame.
    let set_last_frame_as_shim_entry = &mut |frames: &mut Vec<Frame>| {
        if let Some(frame) = frames.last_mut() {
            frame.is_shim_entry = true;
        }
    };

    // loopprof patch: the code objects of every frame of the chain in one vectored read.
    let mut codes: Vec<Option<<T::FrameObject as FrameObject>::CodeObject>> = Vec::new();
    if let Some(pid) = cache.as_deref().and_then(|c| c.pid) {
        if !copy_locals && !chain.is_empty() {
            let addrs: Vec<usize> = chain
                .iter()
                .map(|f| {
                    if f.is_python_frame() {
                        f.code() as usize
                    } else {
                        0
                    }
                })
                .collect();
            codes = read_structs(pid, &addrs);
        }
    }

    let mut visited = 0;
    let mut truncated = false;
    while !frame_ptr.is_null() {
        visited += 1;
        // loopprof patch: a deeper stack keeps its innermost frames, marked, instead of
        // failing the read (and with it the attach, or every thread of the tick).
        if visited > MAX_FRAMES {
            truncated = true;
            break;
        }

        let frame = match chain.get(visited - 1) {
            Some(frame) => *frame,
            None => process
                .copy_pointer(frame_ptr)
                .context("Failed to copy PyFrameObject")?,
        };

        if !frame.is_python_frame() {
            frame_ptr = frame.back();
            set_last_frame_as_shim_entry(&mut frames);
            continue;
        }

        let code = match codes.get(visited - 1).copied().flatten() {
            Some(code) => code,
            None => process
                .copy_pointer(frame.code())
                .context("Failed to copy PyCodeObject")?,
        };

        // loopprof patch: names, filename and line table of a code object are immutable;
        // reuse them while the code object at this address still points at the same
        // objects (two reads per frame instead of eight).
        if !copy_locals {
            if let Some(cache) = cache.as_deref_mut() {
                if let Some((name, filename, line)) =
                    cache.lookup(frame.code() as usize, &code, frame.lasti(), lineno)
                {
                    frames.push(Frame {
                        name,
                        filename,
                        line,
                        short_filename: None,
                        module: None,
                        locals: None,
                        is_entry: frame.is_entry(),
                        is_shim_entry: false,
                    });
                    frame_ptr = frame.back();
                    continue;
                }
            }
        }
        // loopprof patch: a code object read in full was not in the cache (new code, or other
        // code at a reused address): its `scope` slot was not looked for, or by a stale entry.
        scopes_known = false;

        let filename = copy_string(code.filename(), process).context("Failed to copy filename");

        // Try to get qualname first (available in Python 3.11+), fall back to name
        let name = match code.qualname() {
            Some(qualname_ptr) => {
                copy_string(qualname_ptr, process).or_else(|_| copy_string(code.name(), process))
            }
            None => copy_string(code.name(), process),
        }
        .context("Failed to copy function name");

        // Guards against torn reads while sampling without pausing the process.
        if filename.is_err() || name.is_err() {
            frame_ptr = frame.back();
            set_last_frame_as_shim_entry(&mut frames);
            continue;
        }
        let filename = filename?;
        let name = name?;

        // skip <shim> entries in python 3.13+
        // Unset file/function name in py3.13 means this is a shim.
        if filename.is_empty() || filename == "<shim>" {
            frame_ptr = frame.back();
            set_last_frame_as_shim_entry(&mut frames);
            continue;
        }

        let mut table = None;
        let line = match lineno {
            LineNo::NoLine => 0,
            LineNo::First => code.first_lineno(),
            LineNo::LastInstruction => match get_line_table(&code, process) {
                Ok(t) => {
                    let line = code.get_line_number(frame.lasti(), &t);
                    table = Some(t);
                    line
                }
                Err(e) => {
                    // Failling to get the line number really shouldn't be fatal here, but
                    // can happen in extreme cases (https://github.com/benfred/py-spy/issues/164)
                    // Rather than fail set the linenumber to 0. This is used by the native extensions
                    // to indicate that we can't load a line number and it should be handled gracefully
                    warn!(
                        "Failed to get line number from {}.{}: {}",
                        filename, name, e
                    );
                    0
                }
            },
        };

        if let Some(cache) = cache.as_deref_mut() {
            if lineno != LineNo::LastInstruction || table.is_some() {
                let table = table.unwrap_or_default();
                let scope_arg = scope_argument(&code, process);
                cache.insert(
                    frame.code() as usize,
                    &code,
                    &name,
                    &filename,
                    table,
                    scope_arg,
                );
            }
        }

        let locals = if copy_locals {
            Some(
                get_locals(&code, frame_ptr, &frame, process)
                    .context("Failed to get local variables")?,
            )
        } else {
            None
        };

        let is_entry = frame.is_entry();

        frames.push(Frame {
            name,
            filename,
            line,
            short_filename: None,
            module: None,
            locals,
            is_entry,
            is_shim_entry: false,
        });

        frame_ptr = frame.back();
    }

    // First frame is always a shim
    set_last_frame_as_shim_entry(&mut frames);

    Ok(StackTrace {
        pid: 0,
        frames,
        thread_id: thread.thread_id(),
        thread_name: None,
        owns_gil: false,
        active: true,
        os_thread_id: thread.native_thread_id(),
        process_info: None,
        asgi_scopes: scopes,
        asgi_request: request,
        asgi_request_version: request_version,
        asgi_scopes_known: scopes_known,
        truncated,
    })
}

/// loopprof patch: the position of an argument named `scope` among the first arguments of a
/// code object taking 3 to 5 (an ASGI application: `(scope, receive, send)`, or a method
/// `(self, scope, receive, send)`), read from `co_varnames` (`co_localsplusnames` on 3.11+,
/// where the arguments come first too). Read once per code object, when it is cached.
fn scope_argument<C: CodeObject, P: ProcessMemory>(code: &C, process: &P) -> Option<u8> {
    let argcount = code.argcount();
    if !(3..=5).contains(&argcount) {
        return None;
    }
    let names = process.copy_pointer(code.varnames()).ok()?;
    for i in 0..2.min(names.size()) {
        let ptr: *const C::StringObject = process
            .copy_struct(names.address(code.varnames() as usize, i))
            .ok()?;
        if copy_string(ptr, process).ok()? == "scope" {
            return Some(i as u8);
        }
    }
    None
}

impl StackTrace {
    pub fn status_str(&self) -> &str {
        match (self.owns_gil, self.active) {
            (_, false) => "idle",
            (true, true) => "active+gil",
            (false, true) => "active",
        }
    }

    pub fn format_threadid(&self) -> String {
        // native threadids in osx are kinda useless, use the pthread id instead
        #[cfg(target_os = "macos")]
        return format!("{:#X}", self.thread_id);

        // otherwise use the native threadid if given
        #[cfg(not(target_os = "macos"))]
        match self.os_thread_id {
            Some(tid) => format!("{}", tid),
            None => format!("{:#X}", self.thread_id),
        }
    }
}

/// Copies a code object's line number table (loopprof patch: the table is kept in the cache).
fn get_line_table<C: CodeObject, P: ProcessMemory>(
    code: &C,
    process: &P,
) -> Result<Vec<u8>, Error> {
    copy_bytes(code.line_table(), process).context("Failed to copy line number table")
}

/// loopprof patch: what a code object's immutable fields held when it was last read.
struct CachedCode {
    /// Addresses of filename, name, qualname and line table, and the first line number: the
    /// entry is used only while the code object at this address still holds all of them.
    key: [usize; 5],
    name: String,
    filename: String,
    table: Vec<u8>,
    /// Line numbers already computed, by last instruction.
    lines: HashMap<i32, i32>,
    /// Position of its `scope` argument, for an ASGI application (see `scope_argument`).
    scope_arg: Option<u8>,
}

/// loopprof patch: cache of code-object data (names, filename, line table) by address, so a
/// frame costs two remote reads (frame, code object) instead of eight.
#[derive(Default)]
pub struct CodeCache {
    /// The process read, for vectored reads (none: read one struct at a time).
    pub pid: Option<Pid>,
    entries: HashMap<usize, CachedCode>,
    /// Frame addresses of each thread's stack at its last read, by Python thread id.
    chains: HashMap<u64, Vec<usize>>,
    /// Frames answered from the cache.
    pub hits: u64,
    /// Frames read in full.
    pub misses: u64,
}

/// Most code objects a cache keeps before it starts over (bounds memory with dynamic code).
const CODE_CACHE_LIMIT: usize = 16384;
/// Most line numbers kept per code object.
const LINE_CACHE_LIMIT: usize = 256;

/// loopprof patch: reads one `S` at each non-zero address with as few `process_vm_readv`
/// calls as possible. An entry is `None` when its address was zero or could not be read
/// (the kernel stops at the first unreadable address; callers read those one by one).
fn read_structs<S: Copy>(pid: Pid, addrs: &[usize]) -> Vec<Option<S>> {
    const BATCH: usize = 512;
    let size = std::mem::size_of::<S>();
    let mut out: Vec<Option<S>> = vec![None; addrs.len()];
    let wanted: Vec<usize> = (0..addrs.len()).filter(|i| addrs[*i] != 0).collect();
    if size == 0 {
        return out;
    }
    for batch in wanted.chunks(BATCH) {
        let mut buf = vec![0u8; batch.len() * size];
        let local: Vec<libc::iovec> = buf
            .chunks_mut(size)
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: size,
            })
            .collect();
        let remote: Vec<libc::iovec> = batch
            .iter()
            .map(|i| libc::iovec {
                iov_base: addrs[*i] as *mut libc::c_void,
                iov_len: size,
            })
            .collect();
        // SAFETY: every local iovec points into `buf`, which outlives the call.
        let n = unsafe {
            libc::process_vm_readv(
                pid as libc::pid_t,
                local.as_ptr(),
                local.len() as libc::c_ulong,
                remote.as_ptr(),
                remote.len() as libc::c_ulong,
                0,
            )
        };
        let complete = if n < 0 { 0 } else { n as usize / size };
        for (k, i) in batch.iter().enumerate().take(complete) {
            // SAFETY: `buf` holds `size` initialised bytes at `k * size`; the bindings' structs
            // are plain C data valid for any bit pattern (as `copy_struct` assumes).
            out[*i] =
                Some(unsafe { std::ptr::read_unaligned(buf[k * size..].as_ptr().cast::<S>()) });
        }
    }
    out
}

fn code_key<C: CodeObject>(code: &C) -> [usize; 5] {
    [
        code.filename() as usize,
        code.name() as usize,
        code.qualname().map(|q| q as usize).unwrap_or(0),
        code.line_table() as usize,
        code.first_lineno() as u32 as usize,
    ]
}

impl CodeCache {
    /// An empty cache for reading process `pid` (vectored reads).
    pub fn for_process(pid: Pid) -> CodeCache {
        CodeCache {
            pid: Some(pid),
            ..CodeCache::default()
        }
    }

    fn lookup<C: CodeObject>(
        &mut self,
        addr: usize,
        code: &C,
        lasti: i32,
        lineno: LineNo,
    ) -> Option<(String, String, i32)> {
        let key = code_key(code);
        let Some(entry) = self.entries.get_mut(&addr).filter(|e| e.key == key) else {
            self.misses += 1;
            return None;
        };
        self.hits += 1;
        let line = match lineno {
            LineNo::NoLine => 0,
            LineNo::First => code.first_lineno(),
            LineNo::LastInstruction => match entry.lines.get(&lasti) {
                Some(line) => *line,
                None => {
                    let line = code.get_line_number(lasti, &entry.table);
                    if entry.lines.len() < LINE_CACHE_LIMIT {
                        entry.lines.insert(lasti, line);
                    }
                    line
                }
            },
        };
        Some((entry.name.clone(), entry.filename.clone(), line))
    }

    fn insert<C: CodeObject>(
        &mut self,
        addr: usize,
        code: &C,
        name: &str,
        filename: &str,
        table: Vec<u8>,
        scope_arg: Option<u8>,
    ) {
        if self.entries.len() >= CODE_CACHE_LIMIT {
            self.entries.clear();
        }
        self.entries.insert(
            addr,
            CachedCode {
                key: code_key(code),
                name: name.to_owned(),
                filename: filename.to_owned(),
                table,
                lines: HashMap::new(),
                scope_arg,
            },
        );
    }

    /// Number of code objects held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// loopprof patch: one frame's function, file and line (the last instruction's), through the
/// code-object cache; `None` for a shim frame or when the code object cannot be read. Used for
/// frames outside any thread's stack (the frames of suspended coroutines, `crate::tasks`).
/// `codes` holds the code objects already read during the same read of the process: a frame
/// holds a reference to its code object, so one read while its frames live is enough.
pub(crate) fn describe_frame<F: FrameObject, P: ProcessMemory>(
    frame: &F,
    process: &P,
    cache: &mut CodeCache,
    codes: &mut HashMap<usize, F::CodeObject>,
) -> Option<Frame> {
    if !frame.is_python_frame() || frame.code().is_null() {
        return None;
    }
    let code: F::CodeObject = match codes.get(&(frame.code() as usize)) {
        Some(code) => *code,
        None => {
            let code = process.copy_pointer(frame.code()).ok()?;
            codes.insert(frame.code() as usize, code);
            code
        }
    };
    let (name, filename, line) = match cache.lookup(
        frame.code() as usize,
        &code,
        frame.lasti(),
        LineNo::LastInstruction,
    ) {
        Some(found) => found,
        None => {
            let filename = copy_string(code.filename(), process).ok()?;
            let name = match code.qualname() {
                Some(q) => copy_string(q, process).or_else(|_| copy_string(code.name(), process)),
                None => copy_string(code.name(), process),
            }
            .ok()?;
            if filename.is_empty() || filename == "<shim>" {
                return None;
            }
            let table = get_line_table(&code, process).ok()?;
            let line = code.get_line_number(frame.lasti(), &table);
            let scope_arg = scope_argument(&code, process);
            cache.insert(
                frame.code() as usize,
                &code,
                &name,
                &filename,
                table,
                scope_arg,
            );
            (name, filename, line)
        }
    };
    Some(Frame {
        name,
        filename,
        line,
        short_filename: None,
        module: None,
        locals: None,
        is_entry: frame.is_entry(),
        is_shim_entry: false,
    })
}

impl CodeCache {
    /// loopprof patch: the position of the `scope` argument of the cached code object at
    /// `code` (see `scope_argument`), when it takes one.
    pub(crate) fn scope_arg(&self, code: usize) -> Option<u8> {
        self.entries.get(&code)?.scope_arg
    }
}

fn get_locals<C: CodeObject, F: FrameObject, P: ProcessMemory>(
    code: &C,
    frameptr: *const F,
    frame: &F,
    process: &P,
) -> Result<Vec<LocalVariable>, Error> {
    let local_count = code.nlocals() as usize;
    let argcount = code.argcount() as usize;
    let varnames = process
        .copy_pointer(code.varnames())
        .context("Failed to get varnames from PyCodeObject")?;

    let ptr_size = std::mem::size_of::<*const i32>();
    let locals_addr = frameptr as usize + std::mem::size_of_val(frame) - ptr_size;

    let mut ret = Vec::new();

    for i in 0..local_count {
        let nameptr: *const C::StringObject =
            process.copy_struct(varnames.address(code.varnames() as usize, i))?;

        let name = copy_string(nameptr, process).context("Failed to copy local variable name")?;
        let addr: usize = process.copy_struct(locals_addr + i * ptr_size)?;

        // hack: handle things like None, True, False, small integer constants etc on Python 3.14
        let addr = if addr & 1 == 1 { addr - 1 } else { addr };

        if addr == 0 {
            continue;
        }
        ret.push(LocalVariable {
            name,
            addr,
            arg: i < argcount,
            repr: None,
        });
    }
    Ok(ret)
}

pub fn get_gil_threadid<I: InterpreterState, P: ProcessMemory>(
    threadstate_address: usize,
    process: &P,
) -> Result<u64, Error> {
    // happens during initialization when checking to see if we have a valid interpreter (before we've figured out the threadstate_address)
    if threadstate_address == 0 {
        return Ok(0);
    }

    let addr = if I::HAS_GIL_RUNTIME_STATE {
        // get the gilruntimestate - note that this struct is identical between 3.12/3.13/3.14
        let gil_state: crate::python_bindings::v3_13_0::_gil_runtime_state =
            process.copy_struct(threadstate_address)?;
        // check to see if the GIL is locked already
        if gil_state.locked != 0 {
            gil_state.last_holder as usize
        } else {
            0
        }
    } else {
        process.copy_struct::<usize>(threadstate_address)?
    };

    // if the addr is 0, no thread is currently holding the GIL
    let threadid = if addr != 0 {
        let threadstate: I::ThreadState = process.copy_struct(addr)?;
        threadstate.thread_id()
    } else {
        0
    };

    Ok(threadid)
}

impl ProcessInfo {
    pub fn to_frame(&self) -> Frame {
        Frame {
            name: format!("process {}:\"{}\"", self.pid, self.command_line),
            filename: String::from(""),
            module: None,
            short_filename: None,
            line: 0,
            locals: None,
            is_entry: true,
            is_shim_entry: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python_bindings::v3_7_0::PyCodeObject;
    use crate::python_data_access::tests::to_byteobject;
    use remoteprocess::LocalProcess;

    #[test]
    fn test_get_line_number() {
        let mut lnotab = to_byteobject(&[0u8, 1, 10, 1, 8, 1, 4, 1]);
        let code = PyCodeObject {
            co_firstlineno: 3,
            co_lnotab: &mut lnotab.base.ob_base.ob_base,
            ..Default::default()
        };
        let table = get_line_table(&code, &LocalProcess).unwrap();
        let lineno = code.get_line_number(30, &table);
        assert_eq!(lineno, 7);
    }
}
