//! The asyncio tasks of a recording (format version 6): where requests wait, and the task
//! tree `dump` prints.
//!
//! Where requests wait: the task snapshots grouped by route and by the place each suspended
//! task waits at.
//!
//! A task's place is named from its await chain (innermost first) by the catalog's await
//! entries ([`Catalog::match_await`]: a connection pool, AnyIO's thread limiter, a lock or
//! semaphore, the server's `receive()`, an upstream's answer, a sleep...), with the innermost
//! application frame as the line that awaits it. A task serving an HTTP request carries its
//! route (read from the ASGI scope in its chain); other tasks are the process's own.
//!
//! A place is a finding when requests pile up on a limited resource while the loop idles
//! (requests queued, not slowed by the loop): a place of a queue kind (pool, limiter, lock)
//! where, in the snapshots of a process, on average at least [`MIN_MEAN_QUEUED`] tasks wait, at
//! most at least [`MIN_MAX_QUEUED`], in at least half the snapshots (at least
//! [`MIN_SNAPSHOTS`] of them), while the loops were busy less than [`MAX_LOOP_BUSY_PCT`] of
//! the time. A request seen waiting in `receive()` for a body for [`RECEIVE_HANG_MS`] or longer
//! is a finding too. Waiting for an upstream, a sleep or a worker thread is where the time
//! goes, never a finding. Pure: no I/O.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::analysis::catalog::{AwaitKind, Catalog};
use crate::analysis::diagnose::{fix_of, CallSite, Fix};
use crate::analysis::stats::{percentile, round1, sort_f64};
use crate::recording::frames::{self, Origin};
use crate::recording::{Recording, TaskRecord, TaskState};

/// Least mean number of tasks waiting at one queue place, per snapshot of a process.
pub const MIN_MEAN_QUEUED: f64 = 2.0;
/// Least number of tasks waiting there in one snapshot.
pub const MIN_MAX_QUEUED: usize = 3;
/// Least share of a process's snapshots with a task waiting there.
pub const MIN_PRESENT_SHARE: f64 = 0.5;
/// Least number of snapshots of a process.
pub const MIN_SNAPSHOTS: usize = 3;
/// Above this loop busy share (percent) a pile-up may come from a loop too busy to run the
/// tasks: no queue finding is drawn.
pub const MAX_LOOP_BUSY_PCT: f64 = 50.0;
/// A request seen waiting this long for its body (ms) is a finding.
pub const RECEIVE_HANG_MS: f64 = 2000.0;
/// Most places listed.
const MAX_PLACES: usize = 20;
/// Most frames of a place's representative chain.
const MAX_STACK: usize = 16;

/// One place where tasks waited.
#[derive(Debug, Clone, Serialize)]
pub struct WaitPlace {
    /// The route the waiting tasks served; `None` for tasks serving no request.
    pub route: Option<String>,
    /// The kind of place.
    pub kind: AwaitKind,
    /// The catalog entry that named it, when one did.
    pub category: Option<String>,
    /// The function the chain waits in: the catalog-matched library function (`qualname`
    /// in `module`), else the innermost frame's.
    pub resource: String,
    /// The innermost application frame of the chain: the line that awaits.
    pub site: Option<CallSite>,
    /// A representative chain, innermost first, as `function (file:line)`.
    pub stack: Vec<String>,
    /// Processes where it was seen.
    pub pids: Vec<u32>,
    /// Snapshots with at least one task waiting here.
    pub snapshots: usize,
    /// Tasks waiting here per snapshot, on average (summed over processes).
    pub mean_tasks: f64,
    /// Most tasks waiting here in one snapshot.
    pub max_tasks: usize,
    /// The longest time one task was seen waiting here, ms (from its first to its last
    /// snapshot here: a lower bound).
    pub max_wait_ms: f64,
    /// Median of those times over the tasks seen here, ms.
    pub p50_wait_ms: f64,
}

/// A pile-up on one awaited resource.
#[derive(Debug, Clone, Serialize)]
pub struct WaitFinding {
    /// Catalog id.
    pub category: String,
    /// Catalog title.
    pub title: String,
    /// The place.
    pub place: WaitPlace,
    /// Requests in flight per snapshot, on average, in the processes where it was seen.
    pub mean_in_flight: f64,
    /// The fix.
    pub fix: Fix,
}

