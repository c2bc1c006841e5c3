//! Probe results (`record --probe URL`) summarised per URL: how often the server answered,
//! how fast, and how often it did not answer in time.

use crate::analysis::stats::{percentile, sort_f64};
use crate::recording::{ProbeOutcome, Recording};
use serde::Serialize;
use std::collections::BTreeMap;

/// One probed URL.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeSummary {
    /// The URL.
    pub url: String,
    /// Requests made.
    pub requests: usize,
    /// Requests answered (any HTTP status).
    pub answered: usize,
    /// Requests that timed out.
    pub timeouts: usize,
    /// Requests that failed otherwise (refused, reset...).
    pub errors: usize,
    /// Median latency of answered requests, ms.
    pub p50_ms: f64,
    /// 99th percentile latency of answered requests, ms.
    pub p99_ms: f64,
    /// Longest latency (timeouts included), ms.
    pub max_ms: f64,
}

/// The path of a probe URL (`http://127.0.0.1:8000/health?x=1` → `/health?x=1`): what a
/// probe is matched by across recordings (a restarted server may listen on another port).
pub fn path_of(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.find('/').map(|i| &rest[i..]).unwrap_or("/")
}

/// Summarises the probe records of a recording, one entry per URL.
pub fn summarize(rec: &Recording) -> Vec<ProbeSummary> {
    let mut by_url: BTreeMap<&str, Vec<&crate::recording::ProbeResult>> = BTreeMap::new();
    for p in &rec.probes {
        by_url.entry(&p.url).or_default().push(p);
    }
    by_url
        .into_iter()
        .map(|(url, ps)| {
            let mut ok: Vec<f64> = ps
                .iter()
                .filter(|p| p.status.is_some())
                .map(|p| p.latency_ms)
                .collect();
            sort_f64(&mut ok);
            let q = |p: f64| percentile(&ok, p);
            ProbeSummary {
                url: url.to_owned(),
                requests: ps.len(),
                answered: ok.len(),
                timeouts: ps
                    .iter()
                    .filter(|p| p.outcome() == ProbeOutcome::TimedOut)
                    .count(),
                errors: ps
                    .iter()
                    .filter(|p| p.outcome() == ProbeOutcome::Failed)
                    .count(),
                p50_ms: q(0.5),
                p99_ms: q(0.99),
                max_ms: ps.iter().map(|p| p.latency_ms).fold(0.0, f64::max),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::testing::*;
    use crate::recording::{ProbeResult, Record};

    #[test]
    fn counts_answers_timeouts_and_errors() {
        let mut b = RecordingBuilder::new(header(1, 100.0));
        for (i, (lat, status, err)) in [
            (2.0, Some(200), None),
            (4.0, Some(200), None),
            (5000.0, None, Some("timeout")),
            (1.0, None, Some("Connection refused")),
        ]
        .into_iter()
        .enumerate()
        {
            b.record(Record::Probe(ProbeResult {
                t_us: i as u64 * 200_000,
                url: "http://127.0.0.1:8000/health".into(),
                latency_ms: lat,
                status,
                error: err.map(String::from),
            }));
        }
        let rec = b.finish(end(1_000_000, 0));
        let s = summarize(&rec);
        assert_eq!(s.len(), 1);
        let s = &s[0];
        assert_eq!((s.requests, s.answered, s.timeouts, s.errors), (4, 2, 1, 1));
        assert_eq!(s.max_ms, 5000.0);
        assert_eq!(s.p99_ms, 4.0);
    }
}
