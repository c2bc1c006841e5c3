"""Cost of one sample to the target and to the sampler: loopprof's locking modes vs py-spy.

    target/venvs/py3.11/bin/python benches/stop_cost.py [--secs 5] [--repeat 2] [--baseline BIN] [--only TEXT]

(run `scripts/venv.sh 3.11` and `cargo build --release` first; docs/benchmarks.md has results)

For each scenario (a uvicorn server of tests/python/app.py under bounded loopback load), it
records with `loopprof record` in each locking mode, in rotating order, and reports:

* stopped time per sample: how long the target's threads were stopped while a sample was
  read (the `read_us` loopprof writes per sample; in `nonblocking` mode nothing is stopped and
  the figure is just the read time). `all-threads` is py-spy's default locking (every OS
  thread ptrace-stopped for the read), done by the same py-spy reader, so the comparison
  isolates the locking strategy.
* sampler CPU per sample, steady: user+system CPU of the loopprof process (polled from
  /proc/PID/stat every 50 ms) between 0.5 s after the recording starts and 0.3 s before it
  ends, divided by the samples in that span (achieved rate x span); in brackets the whole
  process's CPU / samples, which adds attaching and the report written at the end.
* for the PyPI `py-spy record` CLI (default blocking mode, same py-spy version) the same,
  with samples = rate x span (py-spy does not report its count).
* loop time lost: the stopped time of all samples over the recorded time (the share of the
  target's time its threads were held stopped).
* with `--baseline BIN`, an earlier loopprof build in its default mode, in the same rotation
  (for "no worse than before" in one run).
* thread samples not read again (the thread had not run since its last read) and read
  without a stop, from the recording's `end` record.

Only 127.0.0.1 is used; every process started is killed at the end.
"""

import argparse
import gzip
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import free_port, poll_cpu_until_exit, q, steady_cpu, wait_health

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.dirname(os.path.dirname(sys.executable))
LOOPPROF = os.environ.get("LOOPPROF", os.path.join(ROOT, "target/release/loopprof"))
PYSPY = os.path.join(VENV, "bin/py-spy")

SCENARIOS = [
    # name, uvicorn loop, load paths
    ("uvloop, idle", "uvloop", []),
    ("uvloop, loop blocked in time.sleep", "uvloop", ["/sleep?ms=100"]),
    ("uvloop, loop CPU-bound", "uvloop", ["/cpu?ms=20"]),
    ("asyncio + 4 AnyIO threads (def endpoints)", "asyncio", ["/ctl/def-sleep?ms=50"]),
]
MODES = [
    ("loopprof (python threads)", []),
    ("loopprof --stop-all-threads (= py-spy default)", ["--stop-all-threads"]),
    ("loopprof --nonblocking", ["--nonblocking"]),
]


