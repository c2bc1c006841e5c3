//! The catalog of blocking calls and their fixes: data, kept in `catalog.json`, extensible.
//!
//! Each entry says how to recognise a kind of blocking (frame module + function patterns, source
//! line regexes, the thread activity), why it blocks, the fix, a before/after snippet and links.
//! The built-in catalog is embedded in the binary; users add entries for in-house wrappers with
//! `--catalog FILE` (same JSON shape), which take precedence over built-in ones (an entry with
//! a built-in id replaces it). Matching is in [`Catalog::classify`]; see `docs/detection.md`.

use super::loops::Activity;
use crate::recording::frames;
use serde::{Deserialize, Serialize};

/// The built-in catalog (JSON).
pub const BUILTIN: &str = include_str!("catalog.json");

/// Errors loading a catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The JSON is invalid.
    #[error("catalog {path} is not valid: {why}. See docs/detection.md for the entry format.")]
    Invalid {
        /// Path.
        path: String,
        /// Error.
        why: String,
    },
}

/// A frame pattern: module prefix and optional function glob.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FramePattern {
    /// Dotted module prefix (`requests` matches `requests.api`).
    pub module: String,
    /// Function qualname glob (`Popen.*`); any function when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
}

/// How an entry is recognised.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Match {
    /// Library frames between the application frame and the leaf.
    #[serde(default)]
    pub frames: Vec<FramePattern>,
    /// Modules that never match even when a frame pattern does (`redis.asyncio`).
    #[serde(default)]
    pub exclude_modules: Vec<String>,
    /// Regexes over the source line of the application frame (for C calls with no frame).
    #[serde(default)]
    pub source: Vec<String>,
    /// Activities (`on-cpu`, `native`, `waiting`, `gil-wait`) a source match requires.
    #[serde(default)]
    pub activities: Vec<String>,
    /// Wait reasons (`sleep`, `socket`, `lock`, `disk`, `child-process`, `other`) a source
    /// match requires when the activity is `waiting`.
    #[serde(default)]
    pub wait_reasons: Vec<String>,
}

/// One catalog entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Stable id (a public contract: JSON summary, docs).
    pub id: String,
    /// One-line title.
    pub title: String,
    /// Recognition rules.
    #[serde(rename = "match", default)]
    pub matcher: Match,
    /// Why it blocks the loop.
    pub why: String,
    /// The fix in one sentence.
    pub fix: String,
    /// Python before the fix.
    #[serde(default)]
    pub before: String,
    /// Python after the fix.
    #[serde(default)]
    pub after: String,
    /// Documentation links.
    #[serde(default)]
    pub links: Vec<String>,
    /// For entries that match framework or library code running on the loop on the
    /// application's behalf (response serialization, a metrics or telemetry hook): the
    /// phase's name. A callback with no application frame whose stack matches such an entry
    /// is keyed by the entry and the endpoint, so one long run of library code is one block
    /// (see docs/detection.md, "Library phases").
    #[serde(default)]
    pub phase: Option<String>,
    /// Activity keys this entry is the fallback for when nothing matched (`on-cpu`,
    /// `native`, `gil-wait`, `waiting:<reason>`, or `*`).
    #[serde(default)]
    pub fallback_for: Vec<String>,
    /// For entries naming a place where a suspended asyncio task waits (a pool, a lock, an
    /// upstream...): what kind of place. Such entries match await chains only
    /// ([`Catalog::match_await`]), never a blocked loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaits: Option<AwaitSpec>,
}

/// What kind of place an await entry names (`awaits.kind` in the catalog).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AwaitKind {
    /// A connection pool's queue (HTTP client, database, cache).
    Pool,
    /// AnyIO's worker-thread limiter.
    Limiter,
    /// A lock, semaphore, condition or full bounded queue.
    Lock,
    /// The server's `receive()`, for a request body.
    Receive,
    /// A streaming response's listener for the client's disconnect (normal).
    Disconnect,
    /// An upstream's answer (time spent, not a defect).
    Upstream,
    /// `asyncio.sleep`.
    Sleep,
    /// A worker thread running the request's blocking part.
    WorkerThread,
    /// Anything the catalog does not name.
    Other,
}

