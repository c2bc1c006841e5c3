//! pprof's `profile.proto` (github.com/google/pprof, `proto/profile.proto`), gzip-compressed:
//! what `go tool pprof`, Grafana Pyroscope's ingest (`/ingest?format=pprof`) and other pprof
//! readers take.
//!
//! Every thread sample of the recording is one pprof sample with three values: `samples`
//! (`count`, 1), `wall` (`nanoseconds`: the wall time the sample covers, midpoints to its
//! thread's neighbouring samples, as the diagnosis times blocks) and `cpu` (`nanoseconds`: the
//! same when the thread was on CPU: holding the GIL or running native code; 0 otherwise).
//! Labels carry what loopprof knows of the sample: `pid` (number), `thread` (`NAME (TID)`),
//! `activity` (`on-cpu`, `native`, `waiting`, `gil-wait`), `wait_reason` (`socket`, `lock`,
//! ... when waiting), `loop_state` for event-loop threads (`idle`, `busy`, `stall`, `gil-wait`,
//! `overhead`, `not-loop`), `category` (the catalog id of the finding a stall sample belongs
//! to) and `route` (the HTTP route served). Samples with the same stack and labels are summed.
//! Each Python frame is a location with one line, its function the (qualified name, file)
//! pair; one mapping marks every symbol as resolved so readers do not try to symbolize.
//! What is lost: the order in time (pprof aggregates), syscalls and wait targets.
//!
//! The message types are written here with `prost`'s derive from the field numbers of
//! `profile.proto`; only the fields loopprof fills are declared.

use crate::analysis::diagnose::{coverage_ms, Diagnosis};
use crate::analysis::loops::{self, Activity, LoopState};
use crate::recording::Recording;
use flate2::write::GzEncoder;
use flate2::Compression;
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;

#[derive(Clone, PartialEq, Message)]
struct Profile {
    #[prost(message, repeated, tag = "1")]
    sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    string_table: Vec<String>,
    #[prost(int64, tag = "9")]
    time_nanos: i64,
    #[prost(int64, tag = "10")]
    duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    period: i64,
    #[prost(int64, repeated, tag = "13")]
    comment: Vec<i64>,
    #[prost(int64, tag = "14")]
    default_sample_type: i64,
}

#[derive(Clone, PartialEq, Message)]
struct ValueType {
    #[prost(int64, tag = "1")]
    r#type: i64,
    #[prost(int64, tag = "2")]
    unit: i64,
}

#[derive(Clone, PartialEq, Message)]
struct Sample {
    #[prost(uint64, repeated, tag = "1")]
    location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    label: Vec<Label>,
}

#[derive(Clone, PartialEq, Message)]
struct Label {
    #[prost(int64, tag = "1")]
    key: i64,
    #[prost(int64, tag = "2")]
    str: i64,
    #[prost(int64, tag = "3")]
    num: i64,
}

#[derive(Clone, PartialEq, Message)]
struct Mapping {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(int64, tag = "5")]
    filename: i64,
    #[prost(bool, tag = "7")]
    has_functions: bool,
    #[prost(bool, tag = "8")]
    has_filenames: bool,
    #[prost(bool, tag = "9")]
    has_line_numbers: bool,
}

#[derive(Clone, PartialEq, Message)]
struct Location {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(uint64, tag = "2")]
    mapping_id: u64,
    #[prost(message, repeated, tag = "4")]
    line: Vec<Line>,
}

#[derive(Clone, PartialEq, Message)]
struct Line {
    #[prost(uint64, tag = "1")]
    function_id: u64,
    #[prost(int64, tag = "2")]
    line: i64,
}

#[derive(Clone, PartialEq, Message)]
struct Function {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(int64, tag = "2")]
    name: i64,
    #[prost(int64, tag = "3")]
    system_name: i64,
    #[prost(int64, tag = "4")]
    filename: i64,
}

