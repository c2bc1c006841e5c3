"""Targets that do odd things, for loopprof's robustness tests (tests/live_robustness.rs).

Every mode runs an asyncio event loop on the main thread whose only callback is a ticker
(`ticker`, awaiting a 10 ms sleep), so a test can check the loop's own samples survive what
the rest of the process does. Prints "ready" on stdout once the odd part has started.

  churn          a thread starting batches of 20 short-lived threads, back to back
  deep DEPTH     after 1 s, a thread recursing DEPTH frames deep (`dive`) and sleeping there
  threads N      N idle Python threads, each blocked on an Event
  exec           after 1.5 s, os.execv of the same interpreter running `loop` mode
  loop           just the loop
"""

import asyncio
import os
import sys
import threading
import time

MODE = sys.argv[1] if len(sys.argv) > 1 else "loop"


async def ticker():
    while True:
        await asyncio.sleep(0.01)


def short_job():
    sum(range(200))


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
    elif MODE == "exec":
        threading.Thread(target=exec_later, name="execer", daemon=True).start()
    print("ready", flush=True)
    asyncio.run(ticker())


if __name__ == "__main__":
    main()
