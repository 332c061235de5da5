"""The worker's store, driven directly (no HTTP, no processors): what it costs and how it scales.

    python bench/store_bench.py cpu   [--seconds 10] [--rate 1000]
    python bench/store_bench.py crash [--runs 3]
    python bench/store_bench.py scale [--payments 10000000] [--dir PATH]

cpu    CPU seconds per payment of the worker's store path (accept, intent, stored) at a steady
       rate (batches of 2 every 2 ms, 16 senders, each call taking 2 ms) for each sync policy and
       commit interval: process CPU (user + system) over payments, and commits per second.
crash  per sync policy: a child process accepts payments as fast as it can and prints how many
       it has acknowledged; it is killed with SIGKILL at a random moment, and the store, reopened,
       must hold every acknowledged payment (lost = acknowledged but missing).
scale  loads N payments through the store (~550 per second of requestedAt, 2 % late by up to
       10 s), then in a fresh process: start-up time and peak RSS (VmHWM) of opening it, and
       p50/p99 of summaries: the auditor's window from SQL (right after a restart), from memory
       (after 20 s of new payments), the teardown's 70 s window and the whole history.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rinha.worker.queue import Payment  # noqa: E402
from rinha.worker.store import SYNC_POLICIES, SqliteStore  # noqa: E402

START_MS = 1_750_000_000_000


def cid(i: int) -> str:
    h = f"{i:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


# cpu

async def steady(store: SqliteStore, seconds: float, rate: int) -> int:
    await store.open()
    queue: asyncio.Queue = asyncio.Queue()
    done = 0

    async def sender():
        nonlocal done
        while True:
            payment = await queue.get()
            payment.processor, payment.requested_at = "default", int(time.time() * 1000)
            await store.intent(payment)
            await asyncio.sleep(0.002)  # the processor's answer
            await store.stored(payment)
            done += 1

    async def batch(first: int, size: int):  # as the link does: one task per batch, ACKed when durable
        for payment in await store.accept([[cid(first + k), 1990] for k in range(size)]):
            queue.put_nowait(payment)

    loop = asyncio.get_running_loop()
    senders = [loop.create_task(sender()) for _ in range(16)]
    per_batch, interval = max(rate // 500, 1), 0.002
    n, began, batches = 0, time.monotonic(), set()
    while time.monotonic() - began < seconds:
        while n < (time.monotonic() - began) * rate:  # catch up if a sleep overslept
            task = loop.create_task(batch(n, per_batch))
            batches.add(task)
            task.add_done_callback(batches.discard)
            n += per_batch
        await asyncio.sleep(interval)
    while done < n:
        await asyncio.sleep(0.01)
    for task in senders:
        task.cancel()
    await asyncio.gather(*senders, return_exceptions=True)
    await store.close()
    return n


class NullStore(SqliteStore):
    """Keeps nothing: what the simulated worker loop costs by itself, to subtract."""

    async def open(self):
        return []

    async def accept(self, batch):
        return [Payment(correlation_id, cents) for correlation_id, cents in batch]

    async def intent(self, payment):
        pass

    async def stored(self, payment):
        pass

    async def close(self):
        pass


def run_cpu(args) -> None:
    folder = tempfile.mkdtemp(prefix="store-bench-", dir=args.dir)
    before = cpu_s()
    n = asyncio.run(steady(NullStore(folder), args.seconds, args.rate))
    loop_us = (cpu_s() - before) / n * 1e6
    shutil.rmtree(folder, ignore_errors=True)
    print(f"the simulated worker loop alone: {loop_us:.1f} us/payment ({n} payments); the rows below subtract it")
    print(f"{'sync':<8}{'commit ms':>10}{'payments':>10}{'CPU us/payment':>16}{'commits/s':>11}")
    for sync in ("normal", "full"):
        for interval in (1.0, 5.0, 20.0):
            folder = tempfile.mkdtemp(prefix="store-bench-", dir=args.dir)
            store = SqliteStore(folder, sync=sync, commit_interval_ms=interval)
            before, began = cpu_s(), time.monotonic()
            n = asyncio.run(steady(store, args.seconds, args.rate))
            used, wall = cpu_s() - before, time.monotonic() - began
            print(f"{sync:<8}{interval:>10}{n:>10}{used / n * 1e6 - loop_us:>16.1f}{store.commits / wall:>11.0f}", flush=True)
            shutil.rmtree(folder, ignore_errors=True)


# crash

async def accept_until_killed(folder: str, sync: str) -> None:
    store = SqliteStore(folder, sync=sync)
    await store.open()
    n = 0
    while True:
        fresh = await store.accept([[cid(n + k), 100] for k in range(50)])
        assert len(fresh) == 50
        n += 50
        print(n, flush=True)  # acknowledged: what an ACK would promise


def run_crash(args) -> None:
    rng = random.Random(1)
    print(f"{'sync':<8}{'run':>4}{'acknowledged':>14}{'in the store':>14}{'lost':>6}")
    for sync in SYNC_POLICIES:
        for run in range(1, args.runs + 1):
            folder = tempfile.mkdtemp(prefix="store-crash-", dir=args.dir)
            child = subprocess.Popen([sys.executable, __file__, "crash-child", folder, sync], stdout=subprocess.PIPE, text=True)
            deadline = time.monotonic() + rng.uniform(1.0, 3.0)
            acknowledged = 0
            for line in child.stdout:
                acknowledged = int(line)
                if time.monotonic() > deadline:
                    break
            child.send_signal(signal.SIGKILL)
            child.wait()
            for line in child.stdout:  # printed before the kill landed: acknowledged too
                acknowledged = int(line)
            store = SqliteStore(folder)
            owed = asyncio.run(store.open())
            ids = {p.correlation_id for p in owed}
            lost = sum(1 for i in range(acknowledged) if cid(i) not in ids)
            asyncio.run(store.close())
            print(f"{sync:<8}{run:>4}{acknowledged:>14}{len(ids):>14}{lost:>6}", flush=True)
            shutil.rmtree(folder, ignore_errors=True)


# scale

async def load(folder: str, payments: int, rng: random.Random) -> int:
    store = SqliteStore(folder, commit_interval_ms=0)
    await store.open()
    batch, n, newest = 10_000, 0, START_MS
    began = time.monotonic()
    while n < payments:
        size = min(batch, payments - n)
        fresh = await store.accept([[cid(n + k), rng.randrange(1, 100_000)] for k in range(size)])
        for k, payment in enumerate(fresh):
            ms = START_MS + (n + k) * 1000 // 550
            if rng.random() < 0.02:
                ms -= rng.randrange(0, 10_000)  # a resend keeps its old requestedAt
            payment.processor, payment.requested_at = ("default" if rng.random() < 0.9 else "fallback"), ms
            newest = max(newest, ms)
        await asyncio.gather(*(store.intent(p) for p in fresh))
        for payment in fresh:
            await store.stored(payment)
        n += size
        if n % 1_000_000 == 0:
            print(f"  loaded {n:,} in {time.monotonic() - began:.0f} s", flush=True)
    await store.close()
    return newest


def percentiles(times: list[float]) -> str:
    times = sorted(times)
    return f"p50 {statistics.median(times) * 1000:.3f} ms, p99 {times[int(len(times) * 0.99) - 1] * 1000:.3f} ms"


async def measure(folder: str, newest: int, queries: int) -> dict:
    began = time.perf_counter()
    store = SqliteStore(folder)
    owed = await store.open()
    startup = time.perf_counter() - began
    newest = max(newest, store.recent.horizon - 1)  # an earlier measure added its 20 s of payments
    out = {"startup_s": round(startup, 3), "owed": len(owed), "stored": sum(store.counts.values()),
           "peak_rss_after_open_mb": round(peak_rss_mb(), 1)}
    rng = random.Random(5)

    async def timed(window) -> list[float]:
        times = []
        for _ in range(queries):
            start, end = window()
            t = time.perf_counter()
            await store.summary(start, end)
            times.append(time.perf_counter() - t)
        return times

    def auditor():
        now = newest - rng.randrange(0, 60_000)
        return now - 15_000, now - 1_500

    def teardown():
        now = newest - rng.randrange(0, 60_000)
        return now - 70_000, now

    def anywhere():
        lo = rng.randrange(START_MS, newest)
        return lo, lo + rng.randrange(0, newest - lo)

    assert not store.recent.covers(newest - 15_000)  # right after a restart: SQL answers
    out["auditor_window_sql"] = percentiles(await timed(auditor))
    out["teardown_window_sql"] = percentiles(await timed(teardown))
    out["random_window_sql"] = percentiles(await timed(anywhere))
    out["whole_history_sql"] = percentiles(await timed(lambda: (None, None)))
    # 20 s of new payments at 550/s, then the auditor's window over them comes from memory.
    first = 10 ** 12 + (newest - START_MS) * 1000  # ids no earlier measure used
    fresh = await store.accept([[cid(first + k), 1990] for k in range(11_000)])
    for k, payment in enumerate(fresh):
        payment.processor, payment.requested_at = "default", newest + 1 + k * 1000 // 550
    await asyncio.gather(*(store.intent(p) for p in fresh))
    for payment in fresh:
        await store.stored(payment)
    end = newest + 20_000
    assert store.recent.covers(end - 15_000)
    times = []
    for _ in range(queries):
        now = end - rng.randrange(0, 3_000)
        t = time.perf_counter()
        await store.summary(now - 15_000, now - 1_500)
        times.append(time.perf_counter() - t)
    out["auditor_window_memory"] = percentiles(times)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    await store.close()
    return out


def run_scale(args) -> None:
    folder = Path(args.dir or tempfile.mkdtemp(prefix="store-scale-")) / "data"
    meta = folder / "bench.json"
    if meta.exists() and json.loads(meta.read_text())["payments"] == args.payments:
        newest = json.loads(meta.read_text())["newest"]
        print(f"reusing {args.payments:,} payments in {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        began = time.monotonic()
        newest = asyncio.run(load(str(folder), args.payments, random.Random(3)))
        meta.write_text(json.dumps({"payments": args.payments, "newest": newest}))
        print(f"loaded {args.payments:,} payments in {time.monotonic() - began:.0f} s")
    size = sum(f.stat().st_size for f in folder.glob("rinha.sqlite3*"))
    print(f"on disk: {size / 1e6:.0f} MB, {size / args.payments:.0f} bytes per payment")
    # A fresh process: its peak RSS is the start-up's, not the loader's.
    result = subprocess.run([sys.executable, __file__, "scale-child", str(folder), str(newest), str(args.queries)],
                            capture_output=True, text=True, check=True)
    for key, value in json.loads(result.stdout).items():
        print(f"  {key}: {value}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "crash-child":
        asyncio.run(accept_until_killed(sys.argv[2], sys.argv[3]))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "scale-child":
        print(json.dumps(asyncio.run(measure(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("cpu", "crash", "scale"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--payments", type=int, default=10_000_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--dir", default=None, help="where the databases go (default: a temporary folder)")
    args = parser.parse_args()
    {"cpu": run_cpu, "crash": run_crash, "scale": run_scale}[args.mode](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