def run_loopprof(pid, secs, extra, out, binary=LOOPPROF):
    """Records with `binary`; returns the stopped time of every tick, the steady sampler CPU per sample
    (ms), the whole process's CPU per sample (ms), and the end record."""
    p = subprocess.Popen(
        [binary, "record", "--pid", str(pid), "--duration", str(secs), "-o", out] + extra,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rec_path = os.path.join(out, "recording.jsonl.gz")
    deadline = time.monotonic() + 20
    while not os.path.exists(rec_path):
        if p.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("loopprof did not start recording (exit %s)" % p.returncode)
        time.sleep(0.005)
    started = time.time()
    polls = poll_cpu_until_exit(p, secs * 4 + 60)
    reads, times, end = [], [], {}
    with gzip.open(rec_path, "rt") as f:
        t = 0
        for line in f:
            rec = json.loads(line)
            if rec["type"] in ("sample", "tick") and rec["data"]["pid"] == pid:  # tick: format v2+
                reads.append(rec["data"]["read_us"])
            elif rec["type"] == "end":
                end = rec["data"]
    total = polls[-1][1] if polls else 0.0
    cpu, span = steady_cpu(polls, started + 0.5, started + secs - 0.3)
    rate = len(reads) / secs
    steady = 1e3 * cpu / (span * rate) if cpu is not None and rate else None
    return reads, steady, 1e3 * total / max(1, len(reads)), end


def run_pyspy(pid, secs, rate=100):
    """Records with the PyPI CLI; returns its steady CPU per sample (ms, samples = rate x
    span) and its whole CPU per sample."""
    p = subprocess.Popen(
        [PYSPY, "record", "--pid", str(pid), "--duration", str(secs), "--rate", str(rate),
         "--format", "raw", "-o", os.devnull, "--idle", "--threads"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started = time.time()
    polls = poll_cpu_until_exit(p, secs * 4 + 60)
    # py-spy starts sampling once attached (about 0.1 s): the steady window starts later.
    cpu, span = steady_cpu(polls, started + 0.7, started + secs - 0.3)
    steady = 1e3 * cpu / (span * rate) if cpu is not None else None
    total = polls[-1][1] if polls else 0.0
    return steady, 1e3 * total / (rate * secs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--baseline", metavar="BIN",
                    help="another loopprof binary (an earlier build) measured beside, in its "
                         "default mode, in the same rotation")
    ap.add_argument("--only", metavar="TEXT",
                    help="only the scenarios whose name contains TEXT")
    args = ap.parse_args()
    modes = [(m, e, LOOPPROF) for m, e in MODES]
    if args.baseline:
        modes.append(("baseline %s (python threads)" % os.path.basename(args.baseline), [],
                      args.baseline))
    tmp = tempfile.mkdtemp(prefix="loopprof-bench-")
    rows = []
    procs = []
    try:
        for name, loop, paths in SCENARIOS:
            if args.only and args.only not in name:
                continue
            port = free_port()
            server = subprocess.Popen(
                [os.path.join(VENV, "bin/uvicorn"), "app:app", "--host", "127.0.0.1", "--port",
                 str(port), "--loop", loop, "--no-access-log"],
                cwd=os.path.join(ROOT, "tests/python"), stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True)
            procs.append(server)
            wait_health(port)
            load = None
            if paths:
                cmd = [sys.executable, os.path.join(ROOT, "tests/python/load.py"),
                       "--concurrency", "4" if "def-sleep" in paths[0] else "1",
                       "--duration", str(args.secs * (len(modes) + 1) * args.repeat + 30)]
                for p in paths:
                    cmd += ["--url", "http://127.0.0.1:%d%s" % (port, p)]
                load = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
                procs.append(load)
                time.sleep(1)
            results = {m: {"reads": [], "steady": [], "whole": [], "unchanged": 0,
                           "unstopped": 0, "threads": 0} for m, _, _ in modes}
            pyspy = {"steady": [], "whole": []}
            for r in range(args.repeat):
                order = modes[r % len(modes):] + modes[:r % len(modes)]
                for k, (mode, extra, binary) in enumerate(order):
                    out = os.path.join(tmp, "%d-%d-%d" % (len(rows), r, k))
                    reads, steady, whole, end = run_loopprof(server.pid, args.secs, extra, out,
                                                             binary)
                    res = results[mode]
                    res["reads"] += reads
                    res["steady"].append(steady)
                    res["whole"].append(whole)
                    res["unchanged"] += end.get("unchanged", 0)
                    res["unstopped"] += end.get("unstopped", 0)
                if os.path.exists(PYSPY):
                    steady, whole = run_pyspy(server.pid, args.secs)
                    pyspy["steady"].append(steady)
                    pyspy["whole"].append(whole)
            for mode, _, _ in modes:
                res = results[mode]
                # Loop time lost: Σ stopped time / recorded time (nothing with --nonblocking).
                lost = (0.0 if "nonblocking" in mode
                        else 100 * sum(res["reads"]) / (1e6 * args.secs * args.repeat))
                rows.append((name, mode, q(res["reads"], 0.5), q(res["reads"], 0.9),
                             q(res["reads"], 0.99), lost, med(res["steady"]), med(res["whole"]),
                             len(res["reads"]), res["unchanged"], res["unstopped"]))
            if pyspy["steady"]:
                rows.append((name, "py-spy record (PyPI CLI, default)", None, None, None, None,
                             med(pyspy["steady"]), med(pyspy["whole"]), 100 * args.secs * args.repeat,
                             None, None))
            for p in procs:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            procs.clear()
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)

    print("| scenario | sampler | stopped per sample p50 / p90 / p99 (µs) | loop time lost "
          "(Σ stopped / time) | sampler CPU per sample, steady (whole run) (ms) | samples | "
          "thread samples not read again / read unstopped |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, mode, p50, p90, p99, lost, steady, whole, n, unchanged, unstopped in rows:
        stop = "%d / %d / %d" % (p50, p90, p99) if p50 is not None else "(not observable)"
        if "nonblocking" in mode and p50 is not None:
            stop = "0 (read %d / %d / %d)" % (p50, p90, p99)
        kept = "%d / %d" % (unchanged, unstopped) if unchanged is not None else "–"
        print("| %s | %s | %s | %s | %s (%.2f) | %d | %s |" % (
            name, mode, stop, "%.2f%%" % lost if lost is not None else "(not observable)",
            "%.2f" % steady if steady is not None else "–", whole, n, kept))


def med(values):
    """The median of the values that are not None (None when there is none)."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

if __name__ == "__main__":
    main()
