"""Fast evaluator of routing policies over generated fault schedules (issue 14), no k6, no sockets.

The real `Router`, `ProcessorView`, policies, `Dispatcher` and `PaymentQueue` run unchanged on an
asyncio loop whose clock is virtual (bench/virtual_loop.py): when nothing is ready the clock jumps
to the next timer, so a 60 s test runs as fast as the CPU can step its events (~0.6 s unscaled,
of which about half is the worker's own code).
Simulated processors follow SPEC.md §2: the delay, then 500 if failing, else store (422 when the
payment is already stored); 800 served at once and 500 waiting, beyond that 429; the health
endpoint read once per 5.1 s per processor, as the worker's poller does. The load follows §3:
virtual users ramp 1 -> 550 over 60 s, each posts and sleeps 1 s (~16.7 k payments).

    python3 bench/evaluate.py --seed 1000 --count 200 --jobs 2          # ~4.5 min on 2 cores
    python3 bench/evaluate.py --schedule official --policies profit
    python3 bench/evaluate.py --seed 2000 --per-class 6 --jobs 2 --compare-scale 0.25

`--scale` thins users and processor capacity together (senders, pacing and the hold count
too); probes, the circuit's restart limit and timeouts are absolute, so a scaled run is kinder
to a slow default than a full one: `--compare-scale` shows by how much, per class.

Per schedule and policy: net at the end (teardown: what our ledger holds, fees off); the audit
risk, the chance that a round of the consistency audit finds our books and the processors'
different (a payment stored between the two reads, or stored and not yet recorded by us: see
`audit_round_risk`); final, net less the 35 % fine times that chance (the score before its p99
bonus, which needs real HTTP); lag (money accepted but not processed by the end); fee rate; p99
of a payment's wait from acceptance to the answer that stored it. Per class: mean, median and
worst of final (of net with `--ignore-audit`) and of regret, the shortfall against the better of
the two baselines on the same schedule, in %.

The audit model was checked against real runs (`bench/official.py`, default at 1,600 ms from
15 s to the end): always-default 4 inconsistencies in 6 rounds, fallback-on-failure 3, where it
predicts a risk of 0.9996 for both.
"""

from __future__ import annotations

import argparse
import dataclasses
import asyncio
import json
import logging
import math
import multiprocessing
import statistics
import sys
import time
from collections import deque
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import schedule_gen  # noqa: E402
from virtual_loop import VirtualLoop  # noqa: E402
from rinha import clock  # noqa: E402
from rinha.worker.dispatcher import Dispatcher  # noqa: E402
from rinha.worker.processors import Outcome  # noqa: E402
from rinha.worker.queue import Payment, PaymentQueue  # noqa: E402
from rinha.worker.router import ProcessorView, Router, make_policy  # noqa: E402
from rinha.config import WorkerConfig  # noqa: E402

POLICIES = ("robust", "profit", "always-default", "fallback-on-failure")
BASELINES = ("always-default", "fallback-on-failure")
FEES = {"default": 0.05, "fallback": 0.15}
AMOUNT_CENTS = 1990
SERVED_AT_ONCE = 800
WAITING_MAX = 500
HEALTH_INTERVAL_S = 5.1
FEED_TICK_S = 0.01  # the API nodes' batches reach the worker at about this pace
# k6 lets each user finish its last iteration, the 1 s sleep after its POST included, before
# the teardown reads the summary that gets paid.
TEARDOWN_AFTER_LAST_POST_S = 1.0


def _settle(answer: asyncio.Future, status: int | None) -> None:
    if not answer.done():  # the caller may have given up on it, or been cancelled
        answer.set_result(status)