/// Where the requests of a recording waited.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RequestWaits {
    /// Task snapshots read.
    pub snapshots: usize,
    /// Median time between two snapshots of a process, ms.
    pub interval_ms: f64,
    /// Requests in flight (suspended tasks with a route) per snapshot, on average (summed
    /// over processes).
    pub mean_in_flight: f64,
    /// Most requests in flight in one snapshot of one process.
    pub max_in_flight: usize,
    /// Places, most waiting first (at most 20).
    pub places: Vec<WaitPlace>,
    /// Pile-ups, most waiting first.
    pub findings: Vec<WaitFinding>,
    /// Task-registry entries that could not be read, over all snapshots.
    pub unreadable: u64,
}

/// What names a place.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct PlaceKey {
    route: Option<String>,
    kind: AwaitKind,
    category: Option<String>,
    resource: String,
    /// (file string id, line, function string id).
    site: Option<(u32, i32, u32)>,
}

#[derive(Default)]
struct PlaceAcc {
    stack: Vec<String>,
    pids: Vec<u32>,
    snapshots: usize,
    /// Per process: tasks seen here (summed over snapshots), snapshots with one here.
    per_pid: BTreeMap<u32, (usize, usize)>,
    max_tasks: usize,
    /// (first, last) snapshot time of each task seen here, µs.
    spans: HashMap<(u32, u64, u32), (u64, u64)>,
}

/// Per task snapshot, in recording order: (pid, µs since start, how many suspended tasks wait
/// on AnyIO's thread limiter, [`AwaitKind::Limiter`]). Every token of that limiter is taken
/// while any task waits on it: [`crate::analysis::pools`] reads this as saturation evidence
/// that does not depend on catching every worker busy at one sample. Chains are matched
/// once per stack id (tasks of many snapshots share them).
pub fn limiter_queued(rec: &Recording, catalog: &Catalog) -> Vec<(u32, u64, usize)> {
    let mut on_limiter: HashMap<u32, bool> = HashMap::new();
    rec.task_snapshots
        .iter()
        .map(|snap| {
            let n = snap
                .tasks
                .iter()
                .filter(|t| t.state == TaskState::Suspended)
                .filter(|t| {
                    *on_limiter.entry(t.stack).or_insert_with(|| {
                        let modules = chain_modules(rec, t.stack);
                        await_entry(catalog, &modules)
                            .and_then(|(e, _)| e.awaits)
                            .is_some_and(|a| a.kind == AwaitKind::Limiter)
                    })
                })
                .count();
            (snap.pid, snap.t_us, n)
        })
        .collect()
}

/// (module, function) of each frame of a task's await chain (innermost first).
fn chain_modules(rec: &Recording, stack: u32) -> Vec<(String, &str)> {
    rec.stacks[stack as usize]
        .iter()
        .map(|f| rec.frame(*f))
        .map(|f| (frames::module(rec.str(f.file)), rec.str(f.name)))
        .collect()
}

/// The catalog's await entry for a chain, with the index of the frame it matched.
fn await_entry<'c>(
    catalog: &'c Catalog,
    modules: &[(String, &str)],
) -> Option<(&'c crate::analysis::catalog::Entry, usize)> {
    catalog.match_await(modules.iter().map(|(m, f)| (m.as_str(), *f)))
}

/// The place of one task, with its representative chain.
fn place_of(rec: &Recording, catalog: &Catalog, task: &TaskRecord) -> (PlaceKey, Vec<String>) {
    let frames: Vec<_> = rec.stacks[task.stack as usize]
        .iter()
        .map(|f| rec.frame(*f))
        .collect();
    let modules = chain_modules(rec, task.stack);
    let matched = await_entry(catalog, &modules);
    let (kind, category, resource) = match matched {
        Some((e, i)) => (
            e.awaits.map(|a| a.kind).unwrap_or(AwaitKind::Other),
            Some(e.id.clone()),
            format!("{} in {}", modules[i].1, modules[i].0),
        ),
        None => (
            AwaitKind::Other,
            None,
            match (frames.first(), task.waits_for) {
                (Some(f), _) => rec.str(f.name).to_owned(),
                (None, Some(w)) => rec.str(w).to_owned(),
                (None, None) => "?".to_owned(),
            },
        ),
    };
    let site = frames
        .iter()
        .find(|f| frames::origin(rec.str(f.file)) == Origin::App)
        .map(|f| (f.file, f.line, f.name));
    let stack = frames
        .iter()
        .take(MAX_STACK)
        .map(|f| {
            format!(
                "{} ({}:{})",
                rec.str(f.name),
                frames::short_file(rec.str(f.file)),
                f.line
            )
        })
        .collect();
    let key = PlaceKey {
        route: task.route.map(|r| rec.str(r).to_owned()),
        kind,
        category,
        resource,
        site,
    };
    (key, stack)
}

