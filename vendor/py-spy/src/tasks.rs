//! loopprof patch 13: the asyncio tasks of a process, read from its memory without running
//! code in it (CPython 3.8-3.13). Tasks are found in the registries the C `_asyncio` module
//! keeps and `asyncio.tasks` re-exports: `_all_tasks` (a `WeakSet`, 3.8-3.11), or
//! `_scheduled_tasks` (a `WeakSet`) and `_eager_tasks` (a `set`) on 3.12-3.13. uvloop creates
//! the same `_asyncio.Task` objects, so its tasks are there too. Each task's await chain is
//! read from its coroutine: the coroutine's frame (a `PyFrameObject` before 3.11, the
//! `_PyInterpreterFrame` embedded in the coroutine since), and, while it is suspended in an
//! `await`, the object it delegates to, which is the top of the frame's value stack (what
//! CPython's `_PyGen_yf` returns): another coroutine, a generator, an async generator's
//! `asend`, or the `_asyncio.FutureIter` of the future it waits for. The task's own
//! `task_fut_waiter` names that future; a `_GatheringFuture` names its children.
//!
//! The layouts of `TaskObj` (Modules/_asynciomodule.c) and of the generator object
//! (Include/cpython/genobject.h, Include/internal/pycore_frame.h) are not in py-spy's bindings;
//! they are written per version in [`Layout::of`] (measured with ctypes on each release
//! 3.8-3.13) and checked by loopprof's live test `tests/live_tasks.rs` on every one present. 3.14 and later keep tasks
//! in per-thread lists described by the interpreter's asyncio debug offsets: not read here
//! (`Ok(None)`).
//!
//! Nothing is stopped: a task list read while the loop runs may be torn. Every object is
//! checked to have the expected type before it is followed; a task that cannot be read is
//! counted in [`TaskSnapshot::unreadable`], never followed into garbage.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, Error};
use remoteprocess::ProcessMemory;

use crate::asgi::{AsgiCache, Reader};
use crate::python_data_access::copy_long;
use crate::python_interpreters::{FrameObject, InterpreterState, Object, ThreadState, TypeObject};
use crate::stack_trace::{describe_frame, CodeCache, Frame};
use crate::version::Version;

type FrameOf<I> = <<I as InterpreterState>::ThreadState as ThreadState>::FrameObject;

const PTR: usize = std::mem::size_of::<usize>();

/// Where a task's coroutine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Scheduled, its coroutine not started yet.
    Created,
    /// Suspended in an `await`.
    Suspended,
    /// Running on its loop's thread at the time of the read.
    Running,
}

/// One asyncio task.
#[derive(Debug, Clone)]
pub struct AsyncTask {
    /// The task object's address (unique among live tasks at one instant).
    pub addr: usize,
    /// `Task.get_name()`: `Task-N` unless the application named it.
    pub name: String,
    /// The address of the task's event loop.
    pub loop_addr: usize,
    /// Its state.
    pub state: TaskState,
    /// The await chain, innermost first (as [`crate::stack_trace::StackTrace::frames`]): the
    /// task's coroutine is last.
    pub frames: Vec<Frame>,
    /// The type name of the future the task waits for (`task_fut_waiter`), when it waits
    /// for one: `_asyncio.Future`, `_asyncio.Task`, `_GatheringFuture`, ...
    pub waiting_for: Option<String>,
    /// The tasks it waits for: an awaited task, or the children of an awaited `gather`.
    pub awaits: Vec<usize>,
    /// The `scope` argument of the innermost ASGI frames of the chain (at most 3), then
    /// that of the outermost one, as [`crate::stack_trace::StackTrace::asgi_scopes`].
    pub asgi_scopes: Vec<usize>,
    /// The `scope` of the outermost ASGI frame (0 when none).
    pub asgi_request: usize,
    /// The chain was longer than [`TaskLimits::max_depth`] and was cut.
    pub truncated: bool,
}