impl AwaitKind {
    /// The catalog and JSON spelling (`worker-thread`).
    pub fn as_str(self) -> &'static str {
        match self {
            AwaitKind::Pool => "pool",
            AwaitKind::Limiter => "limiter",
            AwaitKind::Lock => "lock",
            AwaitKind::Receive => "receive",
            AwaitKind::Disconnect => "disconnect",
            AwaitKind::Upstream => "upstream",
            AwaitKind::Sleep => "sleep",
            AwaitKind::WorkerThread => "worker-thread",
            AwaitKind::Other => "other",
        }
    }

    /// Whether requests waiting here are queued for a limited resource (a pile-up here is
    /// a finding), rather than spending time somewhere (an upstream, a sleep, a thread).
    pub fn is_queue(self) -> bool {
        matches!(self, AwaitKind::Pool | AwaitKind::Limiter | AwaitKind::Lock)
    }
}

/// The `awaits` of an await entry.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct AwaitSpec {
    /// The kind of place.
    pub kind: AwaitKind,
    /// A general primitive (an asyncio lock, a queue) that libraries use inside their own
    /// resources: it names the place only when no specific entry matches the chain.
    #[serde(default)]
    pub generic: bool,
}

#[derive(Debug, Deserialize)]
struct File {
    #[serde(default)]
    entries: Vec<Entry>,
}

struct Compiled {
    entry: Entry,
    source: Vec<regex::Regex>,
}

/// A loaded catalog: built-in entries plus user entries.
pub struct Catalog {
    entries: Vec<Compiled>,
}

/// What the classifier knows about a blocked call site.
#[derive(Debug, Clone)]
pub struct SiteFacts<'a> {
    /// Library frames from the application frame's callee to the leaf: (module, qualname).
    pub callees: Vec<(String, &'a str)>,
    /// Source line of the application frame, if known.
    pub source: Option<&'a str>,
    /// Majority activity (with its wait reason when waiting).
    pub activity: Activity,
}

/// How an entry was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchedBy {
    /// A library frame matched (index into `callees`).
    Frame(usize),
    /// The application frame's source line matched.
    Source,
    /// Nothing matched; the entry is the fallback for the activity.
    Fallback,
}

/// [`MatchedBy`] without the frame index: what summary.json reports as `matched_by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchKind {
    /// A library frame matched.
    Frame,
    /// The source line matched.
    Source,
    /// The activity's fallback entry.
    Fallback,
}

impl MatchedBy {
    /// The match without the frame index.
    pub fn kind(self) -> MatchKind {
        match self {
            MatchedBy::Frame(_) => MatchKind::Frame,
            MatchedBy::Source => MatchKind::Source,
            MatchedBy::Fallback => MatchKind::Fallback,
        }
    }
}

fn compile(entries: Vec<Entry>, path: &str) -> Result<Vec<Compiled>, CatalogError> {
    entries
        .into_iter()
        .map(|entry| {
            let source = entry
                .matcher
                .source
                .iter()
                .map(|r| {
                    regex::Regex::new(r).map_err(|e| CatalogError::Invalid {
                        path: path.to_owned(),
                        why: format!("entry {:?}: bad source regex {r:?}: {e}", entry.id),
                    })
                })
                .collect::<Result<_, _>>()?;
            Ok(Compiled { entry, source })
        })
        .collect()
}

fn parse(text: &str, path: &str) -> Result<Vec<Entry>, CatalogError> {
    let file: File = serde_json::from_str(text).map_err(|e| CatalogError::Invalid {
        path: path.to_owned(),
        why: e.to_string(),
    })?;
    for e in &file.entries {
        if e.id.is_empty() || e.title.is_empty() || e.fix.is_empty() {
            return Err(CatalogError::Invalid {
                path: path.to_owned(),
                why: format!("entry {:?} needs an id, a title and a fix", e.id),
            });
        }
    }
    Ok(file.entries)
}