/// Where the requests of `rec` waited; `loop_busy_pct` is the loops' busy share of the window
/// (queue findings need an idle loop). Empty for recordings without task snapshots.
pub fn request_waits(rec: &Recording, catalog: &Catalog, loop_busy_pct: f64) -> RequestWaits {
    let mut out = RequestWaits {
        snapshots: rec.task_snapshots.len(),
        ..RequestWaits::default()
    };
    if rec.task_snapshots.is_empty() {
        return out;
    }
    let mut by_pid: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, s) in rec.task_snapshots.iter().enumerate() {
        by_pid.entry(s.pid).or_default().push(i);
        out.unreadable += s.unreadable as u64;
    }
    let mut places: BTreeMap<PlaceKey, PlaceAcc> = BTreeMap::new();
    let mut intervals = Vec::new();
    let mut in_flight_mean = 0.0;
    for (pid, idx) in &by_pid {
        let mut in_flight_total = 0usize;
        for (k, i) in idx.iter().enumerate() {
            let snap = &rec.task_snapshots[*i];
            if k > 0 {
                let prev = rec.task_snapshots[idx[k - 1]].t_us;
                intervals.push(snap.t_us.saturating_sub(prev) as f64 / 1000.0);
            }
            let mut here: HashMap<PlaceKey, usize> = HashMap::new();
            let mut in_flight = 0;
            for task in snap
                .tasks
                .iter()
                .filter(|t| t.state == TaskState::Suspended)
            {
                // The lifespan task lives as long as the server: not a request.
                in_flight += usize::from(task.route.is_some_and(|r| rec.str(r) != "lifespan"));
                let (key, stack) = place_of(rec, catalog, task);
                let acc = places.entry(key.clone()).or_default();
                if acc.stack.is_empty() {
                    acc.stack = stack;
                }
                let span = acc
                    .spans
                    .entry((*pid, task.id, task.name))
                    .or_insert((snap.t_us, snap.t_us));
                span.0 = span.0.min(snap.t_us);
                span.1 = span.1.max(snap.t_us);
                *here.entry(key).or_default() += 1;
            }
            for (key, n) in here {
                let acc = places.get_mut(&key).expect("entered above");
                acc.snapshots += 1;
                let per = acc.per_pid.entry(*pid).or_default();
                per.0 += n;
                per.1 += 1;
                acc.max_tasks = acc.max_tasks.max(n);
                if !acc.pids.contains(pid) {
                    acc.pids.push(*pid);
                }
            }
            in_flight_total += in_flight;
            out.max_in_flight = out.max_in_flight.max(in_flight);
        }
        in_flight_mean += in_flight_total as f64 / idx.len() as f64;
    }
    out.mean_in_flight = round1(in_flight_mean);
    sort_f64(&mut intervals);
    out.interval_ms = round1(percentile(&intervals, 0.5));

    let mut list: Vec<(WaitPlace, bool)> = places
        .into_iter()
        .map(|(key, acc)| finish_place(rec, key, acc, &by_pid))
        .collect();
    list.sort_by(|a, b| {
        b.0.mean_tasks
            .total_cmp(&a.0.mean_tasks)
            .then(b.0.max_wait_ms.total_cmp(&a.0.max_wait_ms))
    });
    for (place, sustained) in &list {
        let Some(entry) = place.category.as_deref().and_then(|c| catalog.get(c)) else {
            continue;
        };
        let queued = place.kind.is_queue()
            && place.route.as_deref().is_some_and(|r| r != "lifespan")
            && *sustained
            && place.mean_tasks >= MIN_MEAN_QUEUED
            && place.max_tasks >= MIN_MAX_QUEUED
            && loop_busy_pct < MAX_LOOP_BUSY_PCT;
        let hung = place.kind == AwaitKind::Receive
            && place.route.is_some()
            && place.max_wait_ms >= RECEIVE_HANG_MS;
        if queued || hung {
            out.findings.push(WaitFinding {
                category: entry.id.clone(),
                title: entry.title.clone(),
                place: place.clone(),
                mean_in_flight: out.mean_in_flight,
                fix: fix_of(entry),
            });
        }
    }
    out.places = list.into_iter().take(MAX_PLACES).map(|(p, _)| p).collect();
    out
}