/// The tasks of one process at one instant.
#[derive(Debug, Clone, Default)]
pub struct TaskSnapshot {
    /// Live (not done) tasks.
    pub tasks: Vec<AsyncTask>,
    /// Registry entries that could not be read as tasks (freed or changing under the read).
    pub unreadable: usize,
    /// There were more than [`TaskLimits::max_tasks`] tasks; the rest were not read.
    pub truncated: bool,
}

/// Bounds of one read.
#[derive(Debug, Clone, Copy)]
pub struct TaskLimits {
    /// Most tasks read.
    pub max_tasks: usize,
    /// Most coroutines followed in one task's chain.
    pub max_depth: usize,
}

impl Default for TaskLimits {
    fn default() -> Self {
        TaskLimits {
            max_tasks: 10_000,
            max_depth: 128,
        }
    }
}

/// What is learnt once per process: the registries' addresses and, per type object, where a
/// task's own fields start (`None`: not a task type).
#[derive(Default)]
pub struct TaskCache {
    registries: Vec<usize>,
    task_fields: HashMap<usize, Option<usize>>,
}

/// How a generator-like object (coroutine, generator, async generator) of one CPython minor
/// version keeps its frame, and where that frame's value stack ends.
#[derive(Debug, Clone, Copy)]
enum GenFrame {
    /// 3.8, 3.9: `gi_frame` (a `PyFrameObject*`) then `char gi_running`; the frame's
    /// `f_stacktop` is set while it is suspended.
    Pointer39 { stacktop: usize },
    /// 3.10: `gi_frame`; the frame's `f_state` (`FRAME_CREATED` -2, `FRAME_SUSPENDED` -1,
    /// `FRAME_EXECUTING` 0), `f_valuestack` and `f_stackdepth`.
    Pointer310 {
        state: usize,
        valuestack: usize,
        stackdepth: usize,
    },
    /// 3.11+: the `_PyInterpreterFrame` is embedded at `iframe`; `int8_t gi_frame_state` at
    /// `state` (created, suspended (two values on 3.13), executing 0, completed 1, cleared 4);
    /// the frame's `stacktop` indexes `localsplus`.
    Embedded {
        iframe: usize,
        state: usize,
        created: i8,
        stacktop: usize,
        localsplus: usize,
    },
}

/// The version-dependent layout used here.
#[derive(Debug, Clone, Copy)]
struct Layout {
    gen: GenFrame,
    /// Offset of `task_fut_waiter` after the `_asyncio.Future` part of a task (3.13 put the
    /// `task_must_cancel`/`task_num_cancels_requested` ints first). `task_coro` and
    /// `task_name` follow it.
    task_delta: usize,
}

impl Layout {
    /// The layout of CPython `version` (`None`: tasks are not read on it). `head` is the size
    /// of `PyObject`.
    fn of(version: &Version, head: usize) -> Option<Layout> {
        use crate::python_bindings::{v3_10_0, v3_11_0, v3_12_0, v3_13_0, v3_8_0, v3_9_5};
        use std::mem::offset_of;
        let gen = match (version.major, version.minor) {
            (3, 8) => GenFrame::Pointer39 {
                stacktop: offset_of!(v3_8_0::_frame, f_stacktop),
            },
            (3, 9) => GenFrame::Pointer39 {
                stacktop: offset_of!(v3_9_5::_frame, f_stacktop),
            },
            (3, 10) => GenFrame::Pointer310 {
                state: offset_of!(v3_10_0::_frame, f_state),
                valuestack: offset_of!(v3_10_0::_frame, f_valuestack),
                stackdepth: offset_of!(v3_10_0::_frame, f_stackdepth),
            },
            // gi_code, gi_weakreflist, gi_name, gi_qualname, gi_exc_state (2 pointers),
            // gi_origin_or_finalizer, then four chars (hooks_inited, closed, running_async,
            // frame_state), then gi_iframe.
            (3, 11) => GenFrame::Embedded {
                iframe: head + 8 * PTR,
                state: head + 7 * PTR + 3,
                created: -2,
                stacktop: offset_of!(v3_11_0::_PyInterpreterFrame, stacktop),
                localsplus: offset_of!(v3_11_0::_PyInterpreterFrame, localsplus),
            },
            // 3.12 moved gi_code into the frame.
            (3, 12) => GenFrame::Embedded {
                iframe: head + 7 * PTR,
                state: head + 6 * PTR + 3,
                created: -2,
                stacktop: offset_of!(v3_12_0::_PyInterpreterFrame, stacktop),
                localsplus: offset_of!(v3_12_0::_PyInterpreterFrame, localsplus),
            },
            (3, 13) => GenFrame::Embedded {
                iframe: head + 7 * PTR,
                state: head + 6 * PTR + 3,
                created: -3,
                stacktop: offset_of!(v3_13_0::_PyInterpreterFrame, stacktop),
                localsplus: offset_of!(v3_13_0::_PyInterpreterFrame, localsplus),
            },
            _ => return None,
        };
        let task_delta = if (version.major, version.minor) == (3, 13) {
            PTR
        } else {
            0
        };
        Some(Layout { gen, task_delta })
    }
}