class SimProcessor:
    """One payment processor as SPEC.md §2 states it, on the loop's clock.

    A call is a future and a timer, not a task: `submit` takes the request, and the status lands
    on the call's future when the processor answers. The delay is the one set when service
    begins; failing and the stored set are read when it ends, as the real one does.
    """

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop, scale: float) -> None:
        self.name = name
        self.loop = loop
        self.delay_s = 0.0
        self.failing = False
        self.capacity = max(1, round(SERVED_AT_ONCE * scale))
        self.waiting_max = max(1, round(WAITING_MAX * scale))
        self.serving = 0
        self.waiting: deque[tuple[str, int, asyncio.Future]] = deque()
        self.stored: dict[str, tuple[int, float]] = {}   # correlationId -> (requestedAt, stored at), ms
        self.rejected_busy = 0

    def submit(self, correlation_id: str, requested_at: int, answer: asyncio.Future) -> float | None:
        """One POST /payments; its status is set on `answer`. Returns when that will be if it
        is known now (served at once, or refused), None while the call waits for a slot."""
        if self.serving < self.capacity:
            self.serving += 1
            return self._serve(correlation_id, requested_at, answer)
        if len(self.waiting) < self.waiting_max:
            self.waiting.append((correlation_id, requested_at, answer))
            return None
        self.rejected_busy += 1
        self.loop.call_soon(_settle, answer, 429)
        return self.loop.time()

    async def handle(self, correlation_id: str, requested_at: int) -> int:
        """Status of one POST /payments, awaited (for tests and one-off calls)."""
        answer = self.loop.create_future()
        self.submit(correlation_id, requested_at, answer)
        return await answer

    def _serve(self, correlation_id: str, requested_at: int, answer: asyncio.Future) -> float:
        loop = self.loop
        if self.delay_s:
            at = loop.time() + self.delay_s
            loop.call_at(at, self._answer, correlation_id, requested_at, answer)
            return at
        loop.call_soon(self._answer, correlation_id, requested_at, answer)  # answered, but not within the call
        return loop.time()

    def _answer(self, correlation_id: str, requested_at: int, answer: asyncio.Future) -> None:
        if self.failing:
            status = 500
        elif correlation_id in self.stored:
            status = 422
        else:
            self.stored[correlation_id] = (requested_at, self.loop.time() * 1000)
            status = 200
        _settle(answer, status)
        if self.waiting:
            self._serve(*self.waiting.popleft())  # the slot is handed over, serving stays counted
        else:
            self.serving -= 1


class SimClient:
    """What `ProcessorClient.pay` returns, against a `SimProcessor`: an abandoned call goes on."""

    def __init__(self, processor: SimProcessor) -> None:
        self.name = processor.name
        self.processor = processor
        self.loop = processor.loop

    async def pay(self, payment: Payment, timeout_s: float | None = None) -> tuple[Outcome, float]:
        loop = self.loop
        started = loop.time()
        answer = loop.create_future()
        answer_at = self.processor.submit(payment.correlation_id, payment.requested_at, answer)
        give_up = None
        if timeout_s is not None and (answer_at is None or answer_at > started + timeout_s):
            give_up = loop.call_at(started + timeout_s, _settle, answer, None)
        status = await answer
        if give_up is not None:
            give_up.cancel()
        elapsed = loop.time() - started
        if status is None:
            return Outcome.UNKNOWN, elapsed  # timed out: the processor may still store it
        if status < 300:
            return Outcome.STORED, elapsed
        if status == 422:
            return Outcome.DUPLICATE, elapsed
        return Outcome.FAILED, elapsed


