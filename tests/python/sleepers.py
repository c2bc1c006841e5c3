"""Threads that sleep, for loopprof's test of how threads are sampled when they do not run.

One thread alternates two sleeps, 60 ms in `long_wait` and 20 ms in `short_wait`; one sleeps
for minutes; the main thread sleeps a second at a time. Prints "ready" once they run.
Standard library only; runs until killed.
"""

import threading
import time


def long_wait():
    time.sleep(0.060)


def short_wait():
    time.sleep(0.020)


def alternate():
    while True:
        long_wait()
        short_wait()


def idle():
    while True:
        time.sleep(600)


threading.Thread(target=alternate, name="alternating", daemon=True).start()
threading.Thread(target=idle, name="idle", daemon=True).start()
print("ready", flush=True)
while True:
    time.sleep(1)