impl Catalog {
    /// The built-in catalog.
    pub fn builtin() -> Catalog {
        let entries = parse(BUILTIN, "built-in").expect("built-in catalog parses");
        Catalog {
            entries: compile(entries, "built-in").expect("built-in catalog compiles"),
        }
    }

    /// The built-in catalog with user catalogs (JSON texts with their paths) in front.
    pub fn with_user(files: &[(String, String)]) -> Result<Catalog, CatalogError> {
        let mut user = Vec::new();
        for (path, text) in files {
            user.extend(compile(parse(text, path)?, path)?);
        }
        let mut cat = Catalog::builtin();
        cat.entries
            .retain(|b| !user.iter().any(|u| u.entry.id == b.entry.id));
        user.extend(cat.entries);
        Ok(Catalog { entries: user })
    }

    /// Every entry, in matching order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().map(|c| &c.entry)
    }

    /// The entry with this id.
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries().find(|e| e.id == id)
    }

    /// The first entry whose frame patterns match a library frame (module, qualname); await
    /// entries are left out.
    pub fn match_frame(&self, module: &str, function: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .map(|c| &c.entry)
            .find(|e| e.awaits.is_none() && Self::frame_matches(e, module, function))
    }

    /// Names the place an await chain waits at: `(entry, index into frames)` of the
    /// innermost frame a specific await entry matches, else of the innermost frame a generic
    /// one matches. `frames` are (module, qualname), innermost first.
    pub fn match_await<'f>(
        &self,
        frames: impl Iterator<Item = (&'f str, &'f str)> + Clone,
    ) -> Option<(&Entry, usize)> {
        for generic in [false, true] {
            for (i, (module, function)) in frames.clone().enumerate() {
                let found = self.entries.iter().map(|c| &c.entry).find(|e| {
                    e.awaits.is_some_and(|a| a.generic == generic)
                        && Self::frame_matches(e, module, function)
                });
                if let Some(e) = found {
                    return Some((e, i));
                }
            }
        }
        None
    }

    fn frame_matches(e: &Entry, module: &str, function: &str) -> bool {
        {
            let m = &e.matcher;
            !m.exclude_modules
                .iter()
                .any(|x| frames::module_in(module, x))
                && m.frames.iter().any(|p| {
                    frames::module_in(module, &p.module)
                        && p.function
                            .as_deref()
                            .is_none_or(|f| frames::function_matches(f, function))
                })
        }
    }

    /// The first library-phase entry (one with [`Entry::phase`]) matched by the frames of a
    /// callback, walked from the outermost frame inwards: `(entry, index into frames)`.
    pub fn phase_of<'f>(
        &self,
        frames: impl DoubleEndedIterator<Item = (usize, (&'f str, &'f str))>,
    ) -> Option<(&Entry, usize)> {
        for (i, (module, function)) in frames.rev() {
            if let Some(e) = self.match_frame(module, function) {
                if e.phase.is_some() {
                    return Some((e, i));
                }
            }
        }
        None
    }

    /// Chooses the entry for a blocked call site: the library frame closest to the application
    /// frame that any entry matches (the API the application called) wins; then the source
    /// line of the application frame; then the fallback for the activity.
    pub fn classify(&self, facts: &SiteFacts) -> (&Entry, MatchedBy) {
        for (i, (module, function)) in facts.callees.iter().enumerate() {
            if let Some(e) = self.match_frame(module, function) {
                return (e, MatchedBy::Frame(i));
            }
        }
        if let Some(src) = facts.source {
            for c in &self.entries {
                let m = &c.entry.matcher;
                if !c.source.iter().any(|r| r.is_match(src)) {
                    continue;
                }
                if !m.activities.is_empty()
                    && !m.activities.iter().any(|a| a == facts.activity.name())
                {
                    continue;
                }
                if let Some(reason) = facts.activity.wait_reason() {
                    if !m.wait_reasons.is_empty()
                        && !m.wait_reasons.iter().any(|r| r == reason.name())
                    {
                        continue;
                    }
                }
                return (&c.entry, MatchedBy::Source);
            }
        }
        let key = facts.activity.label();
        for c in &self.entries {
            if c.entry.fallback_for.iter().any(|k| *k == key || k == "*") {
                return (&c.entry, MatchedBy::Fallback);
            }
        }
        // The built-in catalog always has a `*` fallback; a user catalog cannot remove it.
        (
            &self.entries.last().expect("catalog is never empty").entry,
            MatchedBy::Fallback,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(
        callees: &[(&str, &'a str)],
        source: Option<&'a str>,
        activity: &'a str,
        reason: Option<&'a str>,
    ) -> SiteFacts<'a> {
        use crate::analysis::loops::WaitReason;
        let activity = match (activity, reason) {
            ("on-cpu", _) => Activity::OnCpu,
            ("native", _) => Activity::Native,
            ("gil-wait", _) => Activity::GilWait,
            ("waiting", r) => Activity::Waiting(match r {
                Some("sleep") => WaitReason::Sleep,
                Some("socket") => WaitReason::Socket,
                Some("child-process") => WaitReason::ChildProcess,
                Some("lock") => WaitReason::Lock,
                Some("disk") => WaitReason::Disk,
                _ => WaitReason::Other,
            }),
            (other, _) => panic!("no activity {other}"),
        };
        SiteFacts {
            callees: callees.iter().map(|(m, f)| (m.to_string(), *f)).collect(),
            source,
            activity,
        }
    }

    #[test]
    fn builtin_catalog_has_every_public_id() {
        let c = Catalog::builtin();
        for id in [
            "sync-http-client",
            "blocking-sleep",
            "sync-file-io",
            "sync-db-driver",
            "sync-redis",
            "sync-cloud-sdk",
            "blocking-subprocess",
            "executor-shutdown-wait",
            "thread-sync-wait",
            "blocking-logging",
            "sync-task-result",
            "cpu-bound",
            "cpu-bound-native",
            "client-per-request",
            "dns-lookup",
            "gil-contention",
            "request-validation",
            "response-serialization",
            "metrics-collection",
            "sync-span-export",
            "unknown-blocking",
        ] {
            let e = c.get(id).unwrap_or_else(|| panic!("{id} missing"));
            assert!(
                !e.before.is_empty() && !e.after.is_empty() && !e.links.is_empty(),
                "{id}"
            );
        }
    }

    #[test]
    fn the_api_closest_to_the_application_wins() {
        let c = Catalog::builtin();
        // logger.info -> HTTPHandler.emit -> http.client: the logging call is what the app did.
        let f = facts(
            &[
                ("logging", "Logger.info"),
                ("logging", "Logger._log"),
                ("logging.handlers", "HTTPHandler.emit"),
                ("http.client", "HTTPConnection.getresponse"),
                ("socket", "SocketIO.readinto"),
            ],
            Some("    logger.info(\"shipped\")"),
            "waiting",
            Some("socket"),
        );
        assert_eq!(c.classify(&f).0.id, "blocking-logging");
        // A span ending in a route: the synchronous span processor is the hook to fix, not the
        // exporter's HTTP client underneath it.
        let f = facts(
            &[
                ("opentelemetry.trace", "use_span"),
                ("opentelemetry.sdk.trace", "Span.end"),
                (
                    "opentelemetry.sdk.trace",
                    "SynchronousMultiSpanProcessor.on_end",
                ),
                (
                    "opentelemetry.sdk.trace.export",
                    "SimpleSpanProcessor.on_end",
                ),
                (
                    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
                    "OTLPSpanExporter.export",
                ),
                ("requests.sessions", "Session.post"),
            ],
            Some("    with tracer.start_as_current_span(\"traced\"):"),
            "waiting",
            Some("socket"),
        );
        assert_eq!(c.classify(&f).0.id, "sync-span-export");
        // Leaving a with-ThreadPoolExecutor block: Executor.__exit__ before Thread.join.
        let f = facts(
            &[
                ("concurrent.futures._base", "Executor.__exit__"),
                ("concurrent.futures.thread", "ThreadPoolExecutor.shutdown"),
                ("threading", "Thread.join"),
                ("threading", "Thread._wait_for_tstate_lock"),
            ],
            None,
            "waiting",
            Some("lock"),
        );
        assert_eq!(c.classify(&f).0.id, "executor-shutdown-wait");
        let f = facts(
            &[("requests.api", "get"), ("requests.api", "request")],
            None,
            "waiting",
            Some("socket"),
        );
        assert_eq!(
            c.classify(&f).clone_ids(),
            ("sync-http-client".to_string(), MatchedBy::Frame(0))
        );
        let f = facts(
            &[("redis.asyncio.client", "Redis.execute_command")],
            None,
            "waiting",
            Some("socket"),
        );
        assert_ne!(
            c.classify(&f).0.id,
            "sync-redis",
            "redis.asyncio is excluded"
        );
        let f = facts(
            &[("subprocess", "wait")],
            None,
            "waiting",
            Some("child-process"),
        );
        assert_eq!(
            c.classify(&f).0.id,
            "blocking-subprocess",
            "3.10 bare names"
        );
    }

    #[test]
    fn c_calls_are_named_by_source_line_and_state() {
        let c = Catalog::builtin();
        let f = facts(
            &[],
            Some("    time.sleep(ms / 1000)"),
            "waiting",
            Some("sleep"),
        );
        assert_eq!(c.classify(&f).0.id, "blocking-sleep");
        assert_eq!(c.classify(&f).1, MatchedBy::Source);
        let f = facts(&[], Some("    sleep(delay)"), "waiting", Some("sleep"));
        assert_eq!(c.classify(&f).0.id, "blocking-sleep");
        let f = facts(
            &[],
            Some("    rows = conn.execute(q).fetchall()"),
            "native",
            None,
        );
        assert_eq!(c.classify(&f).0.id, "sync-db-driver");
        let f = facts(
            &[],
            Some("        os.fsync(f.fileno())"),
            "waiting",
            Some("disk"),
        );
        assert_eq!(c.classify(&f).0.id, "sync-file-io");
        let f = facts(
            &[],
            Some("    digest = hashlib.sha256(buf).hexdigest()"),
            "native",
            None,
        );
        assert_eq!(c.classify(&f).0.id, "cpu-bound-native");
        // A source match needs the right state: `sleep(` while computing is not a sleep.
        let f = facts(&[], Some("    x = compute_sleep(y)"), "on-cpu", None);
        assert_eq!(c.classify(&f).0.id, "cpu-bound");
        let f = facts(&[], None, "gil-wait", None);
        assert_eq!(c.classify(&f).0.id, "gil-contention");
        let f = facts(&[("mylib.rpc", "call")], None, "waiting", Some("socket"));
        assert_eq!(c.classify(&f).0.id, "unknown-blocking");
    }

    #[test]
    fn user_entries_come_first_and_bad_ones_are_clear_errors() {
        let user = r#"{"entries": [{"id": "inhouse-rpc", "title": "In-house RPC client", "why": "sync socket",
            "fix": "use rpc.aio", "match": {"frames": [{"module": "mylib.rpc"}]}}]}"#;
        let c = Catalog::with_user(&[("mine.json".into(), user.into())]).unwrap();
        let f = facts(&[("mylib.rpc", "call")], None, "waiting", Some("socket"));
        assert_eq!(c.classify(&f).0.id, "inhouse-rpc");
        let bad = r#"{"entries": [{"id": "x", "title": "t", "why": "w", "fix": "f", "match": {"source": ["("]}}]}"#;
        let err = Catalog::with_user(&[("bad.json".into(), bad.into())])
            .err()
            .unwrap();
        assert!(err.to_string().contains("bad source regex"));
        let err = Catalog::with_user(&[("bad.json".into(), "{".into())])
            .err()
            .unwrap();
        assert!(err.to_string().contains("docs/detection.md"));
    }

    trait CloneIds {
        fn clone_ids(self) -> (String, MatchedBy);
    }
    impl CloneIds for (&Entry, MatchedBy) {
        fn clone_ids(self) -> (String, MatchedBy) {
            (self.0.id.clone(), self.1)
        }
    }
}