class MemoryStore:
    """The part of rinha/worker/store/base.py's Store the dispatcher uses, in memory: the ledger.

    Its calls never wait, so each returns one future already done rather than a coroutine:
    awaiting it goes on at once, as awaiting a coroutine that never suspends does."""

    keeps_pins = False  # one worker: a payment surely not stored is free to go anywhere

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.ledger: dict[str, list[float]] = {"default": [], "fallback": []}  # wait of each stored payment
        self.recorded: dict[str, dict[str, float]] = {"default": {}, "fallback": {}}  # correlationId -> ms
        self.cents = {"default": 0, "fallback": 0}
        self.loop = loop
        self.done = loop.create_future()
        self.done.set_result(None)

    def intent(self, payment: Payment) -> asyncio.Future:
        return self.done

    def stored(self, payment: Payment) -> asyncio.Future:
        now = self.loop.time()
        self.ledger[payment.processor].append(now - payment.accepted_at)
        self.recorded[payment.processor][payment.correlation_id] = now * 1000
        self.cents[payment.processor] += payment.cents
        return self.done

    def failed(self, payment: Payment) -> asyncio.Future:
        return self.done

    def stored_count(self, processor: str) -> int:
        return len(self.ledger[processor])


def arrivals(duration_s: float, max_vus: int, scale: float) -> list[float]:
    """When each POST is made: VU i starts on the ramp and posts every second until the end."""
    vus = max(1, round(max_vus * scale))
    times = []
    for i in range(vus):
        t = duration_s * i / max(1, vus - 1) if vus > 1 else 0.0
        while t < duration_s:
            times.append(t)
            t += 1.0
    times.sort()
    return times


def settings_at(steps: list[dict], t: float) -> dict | None:
    current = None
    for step in steps:
        if step["at"] <= t:
            current = step
    return current


# The consistency audit (SPEC.md §3): rounds at 0, 10, ... 50 s read both processors' books and our
# summary, in parallel, for requestedAt in [now - 15 s, now - 1.5 s]; any difference costs 35 %.
AUDIT_EVERY_MS = 10_000
AUDIT_FROM_AGO_MS = 15_000
AUDIT_TO_AGO_MS = 1_500
AUDIT_FINE = 0.35
# Our summary is read after the processors' by about its settle wait (it waits for calls in flight
# inside the window) plus a millisecond of reading; a payment stored in between is a difference.
AUDIT_READ_GAP_EXTRA_MS = 1.0
# A round's instant is not in step with the simulation (its feed ticks, calls that start together
# and so end together): each round is judged over every instant of a 2 s span around it.
AUDIT_SPAN_MS = 2_000


def audit_late_payments(processors: dict, store: "MemoryStore") -> list[tuple[int, float, float]]:
    """(requestedAt, stored by the processor, recorded by us) of every stored payment that an audit
    could see differently on the two sides: one stored or recorded more than 1.5 s after its
    requestedAt (or never recorded by us: inf). Any other payment is on both books by the time an
    audit window can hold it."""
    late = []
    for name, processor in processors.items():
        recorded = store.recorded[name]
        for cid, (requested_at, stored_at) in processor.stored.items():
            recorded_at = recorded.get(cid, math.inf)
            if max(stored_at, recorded_at) - requested_at > AUDIT_TO_AGO_MS:
                late.append((requested_at, stored_at, recorded_at))
    return late


def _overlap(lo: float, hi: float, *bounds: tuple[float, float]) -> tuple[float, float]:
    for b_lo, b_hi in bounds:
        lo, hi = max(lo, b_lo), min(hi, b_hi)
    return lo, hi


