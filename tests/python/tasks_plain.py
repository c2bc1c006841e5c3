"""asyncio tasks for loopprof's task-reading test on any CPython 3.8+ (stdlib only).

    python tasks_plain.py [uvloop]

Runs a loop (uvloop's when asked and importable) holding a known set of tasks: a parent
task named "fanout" that gathers five "worker-N" tasks; two of them hold the slots of an
asyncio.Semaphore(2) and sleep, three wait to acquire it; a "consumer" task waits on an
empty asyncio.Queue. Prints "ready" (flushed) once every task is in place, then sleeps
until killed.
"""

import asyncio
import sys


async def worker(sem):
    async with sem:
        await asyncio.sleep(3600)


async def fanout():
    sem = asyncio.Semaphore(2)
    workers = []
    for i in range(5):
        t = asyncio.ensure_future(worker(sem))
        t.set_name("worker-%d" % i)
        workers.append(t)
    await asyncio.gather(*workers)


async def consumer(queue):
    await queue.get()


async def main():
    queue = asyncio.Queue()
    asyncio.ensure_future(fanout()).set_name("fanout")
    asyncio.ensure_future(consumer(queue)).set_name("consumer")
    await asyncio.sleep(0.2)
    print("ready", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    if sys.argv[1:] == ["uvloop"]:
        import uvloop

        uvloop.install()
    asyncio.run(main())
