"""Ledger range queries at scale: insert N payments, then time the summary queries.

    python bench/ledger_bench.py [--payments 1000000] [--runs 5]

Timestamps mimic production: mostly increasing (~550 payments/s), 2 % arriving out of order by up
to 10 s (resends keep their original requestedAt). Prints, per run, the median and p99 time of the
auditor's query (a 13.5 s window), of a 70 s window (the teardown's), of a half-of-everything
window and of the unbounded summary; then the median over runs.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rinha.worker.ledger import Ledger  # noqa: E402

QUERIES = 2000


def build(payments: int, rng: random.Random) -> tuple[Ledger, int, int, float]:
    ledger = Ledger()
    start = 1_750_000_000_000
    now = start
    began = time.perf_counter()
    for _ in range(payments):
        now += rng.choice((1, 2, 2, 3))
        stamp = now - rng.randint(0, 10_000) if rng.random() < 0.02 else now
        ledger.record("default" if rng.random() < 0.95 else "fallback", stamp, 1990)
    return ledger, start, now, time.perf_counter() - began


def time_queries(ledger: Ledger, windows: list[tuple[int | None, int | None]]) -> tuple[float, float]:
    samples = []
    for lo, hi in windows:
        t0 = time.perf_counter()
        ledger.summary(lo, hi)
        samples.append((time.perf_counter() - t0) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payments", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(42)
    print(f"building a ledger of {args.payments:,} payments ...", flush=True)
    ledger, first, last, build_s = build(args.payments, rng)
    print(f"built in {build_s:.2f} s ({args.payments / build_s:,.0f} inserts/s)")
    kinds = {
        "audit 13.5 s": lambda: (lambda end: (end - 13_500, end))(rng.randint(first, last)),
        "teardown 70 s": lambda: (lambda end: (end - 70_000, end))(rng.randint(first, last)),
        "half of all": lambda: (lambda lo: (lo, lo + (last - first) // 2))(rng.randint(first, (first + last) // 2)),
        "unbounded": lambda: (None, None),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in kinds}
    for run in range(1, args.runs + 1):
        row = []
        for name, window in kinds.items():
            median, p99 = time_queries(ledger, [window() for _ in range(QUERIES)])
            results[name].append((median, p99))
            row.append(f"{name}: {median:.1f}/{p99:.1f}")
        print(f"run {run}: (median/p99 us) " + "  ".join(row), flush=True)
    print(f"\nmedian over {args.runs} runs, {QUERIES} queries each, {args.payments:,} payments:")
    for name, runs in results.items():
        print(f"  {name:<14} median {statistics.median(m for m, _ in runs):7.1f} us   "
              f"p99 {statistics.median(p for _, p in runs):7.1f} us")


if __name__ == "__main__":
    main()