def audit_round_risk(late: list[tuple[int, float, float]], at_ms: float, gap_ms: float) -> float:
    """The chance that a round near `at_ms`, reading the processors' books and ours `gap_ms`
    later, finds them different. The round's instant is taken as uniform over AUDIT_SPAN_MS:
    - a payment the processor stored that we record later than `gap_ms` after (a call we gave up
      on, answered 422 on a resend) is a difference at every instant in between: the share of
      the span covered by such instants;
    - a payment stored within `gap_ms` of being recorded is a difference only if it is stored
      between the two reads: the expected count of those is the share of the span where each one
      would be caught, summed, and completions that close together are taken as independent
      (Poisson), as real ones are, not in step as the simulated ones."""
    lo_span, hi_span = at_ms - AUDIT_SPAN_MS / 2, at_ms + AUDIT_SPAN_MS / 2
    expected_races = 0.0
    held = []
    for ra, st, rec in late:
        # instants `now` at which the window [now - 15 s, now - 1.5 s] holds the payment
        window = (ra + AUDIT_TO_AGO_MS, ra + AUDIT_FROM_AGO_MS)
        if rec - st > gap_ms:
            lo, hi = _overlap(lo_span, hi_span, window, (st, rec - gap_ms))
            if hi > lo:
                held.append((lo, hi))
        else:
            lo, hi = _overlap(lo_span, hi_span, window, (rec - gap_ms, st))
            if hi > lo:
                expected_races += (hi - lo) / AUDIT_SPAN_MS
    covered, reach = 0.0, -math.inf
    for lo, hi in sorted(held):
        lo = max(lo, reach)
        if hi > lo:
            covered += hi - lo
            reach = hi
    return 1.0 - (1.0 - covered / AUDIT_SPAN_MS) * math.exp(-expected_races)


def audit_risk(late: list[tuple[int, float, float]], start_ms: float, duration_s: float, gap_ms: float) -> float:
    """The chance that at least one of the test's audit rounds finds a difference."""
    clean = 1.0
    for at_ms in range(0, int(duration_s * 1000), AUDIT_EVERY_MS):
        clean *= 1.0 - audit_round_risk(late, start_ms + at_ms, gap_ms)
    return 1.0 - clean