/// A place's figures, and whether it was sustained (seen in enough snapshots of one process).
fn finish_place(
    rec: &Recording,
    key: PlaceKey,
    acc: PlaceAcc,
    by_pid: &BTreeMap<u32, Vec<usize>>,
) -> (WaitPlace, bool) {
    let mut mean = 0.0;
    let mut sustained = false;
    for (pid, (n, present)) in &acc.per_pid {
        let snaps = by_pid.get(pid).map_or(1, Vec::len).max(1);
        mean += *n as f64 / snaps as f64;
        let present = *present as f64 / snaps as f64;
        sustained |= snaps >= MIN_SNAPSHOTS && present >= MIN_PRESENT_SHARE;
    }
    let mut waits: Vec<f64> = acc
        .spans
        .values()
        .map(|(a, b)| b.saturating_sub(*a) as f64 / 1000.0)
        .collect();
    sort_f64(&mut waits);
    let place = WaitPlace {
        route: key.route,
        kind: key.kind,
        category: key.category,
        resource: key.resource,
        site: key.site.map(|(file, line, function)| CallSite {
            file: rec.str(file).to_owned(),
            line,
            function: rec.str(function).to_owned(),
            source: rec.sources.get(&(file, line)).cloned(),
        }),
        stack: acc.stack,
        pids: acc.pids,
        snapshots: acc.snapshots,
        mean_tasks: round1(mean),
        max_tasks: acc.max_tasks,
        max_wait_ms: round1(waits.last().copied().unwrap_or(0.0)),
        p50_wait_ms: round1(percentile(&waits, 0.5)),
    };
    (place, sustained)
}

/// One task of a task tree.
#[derive(Debug, Clone, Serialize)]
pub struct TaskNode {
    /// The task's name.
    pub name: String,
    /// Where its coroutine is.
    pub state: TaskState,
    /// The route it serves, when it serves a request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The kind of place it waits at (for a suspended task).
    pub kind: AwaitKind,
    /// The catalog's title of that place, when an entry named it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
    /// The function it waits in (see [`WaitPlace::resource`]).
    pub resource: String,
    /// The type of the future it waits for, when it waits for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waits_for: Option<String>,
    /// Its await chain, innermost first, as `function (file:line)`.
    pub stack: Vec<String>,
    /// Index in `stack` of the innermost application frame, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_frame: Option<usize>,
    /// The tasks it awaits (an awaited task, a `gather`'s children).
    pub children: Vec<TaskNode>,
}

/// The tasks of one event loop at one instant, as a tree: a task is under the task that
/// awaits it; the rest are roots.
#[derive(Debug, Clone, Serialize)]
pub struct TaskTree {
    /// Process id.
    pub pid: u32,
    /// The loop's address (tells the loops of one process apart).
    pub loop_id: u64,
    /// When the snapshot was read, µs since the start of the recording.
    pub t_us: u64,
    /// Tasks in the tree.
    pub tasks: usize,
    /// Entries of the task registry that could not be read.
    pub unreadable: u32,
    /// The roots, in the order the registry held them.
    pub roots: Vec<TaskNode>,
}

/// The task trees of the last task snapshot of each process (one per event loop).
pub fn task_trees(rec: &Recording, catalog: &Catalog) -> Vec<TaskTree> {
    let mut last: BTreeMap<u32, usize> = BTreeMap::new();
    for (i, s) in rec.task_snapshots.iter().enumerate() {
        last.insert(s.pid, i);
    }
    let mut out = Vec::new();
    for i in last.into_values() {
        let snap = &rec.task_snapshots[i];
        let mut loops: Vec<u64> = Vec::new();
        for t in &snap.tasks {
            if !loops.contains(&t.loop_id) {
                loops.push(t.loop_id);
            }
        }
        for loop_id in loops {
            let tasks: Vec<&TaskRecord> =
                snap.tasks.iter().filter(|t| t.loop_id == loop_id).collect();
            let awaited: std::collections::HashSet<u64> = tasks
                .iter()
                .flat_map(|t| t.awaits.iter().copied())
                .collect();
            let by_id: HashMap<u64, &TaskRecord> = tasks.iter().map(|t| (t.id, *t)).collect();
            let mut placed = std::collections::HashSet::new();
            let mut roots: Vec<TaskNode> = tasks
                .iter()
                .filter(|t| !awaited.contains(&t.id))
                .map(|t| node(rec, catalog, t, &by_id, &mut placed, 0))
                .collect();
            // Tasks only reachable through a cycle of awaits (never in asyncio, but a torn
            // read can make one) are listed as roots, once.
            for t in &tasks {
                if !placed.contains(&t.id) {
                    roots.push(node(rec, catalog, t, &by_id, &mut placed, 0));
                }
            }
            out.push(TaskTree {
                pid: snap.pid,
                loop_id,
                t_us: snap.t_us,
                tasks: tasks.len(),
                unreadable: snap.unreadable,
                roots,
            });
        }
    }
    out
}

