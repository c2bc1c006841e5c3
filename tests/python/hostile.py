"""Targets that do odd things, for loopprof's robustness tests (tests/live_robustness.rs).

Every mode runs an asyncio event loop on the main thread whose only callback is a ticker
(`ticker`, awaiting a 10 ms sleep), so a test can check the loop's own samples survive what
the rest of the process does. Prints "ready" on stdout once the odd part has started.

  churn          a thread starting batches of 20 short-lived threads, back to back
  deep DEPTH     after 1 s, a thread recursing DEPTH frames deep (`dive`) and sleeping there
  threads N      N idle Python threads, each blocked on an Event
  exec           after 1.5 s, os.execv of the same interpreter running `loop` mode
  fork           after 1 s, os.fork: the child runs its own loop (`child_ticker`) for 2 s
  names DIR      a thread named with a lone surrogate and markup, sleeping in `odd_sleep`
                 of a module written under DIR/<non-UTF-8 bytes>/
  remap          maps a code page of the python binary and of libpython (when shared) a
                 second time, executable, as libffi's static trampolines do after the first
                 ctypes callback in a Python that links libffi statically (py-spy #865)
  loop           just the loop
"""

import asyncio
import mmap
import os
import sys
import threading
import time

MODE = sys.argv[1] if len(sys.argv) > 1 else "loop"


async def ticker():
    while True:
        await asyncio.sleep(0.01)


def short_job():
    # Long enough (about a millisecond) that a 100 Hz sampler sees some of these threads
    # alive; a job of a few microseconds is missed entirely on a fast machine.
    sum(range(200))
    time.sleep(0.001)


def churn():
    while True:
        batch = [threading.Thread(target=short_job, name="short") for _ in range(20)]
        for t in batch:
            t.start()
        for t in batch:
            t.join()


def dive(n):
    if n <= 0:
        time.sleep(3600)
        return 0
    return dive(n - 1) + 1


def deep(depth):
    time.sleep(1.0)
    dive(depth)


def hold(ev):
    ev.wait()


def exec_later():
    time.sleep(1.5)
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, os.path.abspath(__file__), "loop", "exec'd"])


async def child_ticker():
    while True:
        await asyncio.sleep(0.01)


def fork_later():
    time.sleep(1.0)
    if os.fork() == 0:
        try:
            asyncio.run(asyncio.wait_for(child_ticker(), 2.0))
        except asyncio.TimeoutError:
            pass
        os._exit(0)


def odd_names(base):
    # A directory whose name is not UTF-8 (bytes 0xff 0xfe), holding a module.
    d = os.path.join(os.fsencode(base), b"odd-\xff\xfe")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, b"odd_mod.py"), "w") as f:
        f.write("import time\n\ndef odd_sleep():\n    while True:\n        time.sleep(0.05)\n")
    sys.path.insert(0, os.fsdecode(d))
    import odd_mod

    name = "odd-\udcff-<script>alert(1)</script>"
    threading.Thread(target=odd_mod.odd_sleep, name=name, daemon=True).start()


REMAPPED = []


def remap():
    paths = {os.path.realpath(sys.executable)}
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if "libpython" in path:
                paths.add(path)
    for path in sorted(paths):
        with open(path, "rb") as f:
            REMAPPED.append(
                mmap.mmap(f.fileno(), mmap.PAGESIZE, flags=mmap.MAP_PRIVATE,
                          prot=mmap.PROT_READ | mmap.PROT_EXEC, offset=mmap.PAGESIZE)
            )


def main():
    if MODE == "churn":
        threading.Thread(target=churn, name="spawner", daemon=True).start()
    elif MODE == "deep":
        depth = int(sys.argv[2])
        sys.setrecursionlimit(depth + 1000)
        threading.stack_size(256 * 1024 * 1024)
        threading.Thread(target=deep, args=(depth,), name="deep", daemon=True).start()
        threading.stack_size(0)
    elif MODE == "threads":
        ev = threading.Event()
        for i in range(int(sys.argv[2])):
            threading.Thread(target=hold, args=(ev,), name=f"idle-{i}", daemon=True).start()
    elif MODE == "names":
        odd_names(sys.argv[2])
    elif MODE == "fork":
        threading.Thread(target=fork_later, name="forker", daemon=True).start()
    elif MODE == "remap":
        remap()
    elif MODE == "exec":
        threading.Thread(target=exec_later, name="execer", daemon=True).start()
    # The exec'd image says nothing: the test reading "ready" has closed its end.
    if sys.argv[2:3] != ["exec'd"]:
        print("ready", flush=True)
    asyncio.run(ticker())


if __name__ == "__main__":
    main()