async def simulate(schedule: dict, policy_name: str, *, scale: float = 1.0, duration_s: float = 60.0,
                   max_vus: int = 550, config: WorkerConfig | None = None) -> dict:
    loop = asyncio.get_running_loop()
    config = config or WorkerConfig(policy=policy_name, link_secret="x")
    processors = {name: SimProcessor(name, loop, scale) for name in ("default", "fallback")}
    max_senders = max(config.senders, round(config.max_senders * scale))
    views = [ProcessorView(SimClient(processors[name]), failure_threshold=config.failure_threshold,
                           probe_interval_s=config.probe_interval_ms / 1000, max_probes=config.max_probes,
                           slow_s=config.slow_threshold_s(), max_in_flight=max_senders,
                           request_timeout_s=config.request_timeout_s) for name in ("default", "fallback")]
    router = Router(*views, make_policy(policy_name, config.fallback_after_s, config.hold_ms / 1000,
                                        round(config.hold_payments * scale) or 1),
                    max_calls_per_s=config.max_calls_per_s * scale)
    queue = PaymentQueue()
    store = MemoryStore(loop)
    dispatcher = Dispatcher(queue, router, store, senders=config.senders, max_senders=max_senders)
    router.start()
    dispatcher.start()
    start = loop.time()

    async def faults():
        for step in sorted(schedule["steps"], key=lambda s: s["at"]):
            await asyncio.sleep(max(0.0, start + step["at"] - loop.time()))
            for name in ("default", "fallback"):
                processors[name].delay_s = step[name]["delay"] / 1000
                processors[name].failing = step[name]["failure"]

    async def health(name: str):
        while True:
            p = processors[name]
            router.health_report(name, p.failing, round(p.delay_s * 1000))
            await asyncio.sleep(HEALTH_INTERVAL_S)

    tasks = [loop.create_task(faults()), loop.create_task(health("default")), loop.create_task(health("fallback"))]
    times = arrivals(duration_s, max_vus, scale)
    fed = 0

    def feed():
        """One tick of the API nodes' batches: every POST made by now is queued."""
        nonlocal fed
        now = loop.time() - start
        while fed < len(times) and times[fed] <= now:
            payment = Payment(f"p{fed}", AMOUNT_CENTS)
            payment.accepted_at = loop.time()
            queue.put(payment)
            fed += 1
        if fed < len(times):
            loop.call_at(loop.time() + FEED_TICK_S, feed)
        else:
            loop.call_at(loop.time() + FEED_TICK_S, fed_all.set_result, None)  # the last batch gets its tick

    fed_all = loop.create_future()
    feed()
    await fed_all
    await asyncio.sleep(max(0.0, start + times[-1] + TEARDOWN_AFTER_LAST_POST_S - loop.time()))
    # Teardown: the summary the worker answers is what gets paid. Its wait for the calls under
    # way in the last `settle_recent_ms` is the real one (requestedAt is on the virtual clock).
    recent_since = clock.now_ms() - int(config.settle_recent_ms) if config.settle_recent_ms > 0 else None
    await dispatcher.settle(None, clock.now_ms(), config.settle_timeout_ms / 1000, recent_since)
    cents = dict(store.cents)
    risk = audit_risk(audit_late_payments(processors, store), start * 1000, duration_s,
                      config.settle_timeout_ms + AUDIT_READ_GAP_EXTRA_MS)
    waits = sorted(store.ledger["default"] + store.ledger["fallback"])
    counts = {name: len(store.ledger[name]) for name in ("default", "fallback")}
    for task in tasks:
        task.cancel()
    await router.stop()
    for task in dispatcher._tasks:
        task.cancel()
    await asyncio.gather(*tasks, *dispatcher._tasks, return_exceptions=True)
    gross = sum(cents.values()) / 100
    users_scale = max(1, round(max_vus * scale)) / max_vus
    fees = sum(FEES[name] * c for name, c in cents.items()) / 100
    processed = sum(counts.values())
    return {
        "schedule": schedule["name"], "class": schedule.get("class", "named"), "policy": policy_name,
        "scale": scale, "accepted": fed, "default": counts["default"], "fallback": counts["fallback"],
        # Money back at full scale by the load actually thinned (users are whole: 550 x 0.25 is 138).
        "net": round((gross - fees) / users_scale, 2),
        # What the score pays before its p99 bonus: net less the audit's fine, times its chance.
        "final": round((gross - fees) * (1 - AUDIT_FINE * risk) / users_scale, 2), "audit_risk": round(risk, 4),
        "lag": round((fed - processed) * AMOUNT_CENTS / 100 / users_scale, 2),
        "lag_payments": fed - processed,
        "fee_rate": round(fees / gross, 4) if gross else 0.0,
        "wait_p99_s": round(waits[min(len(waits) - 1, int(0.99 * len(waits)))], 3) if waits else None,
        "busy_429": processors["default"].rejected_busy + processors["fallback"].rejected_busy,
    }


def run_one(job: tuple) -> dict:
    schedule, policy, scale, *rest = job
    settings = rest[0] if rest else {}
    logging.disable(logging.CRITICAL)
    loop = VirtualLoop()
    wall_ms = clock.now_ms
    clock.now_ms = lambda: int(loop.time() * 1000)  # the requestedAt the dispatcher stamps
    try:
        started = time.process_time()
        config = WorkerConfig(policy=policy, link_secret="x", **settings)
        result = loop.run_until_complete(simulate(schedule, policy, scale=scale, config=config))
        result["cpu_s"] = round(time.process_time() - started, 2)
        return result
    finally:
        clock.now_ms = wall_ms
        loop.close()


def load_schedule(name: str) -> dict:
    generated = schedule_gen.parse_name(name)
    if generated is not None:
        return generated
    path = Path(name) if name.endswith(".json") else BENCH / "schedules" / f"{name}.json"
    schedule = json.loads(path.read_text())
    schedule.setdefault("class", "named")
    return schedule


def add_regret(results: list[dict], key: str = "final") -> None:
    """Each result's regret: its shortfall of `key` (final, or net with the audit ignored) against
    the better baseline on its schedule, in %."""
    by = {(r["schedule"], r["policy"]): r for r in results}
    for r in results:
        best = max((by[(r["schedule"], b)][key] for b in BASELINES if (r["schedule"], b) in by), default=None)
        r["regret"] = round(100 * max(0.0, best - r[key]) / best, 2) if best else 0.0


