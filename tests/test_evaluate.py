"""The schedule generator and the evaluator's simulated world (bench/schedule_gen.py, bench/evaluate.py)."""

from __future__ import annotations

import asyncio
import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import evaluate  # noqa: E402
import schedule_gen  # noqa: E402


def test_the_same_seed_gives_the_same_schedule_and_classes_follow_their_shares():
    assert schedule_gen.generate(1234) == schedule_gen.generate(1234)
    assert schedule_gen.parse_name("gen:outage-to-end:7") == schedule_gen.generate(7, "outage-to-end")
    assert schedule_gen.generate(1) != schedule_gen.generate(2)
    n = 4000
    counts = collections.Counter(schedule_gen.generate(seed)["class"] for seed in range(n))
    for cls, share in schedule_gen.CLASSES.items():
        assert abs(counts[cls] / n - share) < 0.025, (cls, counts[cls] / n)


def test_generated_classes_have_the_faults_they_name():
    for seed in range(50):
        late = schedule_gen.generate(seed, "outage-to-end")["steps"][-1]
        assert late["default"]["failure"] and not late["fallback"]["failure"]
        flapping = schedule_gen.generate(seed, "flapping")["steps"]
        starts = sum(1 for a, b in zip(flapping, flapping[1:]) if b["default"]["failure"] and not a["default"]["failure"])
        assert starts >= 3
        slow = schedule_gen.generate(seed, "default-slow")["steps"]
        assert any(1000 <= s["default"]["delay"] <= 3000 for s in slow)
        assert schedule_gen.generate(seed, "no-fault")["steps"][-1]["default"] == {"delay": 0, "failure": False} \
            or len(schedule_gen.generate(seed, "no-fault")["steps"]) == 1


def run_virtual(coro):
    loop = evaluate.VirtualLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def test_the_simulated_processor_serves_800_queues_500_and_refuses_the_rest():
    async def scenario():
        loop = asyncio.get_running_loop()
        processor = evaluate.SimProcessor("default", loop, 1.0)
        processor.delay_s = 1.0
        started = loop.time()
        calls = [loop.create_task(processor.handle(f"p{i}", 0)) for i in range(1400)]
        statuses = await asyncio.gather(*calls)
        elapsed = loop.time() - started
        repeat = await processor.handle("p0", 0)
        processor.failing = True
        failing = await processor.handle("new", 0)
        return collections.Counter(statuses), elapsed, repeat, failing, len(processor.stored)
    statuses, elapsed, repeat, failing, stored = run_virtual(scenario())
    assert statuses == {200: 1300, 429: 100}
    assert 1.99 < elapsed < 2.01  # the 500 waiting ones were served once the first 800 ended
    assert repeat == 422 and failing == 500 and stored == 1300


def test_profit_on_the_official_schedule_keeps_every_payment_on_default_with_no_lag():
    result = evaluate.run_one((evaluate.load_schedule("official"), "profit", 1.0))
    assert result["accepted"] > 16_000
    assert result["default"] >= 0.999 * result["accepted"]
    assert result["lag_payments"] == 0


def test_robust_does_not_lose_the_payments_of_an_outage_to_the_end():
    schedule = schedule_gen.generate(3, "outage-to-end")
    robust = evaluate.run_one((schedule, "robust", 0.25))
    profit = evaluate.run_one((schedule, "profit", 0.25))
    assert robust["lag_payments"] <= 0.005 * robust["accepted"]
    assert robust["net"] > profit["net"]
