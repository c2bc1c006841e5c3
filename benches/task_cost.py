"""Cost of reading asyncio tasks (`record --task-interval`) with 10, 100 and 1,000 tasks.

    target/venvs/py3.11/bin/python benches/task_cost.py [--secs 6] [--depth 12]

(run `scripts/venv.sh 3.11` and `cargo build --release` first; docs/benchmarks.md has results)

The target is a plain asyncio process (this script, run as `--target N DEPTH`) holding N tasks,
each suspended DEPTH coroutines deep (a FastAPI request's await chain is 15-30 deep), half on
an asyncio.Event and half in asyncio.sleep. For each N it records twice with
`loopprof record --rate 100`: with tasks read every 100 ms, and with `--no-tasks`, and reports:

* read time per task snapshot (the `read_us` of `tasks` records: median and p95). Nothing is
  stopped while tasks are read: this is the sampler's time, not the target's;
* the target's stopped time per stack sample in both runs (the `read_us` of ticks), to show
  the task reads do not add to it;
* the sampler's CPU per task snapshot: (CPU with tasks - CPU without) / snapshots;
* the recording's extra bytes per task snapshot (gzip'd).

Only local processes; every process started is killed at the end.
"""

import argparse
import asyncio
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from benchlib import q

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOOPPROF = os.environ.get("LOOPPROF", os.path.join(ROOT, "target/release/loopprof"))


async def nested(depth, wait):
    if depth == 0:
        await wait()
    else:
        await nested(depth - 1, wait)


async def target_main(n, depth):
    event = asyncio.Event()
    for i in range(n):
        wait = event.wait if i % 2 else (lambda: asyncio.sleep(3600))
        asyncio.ensure_future(nested(depth, wait))
    await asyncio.sleep(0.2)
    print("ready", flush=True)
    await asyncio.sleep(3600)


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def record(pid, secs, extra):
    out = tempfile.mkdtemp(prefix="loopprof-taskcost-")
    shutil.rmtree(out)
    before = child_cpu()
    subprocess.run(
        [LOOPPROF, "record", "-p", str(pid), "--duration", str(secs), "--rate", "100",
         "-o", out] + extra,
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    cpu = child_cpu() - before
    path = os.path.join(out, "recording.jsonl.gz")
    size = os.path.getsize(path)
    ticks, snaps, tasks = [], [], []
    with gzip.open(path, "rt") as f:
        for line in f:
            r = json.loads(line)
            if r["type"] == "tick":
                ticks.append(r["data"]["read_us"])
            elif r["type"] == "tasks":
                snaps.append(r["data"]["read_us"])
                tasks.append(len(r["data"]["tasks"]))
    shutil.rmtree(out, ignore_errors=True)
    return {
        "cpu_s": cpu,
        "bytes": size,
        "tick_read_us": ticks,
        "snap_read_us": snaps,
        "tasks": tasks,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secs", type=float, default=6.0)
    ap.add_argument("--depth", type=int, default=12)
    ap.add_argument("--target", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.target:
        asyncio.run(target_main(*args.target))
        return
    print("| tasks | snapshots | read per snapshot (p50 / p95) | per task | sampler CPU per snapshot | stopped per stack sample, tasks off / on | bytes per snapshot |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n in (10, 100, 1000):
        p = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--target", str(n), str(args.depth)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        try:
            assert p.stdout.readline().strip() == "ready"
            off = record(p.pid, args.secs, ["--no-tasks"])
            on = record(p.pid, args.secs, ["--task-interval", "100"])
        finally:
            p.kill()
            p.wait()
        snaps = sorted(on["snap_read_us"])
        k = max(len(snaps), 1)
        seen = max(on["tasks"]) if on["tasks"] else 0
        print(
            f"| {n} (read {seen}) | {len(snaps)} | {q(snaps, 0.5) / 1000:.2f} / {q(snaps, 0.95) / 1000:.2f} ms "
            f"| {q(snaps, 0.5) / max(seen, 1):.1f} µs "
            f"| {max(on['cpu_s'] - off['cpu_s'], 0) / k * 1000:.2f} ms "
            f"| {q(sorted(off['tick_read_us']), 0.5):.0f} / {q(sorted(on['tick_read_us']), 0.5):.0f} µs "
            f"| {max(on['bytes'] - off['bytes'], 0) / k:.0f} B |"
        )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