def summarize(results: list[dict], policies: list[str], key: str = "final") -> str:
    """Per class and policy: mean, median and worst of `key` (final: net less the audit's expected
    fine; or net) and of regret; mean and worst audit risk; mean lag (money, and % of the payments
    accepted); fee rate; the p99 wait of a schedule, median and worst over them."""
    add_regret(results, key)
    classes = sorted({r["class"] for r in results})
    lines = [f"{'class':<15} {'policy':<20} {'n':>4} {key + ' mean':>10} {'median':>10} {'worst':>10} "
             f"{'regret% mean':>12} {'median':>7} {'worst':>7} {'audit% mean':>11} {'worst':>6} {'lag mean':>9} {'lag%':>6} {'fee%':>5} "
             f"{'wait p99 s median':>17} {'worst':>7}"]
    for cls in classes + ["ALL"]:
        for policy in policies:
            rows = [r for r in results if r["policy"] == policy and (cls == "ALL" or r["class"] == cls)]
            if not rows:
                continue
            nets = [r[key] for r in rows]
            risks = [100 * r["audit_risk"] for r in rows]
            regrets = [r["regret"] for r in rows]
            lag_pct = statistics.mean(100 * r["lag_payments"] / max(1, r["accepted"]) for r in rows)
            waits = [r["wait_p99_s"] for r in rows if r["wait_p99_s"] is not None] or [math.nan]
            lines.append(f"{cls:<15} {policy:<20} {len(rows):>4} {statistics.mean(nets):>10,.0f} "
                         f"{statistics.median(nets):>10,.0f} {min(nets):>10,.0f} {statistics.mean(regrets):>12.2f} "
                         f"{statistics.median(regrets):>7.2f} {max(regrets):>7.2f} "
                         f"{statistics.mean(risks):>11.1f} {max(risks):>6.1f} "
                         f"{statistics.mean(r['lag'] for r in rows):>9,.0f} {lag_pct:>6.2f} "
                         f"{100 * statistics.mean(r['fee_rate'] for r in rows):>5.1f} "
                         f"{statistics.median(waits):>17.3f} {max(waits):>7.3f}")
        lines.append("")
    return "\n".join(lines)


def compare_scales(full: list[dict], scaled: list[dict], policies: list[str], scale: float) -> str:
    """How far a scaled run's figures are from the unscaled ones, per class and policy: the
    relative difference of net (mean and worst of |scaled - full| / full) and the difference of
    lag in points of the payments accepted (a relative difference of a lag that is ~0 means nothing)."""
    by_full = {(r["schedule"], r["policy"]): r for r in full}
    pairs = [(by_full[(r["schedule"], r["policy"])], r) for r in scaled if (r["schedule"], r["policy"]) in by_full]
    classes = sorted({f["class"] for f, _ in pairs})
    lines = [f"scale {scale:g} against scale 1: net as |scaled - full| / full; lag in % of the payments accepted",
             f"{'class':<15} {'policy':<20} {'n':>4} {'net@1 mean':>11} {f'net@{scale:g} mean':>13} "
             f"{'|dnet|% mean':>12} {'worst':>7} {'lag%@1':>7} {f'lag%@{scale:g}':>9} {'|dlag| pts mean':>15} {'worst':>7}"]

    def lag_pct(r):
        return 100 * r["lag_payments"] / max(1, r["accepted"])

    for cls in classes + ["ALL"]:
        for policy in policies:
            rows = [(f, s) for f, s in pairs if f["policy"] == policy and (cls == "ALL" or f["class"] == cls)]
            if not rows:
                continue
            dnet = [100 * abs(s["net"] - f["net"]) / f["net"] if f["net"] else 0.0 for f, s in rows]
            dlag = [abs(lag_pct(s) - lag_pct(f)) for f, s in rows]
            lines.append(f"{cls:<15} {policy:<20} {len(rows):>4} {statistics.mean(f['net'] for f, _ in rows):>11,.0f} "
                         f"{statistics.mean(s['net'] for _, s in rows):>13,.0f} {statistics.mean(dnet):>12.2f} "
                         f"{max(dnet):>7.2f} {statistics.mean(lag_pct(f) for f, _ in rows):>7.2f} "
                         f"{statistics.mean(lag_pct(s) for _, s in rows):>9.2f} {statistics.mean(dlag):>15.2f} "
                         f"{max(dlag):>7.2f}")
        lines.append("")
    return "\n".join(lines)