/// One step of an await chain.
enum Link {
    /// A generator-like object's frame was read; continue with the awaited object, if any.
    Frame(Option<usize>),
    /// Continue with this object (an async generator behind its `asend`).
    Follow(usize),
    /// The chain ends here.
    End,
}

struct TaskReader<'a, I: InterpreterState, P: ProcessMemory> {
    r: Reader<'a, I, P>,
    code: &'a mut CodeCache,
    /// Code objects read during this read (see `describe_frame`).
    codes: HashMap<usize, <FrameOf<I> as FrameObject>::CodeObject>,
    tasks: &'a mut TaskCache,
    layout: Layout,
    limits: TaskLimits,
}

fn word<P: ProcessMemory>(process: &P, addr: usize) -> Result<usize, Error> {
    Ok(process.copy_struct::<usize>(addr)?)
}

/// The pointer-sized word at `off` in `bytes`, when it is there.
fn word_in(bytes: &[u8], off: usize) -> Option<usize> {
    Some(usize::from_ne_bytes(
        bytes.get(off..off + PTR)?.try_into().ok()?,
    ))
}

/// Most slots of a task registry's table read (a set of 2^18 slots holds up to 157,000
/// tasks; the reader keeps 10,000).
const MAX_SET_SLOTS: usize = 1 << 18;

/// Value-stack slots read with a 3.11+ coroutine's frame (the awaited object is the top of
/// the stack, after the locals: most coroutines have fewer than this many).
const EXTRA_SLOTS: usize = 24;

