//! The words and figures of loopprof's outputs, explained once: the verdict's figure tiles
//! and the activity words of findings and threads. report.html shows them as tooltips and in
//! a legend (no script), `docs/glossary.md` lists them (a test keeps the two in step).

/// `(term, meaning)` of each figure of the verdict, in the order of the report's tiles.
pub const FIGURES: &[(&str, &str)] = &[
    ("loop blocked", "Share of the event loop's time inside stalls (one callback holding the loop for at least the stall threshold, 50 ms by default) and repeated short blocks at one call site. While the loop is blocked no other request makes progress: this is the figure to bring down."),
    ("worst stall", "The longest single stall, in milliseconds of wall time: how long every other request waited, at worst, for that one callback."),
    ("process CPU", "CPU time the recorded server processes used, in percent of one core (200% is two full cores). Low CPU with a high 'loop blocked' is the classic sign of a blocking wait on the loop."),
    ("loop busy", "Share of the loop's time running any callback rather than waiting for events. Busy is not bad by itself (short callbacks are the work); busy near 100% with no stall means the loop is saturated by the request rate."),
    ("GIL wait", "Share of the loop's time spent waiting to take the GIL while another thread of the process held it (CPU-bound threads, C extensions that keep the GIL)."),
    ("CPU-starved", "Share of the loop's time it was ready to run but had no CPU: the machine, or the container's CPU limit, was saturated. That time is not counted against the code."),
];

/// `(word, meaning)` of each activity word used for a thread or a finding ("loop was ...").
pub const ACTIVITIES: &[(&str, &str)] = &[
    ("on-cpu", "Running Python code (holding the GIL)."),
    ("native", "Running native code with the GIL released: a C extension, compression, hashing, a regex engine, I/O done in C."),
    ("waiting", "Blocked in a system call; the reason follows in parentheses: sleep, socket, lock (a lock, a join or a future), disk, child process, ..."),
    ("gil-wait", "Waiting to take the GIL, held by another thread."),
    ("idle", "An event loop waiting for events in its selector (epoll): what a healthy, unloaded loop does."),
    ("stall", "One callback that held the event loop for at least the stall threshold."),
    ("repeated short blocks", "Shorter blocks at one application call site that together take a noticeable share of the loop's time (2% by default)."),
];

/// The meaning of a verdict figure, by its label (empty for an unknown label).
pub fn figure(label: &str) -> &'static str {
    FIGURES
        .iter()
        .find(|(t, _)| *t == label)
        .map(|(_, m)| *m)
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_glossary_lists_every_term() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/glossary.md"))
            .expect("docs/glossary.md exists");
        for (term, _) in FIGURES.iter().chain(ACTIVITIES) {
            assert!(
                doc.contains(&format!("**{term}**")),
                "docs/glossary.md lacks **{term}**"
            );
        }
    }
}
