"""Cost of one sample to the target and to the sampler: loopprof's locking modes vs py-spy.

    target/venvs/py3.11/bin/python benches/stop_cost.py [--secs 5] [--repeat 2]

(run `scripts/venv.sh 3.11` and `cargo build --release` first; docs/benchmarks.md has results)

For each scenario (a uvicorn server of tests/python/app.py under bounded loopback load), it
records with `loopprof record` in each locking mode, in rotating order, and reports:

* stopped time per sample: how long the target's threads were stopped while a sample was
  read (the `read_us` loopprof writes per sample; in `nonblocking` mode nothing is stopped and
  the figure is just the read time). `all-threads` is py-spy's default locking (every OS
  thread ptrace-stopped for the read), done by the same py-spy reader, so the comparison
  isolates the locking strategy.
* sampler CPU per sample: user+system CPU of the loopprof process / samples written.
* for the PyPI `py-spy record` CLI (default blocking mode, same py-spy version) the sampler
  CPU per sample, with samples = rate x duration (py-spy does not report its count).

Only 127.0.0.1 is used; every process started is killed at the end.
"""

import argparse
import gzip
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import free_port, q, wait_health

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


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_loopprof(pid, secs, extra, out):
    before = child_cpu()
    subprocess.run(
        [LOOPPROF, "record", "--pid", str(pid), "--duration", str(secs), "-o", out] + extra,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cpu = child_cpu() - before
    reads = []
    with gzip.open(os.path.join(out, "recording.jsonl.gz"), "rt") as f:
        for line in f:
            rec = json.loads(line)
            if rec["type"] in ("sample", "tick") and rec["data"]["pid"] == pid:  # tick: format v2+
                reads.append(rec["data"]["read_us"])
    return reads, cpu


def run_pyspy(pid, secs, rate=100):
    before = child_cpu()
    subprocess.run(
        [PYSPY, "record", "--pid", str(pid), "--duration", str(secs), "--rate", str(rate),
         "--format", "raw", "-o", os.devnull, "--idle", "--threads"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return child_cpu() - before, rate * secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="loopprof-bench-")
    rows = []
    procs = []
    try:
        for name, loop, paths in SCENARIOS:
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
                       "--duration", str(args.secs * (len(MODES) + 1) * args.repeat + 30)]
                for p in paths:
                    cmd += ["--url", "http://127.0.0.1:%d%s" % (port, p)]
                load = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
                procs.append(load)
                time.sleep(1)
            results = {m: {"reads": [], "cpu": 0.0, "n": 0} for m, _ in MODES}
            pyspy = {"cpu": 0.0, "n": 0}
            for r in range(args.repeat):
                order = MODES[r % len(MODES):] + MODES[:r % len(MODES)]
                for mode, extra in order:
                    out = os.path.join(tmp, "%d-%d-%d" % (len(rows), r, MODES.index((mode, extra))))
                    reads, cpu = run_loopprof(server.pid, args.secs, extra, out)
                    results[mode]["reads"] += reads
                    results[mode]["cpu"] += cpu
                    results[mode]["n"] += len(reads)
                if os.path.exists(PYSPY):
                    cpu, n = run_pyspy(server.pid, args.secs)
                    pyspy["cpu"] += cpu
                    pyspy["n"] += n
            for mode, _ in MODES:
                res = results[mode]
                rows.append((name, mode, q(res["reads"], 0.5), q(res["reads"], 0.9),
                             q(res["reads"], 0.99), 1e3 * res["cpu"] / max(1, res["n"]), res["n"]))
            if pyspy["n"]:
                rows.append((name, "py-spy record (PyPI CLI, default)", None, None, None,
                             1e3 * pyspy["cpu"] / pyspy["n"], pyspy["n"]))
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

    print("| scenario | sampler | stopped per sample p50 / p90 / p99 (µs) | sampler CPU per sample (ms) | samples |")
    print("| --- | --- | --- | --- | --- |")
    for name, mode, p50, p90, p99, cpu, n in rows:
        stop = "%d / %d / %d" % (p50, p90, p99) if p50 is not None else "(not observable)"
        if "nonblocking" in mode and p50 is not None:
            stop = "0 (read %d / %d / %d)" % (p50, p90, p99)
        print("| %s | %s | %s | %.2f | %d |" % (name, mode, stop, cpu, n))


if __name__ == "__main__":
    main()