def run_all(jobs: list[tuple], processes: int, per_schedule: bool = False) -> list[dict]:
    """Every job on a pool of processes, results in the jobs' order."""
    results = []
    started = time.monotonic()
    with multiprocessing.Pool(processes) as pool:
        for n, result in enumerate(pool.imap_unordered(run_one, jobs, chunksize=1), 1):
            results.append(result)
            if per_schedule:
                print(json.dumps(result), flush=True)
            elif n % 50 == 0 or n == len(jobs):
                print(f"  {n}/{len(jobs)} runs, {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    order = {(s["name"], p, scale): i for i, (s, p, scale, *_) in enumerate(jobs)}
    results.sort(key=lambda r: order[(r["schedule"], r["policy"], r["scale"])])
    return results


def pick_schedules(args: argparse.Namespace) -> list[dict]:
    if args.schedule:
        return [load_schedule(n) for n in args.schedule]
    if args.per_class:
        return [schedule_gen.generate(seed, cls) for cls in schedule_gen.CLASSES
                for seed in range(args.seed, args.seed + args.per_class)]
    return schedule_gen.family(args.seed, args.count)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1, help="first seed of the generated family (default 1)")
    parser.add_argument("--count", type=int, default=20, help="generated schedules, seeds seed..seed+count-1")
    parser.add_argument("--schedule", action="append", default=[],
                        help="a named schedule (bench/schedules/, a JSON path, gen:...) instead of the family; repeatable")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="users AND processor capacity (and senders, pacing, hold count) scaled together")
    parser.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                        help="a worker setting (rinha worker's option, e.g. hold_ms=1000) for every policy; repeatable")
    parser.add_argument("--per-class", type=int, default=0, metavar="N",
                        help="instead of --count: N schedules of each class (seeds seed..seed+N-1, the class forced)")
    parser.add_argument("--compare-scale", type=float, default=None, metavar="SCALE",
                        help="run every schedule at scale 1 and at SCALE, and print how far apart they are")
    parser.add_argument("--ignore-audit", action="store_true",
                        help="rank by net (gross less fees) instead of final (net less the audit's expected fine)")
    parser.add_argument("--per-schedule", action="store_true", help="print one line per schedule and policy")
    parser.add_argument("--json", type=Path, default=None, help="write every result here")
    args = parser.parse_args()
    policies = args.policies.split(",")
    schedules = pick_schedules(args)
    fields = {f.name: f.type for f in dataclasses.fields(WorkerConfig)}
    settings = {}
    for item in args.set:
        key, _, value = item.partition("=")
        settings[key] = {"int": int, "float": float}.get(fields[key], str)(value)
    scales = [args.scale] if args.compare_scale is None else [1.0, args.compare_scale]
    jobs = [(s, p, scale, settings) for scale in scales for s in schedules for p in policies]
    results = run_all(jobs, args.jobs, args.per_schedule)
    if args.compare_scale is None:
        print(summarize(results, policies, "net" if args.ignore_audit else "final"))
    else:
        full = [r for r in results if r["scale"] == 1.0]
        print(compare_scales(full, [r for r in results if r["scale"] == args.compare_scale], policies, args.compare_scale))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