impl<I: InterpreterState, P: ProcessMemory> TaskReader<'_, I, P> {
    fn head() -> usize {
        std::mem::size_of::<I::Object>()
    }

    /// Where the task fields start in instances of the type at `tp` (`None`: not a task).
    fn task_fields(&mut self, tp: usize) -> Option<usize> {
        if let Some(known) = self.tasks.task_fields.get(&tp) {
            return *known;
        }
        let mut found = None;
        let mut t = tp;
        // A Task subclass (defined in Python) has `_asyncio.Task` a few bases up.
        for _ in 0..6 {
            if t == 0 {
                break;
            }
            let Ok(ty) = self
                .r
                .process
                .copy_struct::<<I::Object as Object>::TypeObject>(t)
            else {
                break;
            };
            let name = self
                .r
                .process
                .copy(ty.name() as usize, 16)
                .unwrap_or_default();
            if name.starts_with(b"_asyncio.Task\0") {
                let base = ty.base();
                if let Ok(future) = self
                    .r
                    .process
                    .copy_struct::<<I::Object as Object>::TypeObject>(base)
                {
                    let size = future.basicsize();
                    if size > 0 && (size as usize) < 4096 {
                        found = Some(size as usize + self.layout.task_delta);
                    }
                }
                break;
            }
            t = ty.base();
        }
        if self.tasks.task_fields.len() > 4096 {
            self.tasks.task_fields.clear();
        }
        self.tasks.task_fields.insert(tp, found);
        found
    }

    /// The task fields' offset of the object at `addr`, when it is a task.
    fn as_task(&mut self, addr: usize) -> Option<usize> {
        if addr == 0 {
            return None;
        }
        let obj: I::Object = self.r.process.copy_struct(addr).ok()?;
        self.task_fields(obj.ob_type() as usize)
    }

    /// The non-empty slots of a `set` (its `setentry` table: `PySetObject` is `fill`, `used`,
    /// `mask`, `table` after the header, 3.8-3.15): live members, and the dummy keys and dead
    /// weakrefs the caller filters. The table is read in 64 KiB pieces; a table of more than
    /// [`MAX_SET_SLOTS`] slots is refused (a set never shrinks, so one past burst of tasks
    /// would otherwise be read whole at every snapshot).
    fn set_members(&mut self, addr: usize) -> Result<Vec<usize>, Error> {
        let head = Self::head();
        let used = word(self.r.process, addr + head + PTR)?;
        let mask = word(self.r.process, addr + head + 2 * PTR)?;
        let table = word(self.r.process, addr + head + 3 * PTR)?;
        let slots = mask.wrapping_add(1);
        if table == 0 || !slots.is_power_of_two() || slots > MAX_SET_SLOTS || used > slots {
            bail!("not a set of at most {MAX_SET_SLOTS} slots");
        }
        let mut out = Vec::new();
        const CHUNK: usize = 4096;
        let mut first = 0;
        while first < slots {
            let n = CHUNK.min(slots - first);
            let bytes = self.r.process.copy(table + first * 2 * PTR, n * 2 * PTR)?;
            for entry in bytes.chunks_exact(2 * PTR) {
                if let Some(key) = word_in(entry, 0).filter(|k| *k != 0) {
                    out.push(key);
                }
            }
            first += n;
        }
        Ok(out)
    }

    /// The registries (`WeakSet`s and `set`s of tasks) of `asyncio.tasks`, found once in
    /// `sys.modules` and checked by type on every read.
    fn registries(&mut self, modules: usize) -> Vec<usize> {
        let valid = |r: &mut Self, addrs: &[usize]| {
            !addrs.is_empty()
                && addrs
                    .iter()
                    .all(|a| matches!(r.r.type_name(*a).as_deref(), Ok("WeakSet") | Ok("set")))
        };
        let cached = self.tasks.registries.clone();
        if valid(self, &cached) {
            return cached;
        }
        let names: &[&str] = if (self.r.version.major, self.r.version.minor) >= (3, 12) {
            &["_scheduled_tasks", "_eager_tasks"]
        } else {
            &["_all_tasks"]
        };
        let found: Vec<usize> = names
            .iter()
            .filter_map(|n| self.r.module_attr(modules, "asyncio.tasks", n))
            .collect();
        let found = if valid(self, &found) {
            found
        } else {
            Vec::new()
        };
        self.tasks.registries = found.clone();
        found
    }

    /// Every live task in the registries (addresses), at most `max_tasks`.
    fn all_tasks(&mut self, registries: &[usize], snap: &mut TaskSnapshot) -> Vec<usize> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for reg in registries {
            let set = match self.r.type_name(*reg).as_deref() {
                Ok("WeakSet") => self
                    .r
                    .attrs(*reg)
                    .ok()
                    .and_then(|a| a.into_iter().find(|(k, _)| k == "data").map(|(_, v)| v)),
                Ok("set") => Some(*reg),
                _ => None,
            };
            let Some(set) = set else {
                snap.unreadable += 1;
                continue;
            };
            let weak = set != *reg;
            let Ok(members) = self.set_members(set) else {
                snap.unreadable += 1;
                continue;
            };
            for m in members {
                // A deleted slot holds the set's dummy key (type `<dummy key> type`).
                if self
                    .r
                    .type_name(m)
                    .map(|t| t.starts_with("<dummy"))
                    .unwrap_or(false)
                {
                    continue;
                }
                // A WeakSet holds weakrefs: `PyWeakReference` is `wr_object` after the header
                // (`None` once the task is gone).
                let task = if weak {
                    match word(self.r.process, m + Self::head()) {
                        Ok(t) => t,
                        Err(_) => {
                            snap.unreadable += 1;
                            continue;
                        }
                    }
                } else {
                    m
                };
                if self.as_task(task).is_some() {
                    if out.len() == self.limits.max_tasks {
                        snap.truncated = true;
                        return out;
                    }
                    if seen.insert(task) {
                        out.push(task);
                    }
                } else if !matches!(self.r.type_name(task).as_deref(), Ok("NoneType")) {
                    snap.unreadable += 1;
                }
            }
        }
        out
    }

    /// Reads one link of a chain: the object at `obj`, continuing through generator-like
    /// objects. One read of the object's first bytes gives its type and, on 3.11+, its state
    /// and whole embedded frame with the first value-stack slots; before 3.11 the frame is a
    /// second read.
    fn link(
        &mut self,
        obj: usize,
        chain: &mut Vec<(usize, FrameOf<I>)>,
        state: &mut Option<TaskState>,
    ) -> Result<Link, Error> {
        let head = Self::head();
        let p = self.r.process;
        let fsize = std::mem::size_of::<FrameOf<I>>();
        let span = match self.layout.gen {
            GenFrame::Embedded { iframe, .. } => iframe + fsize + EXTRA_SLOTS * PTR,
            _ => head + 2 * PTR,
        };
        // A small object (a FutureIter) may end just before an unmapped page: then read its
        // header alone.
        let block = match p.copy(obj, span) {
            Ok(b) => b,
            Err(_) => p.copy(obj, head)?,
        };
        let tp = word_in(&block, head - PTR).ok_or_else(|| anyhow::format_err!("short read"))?;
        // Whether the top of the value stack is what this object awaits when suspended. A
        // coroutine suspends only in an `await`; an async generator reached through an
        // `asend` is suspended in an `await` too (a `yield` would have finished the send). A
        // plain generator may be at a bare `yield`, where the top of the stack is not an
        // awaited object (CPython's `_PyGen_yf` checks the next opcode): it is followed only
        // where the state says `yield from` (3.13's `FRAME_SUSPENDED_YIELD_FROM`).
        let kind = self.r.type_name_of_type(tp)?;
        let mut follow = match kind.as_str() {
            "coroutine" | "async_generator" => true,
            "generator" => false,
            // `async_generator_asend`/`_athrow` and `coroutine_wrapper` hold the generator
            // right after the header.
            "async_generator_asend" | "async_generator_athrow" | "coroutine_wrapper" => {
                return Ok(Link::Follow(word(p, obj + head)?));
            }
            _ if chain.is_empty() => {
                // The task's own coroutine is of a type this reader does not know (a
                // Cython-compiled coroutine): the task cannot be read.
                bail!("a task's coroutine of type {kind}");
            }
            _ => return Ok(Link::End),
        };
        if block.len() < span {
            bail!("short read of a generator");
        }
        let (frame_addr, frame, this_state, awaited) = match self.layout.gen {
            GenFrame::Embedded {
                iframe,
                state,
                created,
                stacktop,
                localsplus,
            } => {
                let raw = block[state] as i8;
                let st = match raw {
                    s if s == created => TaskState::Created,
                    s if s < 0 => TaskState::Suspended,
                    0 => TaskState::Running,
                    _ => return Ok(Link::End),
                };
                // 3.13 tells `yield from`/`await` (-1) from a plain `yield` (-2).
                if created == -3 {
                    follow = raw == -1;
                }
                // SAFETY: `block` holds `fsize` bytes at `iframe`; the bindings' structs are
                // plain C data valid for any bit pattern (as `copy_struct` assumes).
                let frame: FrameOf<I> = unsafe {
                    std::ptr::read_unaligned(block[iframe..iframe + fsize].as_ptr().cast())
                };
                let top = i32::from_ne_bytes(
                    block[iframe + stacktop..iframe + stacktop + 4]
                        .try_into()
                        .unwrap_or([0; 4]),
                );
                let awaited = if !follow || st != TaskState::Suspended || top <= 0 || top > 1 << 16
                {
                    0
                } else {
                    let off = iframe + localsplus + (top as usize - 1) * PTR;
                    match word_in(&block, off) {
                        Some(w) => w,
                        None => word(p, obj + off)?,
                    }
                };
                (obj + iframe, frame, st, awaited)
            }
            GenFrame::Pointer39 { stacktop } => {
                let f = word_in(&block, head).unwrap_or(0);
                if f == 0 {
                    return Ok(Link::End); // finished
                }
                let frame: FrameOf<I> = p.copy_struct(f)?;
                let st = if block[head + PTR] != 0 {
                    TaskState::Running
                } else if frame.lasti() < 0 {
                    TaskState::Created
                } else {
                    TaskState::Suspended
                };
                // `f_stacktop` points just past the top of the value stack, which lies inside
                // the frame object, after its fixed part.
                let top = word(p, f + stacktop)?;
                let awaited = match top.checked_sub(PTR) {
                    Some(slot) if follow && st == TaskState::Suspended && slot >= f + stacktop => {
                        word(p, slot)?
                    }
                    _ => 0,
                };
                (f, frame, st, awaited)
            }
            GenFrame::Pointer310 {
                state,
                valuestack,
                stackdepth,
            } => {
                let f = word_in(&block, head).unwrap_or(0);
                if f == 0 {
                    return Ok(Link::End);
                }
                let frame: FrameOf<I> = p.copy_struct(f)?;
                let st = match p.copy_struct::<i8>(f + state)? {
                    -2 => TaskState::Created,
                    -1 => TaskState::Suspended,
                    0 => TaskState::Running,
                    _ => return Ok(Link::End),
                };
                let awaited = if follow && st == TaskState::Suspended {
                    let depth: i32 = p.copy_struct(f + stackdepth)?;
                    let base = word(p, f + valuestack)?;
                    match (depth as usize)
                        .checked_sub(1)
                        .filter(|_| (1..=4096).contains(&depth))
                        .and_then(|d| base.checked_add(d * PTR))
                    {
                        Some(slot) if base != 0 => word(p, slot)?,
                        _ => 0,
                    }
                } else {
                    0
                };
                (f, frame, st, awaited)
            }
        };
        chain.push((frame_addr, frame));
        if state.is_none() {
            *state = Some(this_state);
        }
        Ok(Link::Frame((awaited != 0).then_some(awaited)))
    }

    /// Reads the task at `addr`; `Ok(None)` when it is done.
    fn task(&mut self, addr: usize) -> Result<Option<AsyncTask>, Error> {
        let Some(fields) = self.as_task(addr) else {
            bail!("not a task");
        };
        let p = self.r.process;
        let loop_addr = word(p, addr + Self::head())?;
        let waiter = word(p, addr + fields)?;
        let coro = word(p, addr + fields + PTR)?;
        let name_obj = word(p, addr + fields + 2 * PTR)?;
        let mut chain = Vec::new();
        let mut state = None;
        let mut obj = coro;
        let mut truncated = false;
        let mut steps = 0;
        while obj != 0 {
            steps += 1;
            if steps > self.limits.max_depth {
                truncated = true;
                break;
            }
            match self.link(obj, &mut chain, &mut state)? {
                Link::Frame(next) => obj = next.unwrap_or(0),
                Link::Follow(next) => obj = next,
                Link::End => break,
            }
        }
        let Some(state) = state else {
            return Ok(None); // the coroutine has finished: a done task
        };
        let name = match self.r.type_name(name_obj).as_deref() {
            Ok("str") => self.r.string(name_obj).unwrap_or_default(),
            // 3.13 keeps the task's number and formats `Task-N` when asked.
            Ok("int") => match copy_long(p, self.r.version, name_obj) {
                Ok((n, false)) => format!("Task-{n}"),
                _ => String::new(),
            },
            _ => String::new(),
        };
        let (mut waiting_for, mut awaits) = (None, Vec::new());
        if waiter != 0 {
            let kind = self.r.type_name(waiter)?;
            if self.as_task(waiter).is_some() {
                awaits.push(waiter);
            } else if kind == "_GatheringFuture" {
                let children = self
                    .r
                    .attrs(waiter)
                    .ok()
                    .and_then(|a| a.into_iter().find(|(k, _)| k == "_children"))
                    .map(|(_, v)| v);
                if let Some(children) = children {
                    for c in self.r.list(children).unwrap_or_default() {
                        if self.as_task(c).is_some() {
                            awaits.push(c);
                        }
                    }
                }
            }
            waiting_for = Some(kind);
        }
        // Frames (outermost coroutine first in `chain`) and the ASGI scopes they hold.
        let mut frames = Vec::with_capacity(chain.len());
        let mut slots = Vec::new();
        for (frame_addr, frame) in &chain {
            if let Some(f) = describe_frame(frame, p, self.code, &mut self.codes) {
                if let Some(arg) = self.code.scope_arg(frame.code() as usize) {
                    let slot =
                        frame_addr + std::mem::size_of::<FrameOf<I>>() - PTR + arg as usize * PTR;
                    slots.push(slot);
                }
                frames.push(f);
            }
        }
        frames.reverse();
        let mut scopes: Vec<usize> = slots
            .iter()
            .rev()
            .take(3)
            .filter_map(|s| word(p, *s).ok())
            .collect();
        let request = slots.first().and_then(|s| word(p, *s).ok()).unwrap_or(0);
        if slots.len() > 3 {
            scopes.push(request);
        }
        Ok(Some(AsyncTask {
            addr,
            name,
            loop_addr,
            state,
            frames,
            waiting_for,
            awaits,
            asgi_scopes: scopes,
            asgi_request: request,
            truncated,
        }))
    }
}