/// The string table (index 0 is always "").
#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn id(&mut self, s: &str) -> i64 {
        if self.table.is_empty() {
            self.table.push(String::new());
            self.index.insert(String::new(), 0);
        }
        if let Some(i) = self.index.get(s) {
            return *i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

/// The labels of one sample: (key, string value or number).
type Labels = Vec<(&'static str, LabelValue)>;

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
enum LabelValue {
    Str(String),
    Num(i64),
}

/// What one thread sample says, besides its stack.
fn labels(
    rec: &Recording,
    d: &Diagnosis,
    s: &crate::recording::Sample,
    t: &crate::recording::ThreadSample,
) -> (Labels, bool) {
    let activity = loops::activity(rec, s, t);
    let mut l: Labels = vec![
        ("pid", LabelValue::Num(s.pid as i64)),
        (
            "thread",
            LabelValue::Str(format!("{} ({})", rec.thread_name(t).unwrap_or("?"), t.tid)),
        ),
        ("activity", LabelValue::Str(activity.name().to_owned())),
    ];
    if let Some(r) = activity.wait_reason() {
        l.push(("wait_reason", LabelValue::Str(r.name().to_owned())));
    }
    if let Some(lt) = d.loops.iter().find(|l| l.pid == s.pid && l.tid == t.tid) {
        let finding = d.stall_samples.get(&(s.pid, t.tid, s.t_us));
        let state = match (finding, loops::classify(rec, lt, s, t)) {
            (Some(_), _) => "stall",
            (None, LoopState::Idle) => "idle",
            (None, LoopState::Overhead) => "overhead",
            (None, LoopState::Busy { .. }) => "busy",
            (None, LoopState::GilWait) => "gil-wait",
            (None, LoopState::NotLoop) => "not-loop",
        };
        l.push(("loop_state", LabelValue::Str(state.to_owned())));
        if let Some(f) = finding.and_then(|i| d.findings.get(*i)) {
            l.push(("category", LabelValue::Str(f.category.clone())));
        }
    }
    if let Some(r) = t.route {
        l.push(("route", LabelValue::Str(rec.str(r).to_owned())));
    }
    let on_cpu = matches!(activity, Activity::OnCpu | Activity::Native);
    (l, on_cpu)
}

/// The recording as a gzip-compressed `profile.proto`.
pub fn to_bytes(rec: &Recording, d: &Diagnosis) -> Vec<u8> {
    // Each thread's sample times, for the wall time each sample covers.
    let mut times: BTreeMap<(u32, u32), Vec<u64>> = BTreeMap::new();
    for s in &rec.samples {
        for t in &s.threads {
            times.entry((s.pid, t.tid)).or_default().push(s.t_us);
        }
    }
    let mut cover: HashMap<(u32, u32), std::vec::IntoIter<f64>> = times
        .iter()
        .map(|(k, ts)| (*k, coverage_ms(ts).into_iter()))
        .collect();
    let mut strings = Strings::default();
    strings.id("");
    // (stack id, labels) -> [samples, wall ns, cpu ns]
    let mut sums: BTreeMap<(u32, Labels), [i64; 3]> = BTreeMap::new();
    for s in &rec.samples {
        for t in &s.threads {
            let wall_ms = cover
                .get_mut(&(s.pid, t.tid))
                .and_then(Iterator::next)
                .unwrap_or(0.0);
            let wall = (wall_ms * 1e6).round() as i64;
            let (l, on_cpu) = labels(rec, d, s, t);
            let v = sums.entry((t.stack, l)).or_default();
            v[0] += 1;
            v[1] += wall;
            v[2] += if on_cpu { wall } else { 0 };
        }
    }
    let mut functions: Vec<Function> = Vec::new();
    let mut function_ids: HashMap<(u32, u32), u64> = HashMap::new();
    let mut locations: Vec<Location> = Vec::new();
    let mut location_ids: HashMap<u32, u64> = HashMap::new();
    let mut samples = Vec::with_capacity(sums.len());
    for ((stack, l), v) in sums {
        let mut ids = Vec::with_capacity(rec.stacks[stack as usize].len());
        // Innermost first: pprof's leaf is location_id[0], as loopprof's stacks are.
        for &frame in &rec.stacks[stack as usize] {
            let id = *location_ids.entry(frame).or_insert_with(|| {
                let f = rec.frame(frame);
                let fid = *function_ids.entry((f.name, f.file)).or_insert_with(|| {
                    let name = strings.id(rec.str(f.name));
                    functions.push(Function {
                        id: functions.len() as u64 + 1,
                        name,
                        system_name: name,
                        filename: strings.id(rec.str(f.file)),
                    });
                    functions.len() as u64
                });
                locations.push(Location {
                    id: locations.len() as u64 + 1,
                    mapping_id: 1,
                    line: vec![Line {
                        function_id: fid,
                        line: f.line as i64,
                    }],
                });
                locations.len() as u64
            });
            ids.push(id);
        }
        let label = l
            .into_iter()
            .map(|(k, v)| {
                let key = strings.id(k);
                match v {
                    LabelValue::Str(s) => Label {
                        key,
                        str: strings.id(&s),
                        num: 0,
                    },
                    LabelValue::Num(n) => Label {
                        key,
                        str: 0,
                        num: n,
                    },
                }
            })
            .collect();
        samples.push(Sample {
            location_id: ids,
            value: v.to_vec(),
            label,
        });
    }
    let vt = |strings: &mut Strings, t: &str, u: &str| ValueType {
        r#type: strings.id(t),
        unit: strings.id(u),
    };
    let sample_type = vec![
        vt(&mut strings, "samples", "count"),
        vt(&mut strings, "wall", "nanoseconds"),
        vt(&mut strings, "cpu", "nanoseconds"),
    ];
    let period_type = Some(vt(&mut strings, "wall", "nanoseconds"));
    let mapping = vec![Mapping {
        id: 1,
        filename: strings.id("python"),
        has_functions: true,
        has_filenames: true,
        has_line_numbers: true,
    }];
    let comment = vec![strings.id(&format!(
        "loopprof {}: {} (pid {})",
        crate::VERSION,
        rec.header.target.cmdline.join(" "),
        rec.header.target.pid
    ))];
    let default_sample_type = strings.id("wall");
    let time_nanos = chrono::DateTime::parse_from_rfc3339(&rec.header.started_at)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .unwrap_or(0);
    let profile = Profile {
        sample_type,
        sample: samples,
        mapping,
        location: locations,
        function: functions,
        string_table: strings.table,
        time_nanos,
        duration_nanos: i64::try_from(rec.duration_us())
            .unwrap_or(i64::MAX)
            .saturating_mul(1000),
        period_type,
        period: (1e9 / rec.header.rate_hz.max(1e-3)).round() as i64,
        comment,
        default_sample_type,
    };
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&profile.encode_to_vec())
        .expect("writing to a Vec cannot fail");
    gz.finish().expect("writing to a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::catalog::Catalog;
    use crate::analysis::diagnose::{diagnose, Options};
    use std::io::Read;

    fn decode(bytes: &[u8]) -> Profile {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut raw)
            .unwrap();
        Profile::decode(raw.as_slice()).unwrap()
    }

    #[test]
    fn every_sample_is_counted_with_its_wall_time_labels_and_resolved_frames() {
        let rec = crate::recording::testing::tiny_recording();
        let d = diagnose(&rec, &Catalog::builtin(), &Options::default());
        let p = decode(&to_bytes(&rec, &d));
        let s = &p.string_table;
        assert_eq!(s[0], "");
        let name = |i: i64| s[i as usize].as_str();
        let types: Vec<_> = p
            .sample_type
            .iter()
            .map(|t| (name(t.r#type), name(t.unit)))
            .collect();
        assert_eq!(
            types,
            [
                ("samples", "count"),
                ("wall", "nanoseconds"),
                ("cpu", "nanoseconds")
            ]
        );
        assert_eq!(name(p.default_sample_type), "wall");
        let threads: usize = rec.samples.iter().map(|x| x.threads.len()).sum();
        let counted: i64 = p.sample.iter().map(|x| x.value[0]).sum();
        assert_eq!(
            counted as usize, threads,
            "every thread sample counted once"
        );
        for x in &p.sample {
            assert!(x.value[1] > 0 && x.value[2] <= x.value[1]);
            let keys: Vec<_> = x.label.iter().map(|l| name(l.key)).collect();
            assert!(keys.starts_with(&["pid", "thread", "activity"]), "{keys:?}");
            for id in &x.location_id {
                let loc = &p.location[*id as usize - 1];
                assert_eq!(loc.id, *id);
                let f = &p.function[loc.line[0].function_id as usize - 1];
                assert!(!name(f.name).is_empty() && !name(f.filename).is_empty());
            }
        }
        assert!(p.mapping[0].has_functions && p.mapping[0].has_line_numbers);
    }
}