/// One task and, recursively, the tasks it awaits (each task placed once).
/// Deepest nesting of a task tree: tasks awaited further down are listed as roots.
const MAX_TREE_DEPTH: usize = 64;

fn node(
    rec: &Recording,
    catalog: &Catalog,
    t: &TaskRecord,
    by_id: &HashMap<u64, &TaskRecord>,
    placed: &mut std::collections::HashSet<u64>,
    depth: usize,
) -> TaskNode {
    placed.insert(t.id);
    let (key, stack) = place_of(rec, catalog, t);
    let app_frame = rec.stacks[t.stack as usize]
        .iter()
        .take(MAX_STACK)
        .position(|f| frames::origin(rec.str(rec.frame(*f).file)) == Origin::App);
    let mut children = Vec::new();
    for c in &t.awaits {
        if let Some(child) = by_id.get(c) {
            if !placed.contains(c) && depth + 1 < MAX_TREE_DEPTH {
                children.push(node(rec, catalog, child, by_id, placed, depth + 1));
            }
        }
    }
    TaskNode {
        name: rec.str(t.name).to_owned(),
        state: t.state,
        route: key.route,
        kind: key.kind,
        place: key
            .category
            .as_deref()
            .and_then(|c| catalog.get(c))
            .map(|e| e.title.clone()),
        resource: key.resource,
        waits_for: t.waits_for.map(|w| rec.str(w).to_owned()),
        stack,
        app_frame,
        children,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::testing::{end, frame, header, task, RecordingBuilder};
    use crate::recording::RawFrame;

    const SP: &str = "/srv/venv/lib/python3.11/site-packages";
    const STD: &str = "/usr/lib/python3.11";

    fn lib(name: &str, path: &str, line: i32) -> RawFrame {
        frame(name, &format!("{SP}/{path}"), line)
    }

    fn pool_waiter() -> Vec<RawFrame> {
        vec![
            frame("Event.wait", &format!("{STD}/asyncio/locks.py"), 213),
            lib(
                "AsyncPoolRequest.wait_for_connection",
                "httpcore/_async/connection_pool.py",
                35,
            ),
            lib(
                "AsyncConnectionPool.handle_async_request",
                "httpcore/_async/connection_pool.py",
                232,
            ),
            lib("AsyncClient.get", "httpx/_client.py", 1768),
            frame("handler", "/srv/app/app.py", 12),
            lib("run_endpoint_function", "fastapi/routing.py", 381),
        ]
    }

    fn in_upstream() -> Vec<RawFrame> {
        vec![
            lib(
                "AsyncHTTP11Connection._receive_event",
                "httpcore/_async/http11.py",
                217,
            ),
            lib(
                "AsyncConnectionPool.handle_async_request",
                "httpcore/_async/connection_pool.py",
                256,
            ),
            lib("AsyncClient.get", "httpx/_client.py", 1768),
            frame("handler", "/srv/app/app.py", 12),
        ]
    }

    /// `snapshots` task snapshots 250 ms apart of one process: `waiting` tasks with the
    /// chain `waiter` (route `route`), and two in the upstream.
    fn recording(
        snapshots: u64,
        waiting: u64,
        waiter: Vec<RawFrame>,
        route: Option<&str>,
    ) -> Recording {
        let mut b = RecordingBuilder::new(header(7, 100.0));
        for s in 0..snapshots {
            let mut tasks: Vec<_> = (0..waiting)
                .map(|i| task(100 + i, &format!("Task-{i}"), route, waiter.clone()))
                .collect();
            tasks.push(task(1, "Task-a", route, in_upstream()));
            tasks.push(task(2, "Task-b", route, in_upstream()));
            b.tasks(7, s * 250_000, &tasks);
        }
        b.finish(end(snapshots * 250_000, 0))
    }

    #[test]
    fn tasks_queued_on_the_thread_limiter_are_counted_per_snapshot() {
        let limiter = vec![
            frame("Event.wait", &format!("{STD}/asyncio/locks.py"), 213),
            lib(
                "CapacityLimiter.acquire_on_behalf_of",
                "anyio/_backends/_asyncio.py",
                2271,
            ),
            lib(
                "AsyncIOBackend.run_sync_in_worker_thread",
                "anyio/_backends/_asyncio.py",
                2743,
            ),
            lib("run_in_threadpool", "starlette/concurrency.py", 34),
        ];
        let rec = recording(3, 5, limiter, Some("GET /x"));
        let q = limiter_queued(&rec, &Catalog::builtin());
        assert_eq!(q, vec![(7, 0, 5), (7, 250_000, 5), (7, 500_000, 5)]);
        // Waiting on an HTTP pool is not the thread limiter.
        let rec = recording(2, 5, pool_waiter(), Some("GET /x"));
        assert_eq!(
            limiter_queued(&rec, &Catalog::builtin()),
            vec![(7, 0, 0), (7, 250_000, 0)]
        );
    }

    #[test]
    fn requests_piled_on_a_pool_of_an_idle_loop_are_a_finding() {
        let rec = recording(5, 6, pool_waiter(), Some("GET /x"));
        let r = request_waits(&rec, &Catalog::builtin(), 2.0);
        assert_eq!(r.snapshots, 5);
        assert_eq!(r.interval_ms, 250.0);
        assert_eq!(r.mean_in_flight, 8.0);
        assert_eq!(r.findings.len(), 1);
        let f = &r.findings[0];
        assert_eq!(f.category, "http-pool-wait");
        assert_eq!(f.place.kind, AwaitKind::Pool);
        assert_eq!(f.place.route.as_deref(), Some("GET /x"));
        assert_eq!(
            f.place.resource,
            "AsyncPoolRequest.wait_for_connection in httpcore._async.connection_pool"
        );
        let site = f.place.site.as_ref().unwrap();
        assert_eq!((site.function.as_str(), site.line), ("handler", 12));
        assert_eq!((f.place.mean_tasks, f.place.max_tasks), (6.0, 6));
        // Seen from the first snapshot to the fifth: at least 1 s.
        assert_eq!(f.place.max_wait_ms, 1000.0);
        // The two holding the connections wait for the upstream: listed, not a finding.
        let up = r
            .places
            .iter()
            .find(|p| p.kind == AwaitKind::Upstream)
            .unwrap();
        assert_eq!(up.mean_tasks, 2.0);
    }

    #[test]
    fn controls_spare_capacity_a_busy_loop_background_tasks_and_short_recordings() {
        let c = Catalog::builtin();
        // One waiter at a time: a pool with capacity to spare.
        assert!(
            request_waits(&recording(5, 1, pool_waiter(), Some("GET /x")), &c, 2.0)
                .findings
                .is_empty()
        );
        // A busy loop may be what keeps the tasks waiting.
        assert!(
            request_waits(&recording(5, 6, pool_waiter(), Some("GET /x")), &c, 70.0)
                .findings
                .is_empty()
        );
        // Tasks serving no request (a worker pool of background jobs).
        assert!(
            request_waits(&recording(5, 6, pool_waiter(), None), &c, 2.0)
                .findings
                .is_empty()
        );
        // Two snapshots are too few to call it sustained.
        assert!(
            request_waits(&recording(2, 6, pool_waiter(), Some("GET /x")), &c, 2.0)
                .findings
                .is_empty()
        );
        // Everyone waiting for the upstream: where time goes.
        let r = request_waits(&recording(5, 6, in_upstream(), Some("GET /x")), &c, 2.0);
        assert!(r.findings.is_empty());
        assert_eq!(r.places[0].kind, AwaitKind::Upstream);
        assert_eq!(r.places[0].mean_tasks, 8.0);
    }

    #[test]
    fn a_specific_resource_wins_over_the_lock_it_waits_on() {
        let chain = vec![
            frame("Queue.get", &format!("{STD}/asyncio/queues.py"), 158),
            frame("Lock.acquire", &format!("{STD}/asyncio/locks.py"), 114),
            lib("Pool._acquire_impl", "asyncpg/pool.py", 865),
            lib("Pool._acquire", "asyncpg/pool.py", 880),
            frame("handler", "/srv/app/app.py", 30),
        ];
        let rec = recording(4, 5, chain, Some("GET /db"));
        let r = request_waits(&rec, &Catalog::builtin(), 0.0);
        assert_eq!(r.findings[0].category, "db-pool-wait");
        // Without the asyncpg frames the lock itself is the place.
        let bare = vec![
            frame("Semaphore.acquire", &format!("{STD}/asyncio/locks.py"), 387),
            frame("handler", "/srv/app/app.py", 31),
        ];
        let r = request_waits(
            &recording(4, 5, bare, Some("GET /db")),
            &Catalog::builtin(),
            0.0,
        );
        assert_eq!(r.findings[0].category, "lock-wait");
    }

    #[test]
    fn a_body_read_that_waits_for_seconds_is_a_finding_a_disconnect_listener_is_not() {
        let receive = lib(
            "RequestResponseCycle.receive",
            "uvicorn/protocols/http/httptools_impl.py",
            580,
        );
        let reading = vec![
            frame("Event.wait", &format!("{STD}/asyncio/locks.py"), 213),
            receive.clone(),
            lib("Request.stream", "starlette/requests.py", 240),
            lib("Request.body", "starlette/requests.py", 258),
            frame("upload", "/srv/app/app.py", 50),
        ];
        // 13 snapshots 250 ms apart: one request seen waiting for 3 s.
        let r = request_waits(
            &recording(13, 1, reading, Some("POST /upload")),
            &Catalog::builtin(),
            1.0,
        );
        assert_eq!(r.findings.len(), 1);
        assert_eq!(r.findings[0].category, "receive-wait");
        assert_eq!(r.findings[0].place.max_wait_ms, 3000.0);
        let listening = vec![
            receive,
            lib(
                "StreamingResponse.listen_for_disconnect",
                "starlette/responses.py",
                250,
            ),
        ];
        let r = request_waits(
            &recording(13, 1, listening, Some("GET /stream")),
            &Catalog::builtin(),
            1.0,
        );
        assert!(r.findings.is_empty());
        assert!(r.places.iter().any(|p| p.kind == AwaitKind::Disconnect));
    }

    #[test]
    fn task_trees_nest_awaited_tasks_once_even_through_a_cycle() {
        let leaf = || vec![frame("sleep", &format!("{STD}/asyncio/tasks.py"), 649)];
        let mut parent = task(1, "parent", None, vec![frame("main", "/srv/app/m.py", 3)]);
        parent.awaits = vec![2, 3];
        let mut a = task(2, "a", None, leaf());
        a.awaits = vec![4];
        let b = task(3, "b", None, leaf());
        // 4 and 5 await each other (a torn read): each is placed once.
        let mut c = task(4, "c", None, leaf());
        c.awaits = vec![5];
        let mut d = task(5, "d", None, leaf());
        d.awaits = vec![4];
        let mut rb = RecordingBuilder::new(header(7, 100.0));
        rb.tasks(7, 0, &[parent, a, b, c, d]);
        let rec = rb.finish(end(1000, 0));
        let trees = task_trees(&rec, &Catalog::builtin());
        assert_eq!(trees.len(), 1);
        let t = &trees[0];
        assert_eq!(t.tasks, 5);
        assert_eq!(t.roots.len(), 1);
        let root = &t.roots[0];
        assert_eq!(root.name, "parent");
        let names: Vec<_> = root.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(root.children[0].children[0].name, "c");
        assert_eq!(root.children[0].children[0].children[0].name, "d");
        assert!(root.children[0].children[0].children[0].children.is_empty());
        assert_eq!(root.children[1].kind, AwaitKind::Sleep);
    }

    #[test]
    fn a_recording_without_tasks_has_no_request_waits() {
        let rec = crate::recording::testing::tiny_recording();
        let r = request_waits(&rec, &Catalog::builtin(), 0.0);
        assert_eq!(r.snapshots, 0);
        assert!(r.places.is_empty() && r.findings.is_empty());
        assert!(task_trees(&rec, &Catalog::builtin()).is_empty());
    }
}