/// Reads the asyncio tasks of a process (`modules_ptr`: the address of the pointer to
/// `sys.modules`, `PythonProcessLayout::imports_modules_address`). `Ok(None)` when tasks are
/// not read on this version (3.14+) or `asyncio.tasks` is not imported; otherwise every live
/// task up to `limits.max_tasks`. About ten remote reads per task plus two per coroutine of
/// its chain once the caches are warm.
pub fn read_tasks<I: InterpreterState, P: ProcessMemory>(
    process: &P,
    version: &Version,
    modules_ptr: usize,
    limits: TaskLimits,
    asgi: &mut AsgiCache,
    code: &mut CodeCache,
    tasks: &mut TaskCache,
) -> Result<Option<TaskSnapshot>, Error> {
    let head = std::mem::size_of::<I::Object>();
    let Some(layout) = Layout::of(version, head) else {
        return Ok(None);
    };
    let modules = word(process, modules_ptr)?;
    asgi.trim();
    let mut t = TaskReader::<I, P> {
        r: Reader::new(process, version, asgi),
        code,
        codes: HashMap::new(),
        tasks,
        layout,
        limits,
    };
    let registries = t.registries(modules);
    if registries.is_empty() {
        return Ok(None);
    }
    let mut snap = TaskSnapshot::default();
    for addr in t.all_tasks(&registries, &mut snap) {
        match t.task(addr) {
            Ok(Some(task)) => snap.tasks.push(task),
            Ok(None) => {}
            Err(_) => snap.unreadable += 1,
        }
    }
    Ok(Some(snap))
}
