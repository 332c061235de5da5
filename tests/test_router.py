"""Routing decisions: circuit breaker, slowness, concurrency limit and the three policies.

These drive `ProcessorView` and the policies with explicit times; the end-to-end behaviour
against real emulators is in test_dispatch.py.
"""

from __future__ import annotations

import pytest

from conftest import new_id
from rinha.worker.processors import Outcome, ProcessorClient
from rinha.worker.queue import Payment
from rinha.worker.router import (RESTART_LIMIT, TIMEOUT_FLOOR_S, AlwaysDefaultPolicy, FallbackOnFailurePolicy,
                                 ProcessorView, ProfitPolicy, Router, make_policy)


def view(name: str, **overrides) -> ProcessorView:
    settings = dict(failure_threshold=3, probe_interval_s=0.2, max_probes=2, slow_s=1.0, max_in_flight=64,
                    request_timeout_s=10.0)
    settings.update(overrides)
    return ProcessorView(ProcessorClient(name, "http://127.0.0.1:9", connections=1, timeout_s=1), **settings)


def fail(v: ProcessorView, now: float, outcome: Outcome = Outcome.FAILED) -> None:
    payment = Payment(new_id(), 1)
    v.started(payment, now)
    v.finished(payment, outcome, 0.01, now)
    v.refresh(now)


def succeed(v: ProcessorView, now: float, elapsed: float = 0.01) -> None:
    payment = Payment(new_id(), 1)
    v.started(payment, now)
    v.finished(payment, Outcome.STORED, elapsed, now)
    v.refresh(now)


def test_consecutive_failures_open_the_circuit_and_a_success_closes_it():
    v = view("default")
    fail(v, 1.0)
    fail(v, 1.0)
    assert not v.open and v.admit(1.0, mind_latency=True)
    fail(v, 1.0, Outcome.UNKNOWN)
    assert v.open and v.out_since == 1.0
    assert not v.admit(1.1, mind_latency=True)     # before the probe interval
    assert v.admit(1.2, mind_latency=True)         # one probe
    assert not v.admit(1.25, mind_latency=True)    # the next one waits an interval
    succeed(v, 1.3)
    assert not v.open and v.out_since is None
    assert v.limit == RESTART_LIMIT


def test_an_open_circuit_lets_through_at_most_max_probes_at_once():
    v = view("default")
    for _ in range(3):
        fail(v, 0.0)
    probes = []
    for n in range(1, 6):
        if v.admit(n * 0.2, mind_latency=True):
            p = Payment(new_id(), 1)
            v.started(p, n * 0.2)
            probes.append(p)
    assert len(probes) == 2
    v.finished(probes[0], Outcome.FAILED, 0.1, 1.1)
    assert v.admit(1.3, mind_latency=True)


def test_slow_start_after_recovery_grows_by_one_per_success_and_halves_on_failure():
    v = view("default", max_in_flight=12)
    for _ in range(3):
        fail(v, 0.0)
    succeed(v, 0.3)
    assert v.limit == RESTART_LIMIT
    for _ in range(10):
        succeed(v, 0.4)
    assert v.limit == 12
    fail(v, 0.5)
    assert v.limit == 6
    in_flight = [Payment(new_id(), 1) for _ in range(6)]
    for p in in_flight:
        assert v.admit(0.6, mind_latency=True)
        v.started(p, 0.6)
    assert not v.admit(0.6, mind_latency=True)  # busy, not out
    assert v.out_for(0.6) == 0.0


def test_health_failing_opens_and_health_recovered_probes_at_once():
    v = view("default")
    v.health_report(True, 0, now=5.0)
    v.refresh(5.0)
    assert v.open and not v.admit(5.1, mind_latency=True)
    v.health_report(False, 0, now=5.15)
    assert v.admit(5.15, mind_latency=True)


def test_announced_or_observed_slowness_holds_new_payments_only_for_policies_that_mind_it():
    v = view("default")
    v.health_report(False, 1600, now=1.0)
    v.refresh(1.0)
    assert v.slow and v.out_since == 1.0
    assert v.admit(1.0, mind_latency=True)        # a probe
    probe = Payment(new_id(), 1)
    v.started(probe, 1.0)
    assert not v.admit(1.05, mind_latency=True)   # nothing more until the next interval
    assert v.admit(1.05, mind_latency=False)      # a policy that ignores latency still sends
    v.finished(probe, Outcome.STORED, 0.02, 1.02)  # the probe came back fast: fast it is
    v.refresh(1.02)
    assert not v.slow and v.out_since is None
    v.health_report(False, 1600, now=1.1)
    v.refresh(1.1)
    assert v.slow
    v.health_report(False, 0, now=6.0)
    v.refresh(6.0)
    assert not v.slow and v.admit(6.0, mind_latency=True) and not v.probe_granted
    stuck = Payment(new_id(), 1)
    v.started(stuck, 7.0)
    v.refresh(7.5)
    assert not v.slow
    v.refresh(8.01)  # a call in flight for over a second
    assert v.slow


def test_a_slow_processor_is_probed_one_payment_at_a_time_a_failing_one_a_few():
    slow = view("default", max_probes=4)
    slow.health_report(False, 1600, now=0.0)
    slow.refresh(0.0)
    failing = view("default", max_probes=4)
    for _ in range(3):
        fail(failing, 0.0)
    for v in (slow, failing):
        for n in range(1, 10):  # an interval apart, none of them back yet
            if v.admit(n * 0.2, mind_latency=True):
                v.started(Payment(new_id(), 1), n * 0.2)
    assert len(slow.probes) == 1 and len(failing.probes) == 4


def test_timeouts_follow_latency_between_the_floor_and_the_ceiling():
    v = view("default", request_timeout_s=10.0)
    assert v.timeout_s() == TIMEOUT_FLOOR_S
    v.health_report(False, 3000, now=0.0)
    assert v.timeout_s() == pytest.approx(6.5)
    v.health_report(False, 5000, now=0.0)
    assert v.timeout_s() == 10.0


def outage(default: ProcessorView, at: float) -> None:
    for _ in range(3):
        fail(default, at)


def test_profit_policy_waits_for_default_within_the_budget_then_uses_a_healthy_fallback():
    default, fallback = view("default"), view("fallback")
    policy = ProfitPolicy(fallback_after_s=25.0)
    assert policy.choose(default, fallback, 0.0) is default
    outage(default, 10.0)
    for n in range(2):  # both probe slots busy with calls that hang: default takes nothing more
        probe = Payment(new_id(), 1)
        assert default.admit(10.2 + n * 0.2, mind_latency=True)
        default.started(probe, 10.2 + n * 0.2)
    assert policy.choose(default, fallback, 10.5) is None
    assert policy.choose(default, fallback, 34.9) is None
    assert policy.choose(default, fallback, 35.0) is fallback
    fallback.health_report(False, 5000, now=35.0)
    fallback.refresh(35.0)
    assert policy.choose(default, fallback, 36.0) is fallback  # a slow fallback gets a probe ...
    fallback.started(Payment(new_id(), 1), 36.0)
    assert policy.choose(default, fallback, 36.05) is None     # ... and nothing more until it is fast


def test_baselines():
    default, fallback = view("default"), view("fallback")
    outage(default, 1.0)
    assert FallbackOnFailurePolicy().choose(default, fallback, 1.05) is fallback
    assert AlwaysDefaultPolicy().choose(default, fallback, 1.05) is None
    assert AlwaysDefaultPolicy().choose(default, fallback, 1.2) is default  # a probe
    slow = view("default")
    slow.health_report(False, 3000, now=0.0)
    slow.refresh(0.0)
    assert ProfitPolicy(25.0).choose(slow, fallback, 0.0) is slow   # a probe ...
    slow.started(Payment(new_id(), 1), 0.0)
    assert ProfitPolicy(25.0).choose(slow, fallback, 0.1) is None   # ... and then it waits
    assert AlwaysDefaultPolicy().choose(slow, fallback, 0.1) is slow
    with pytest.raises(ValueError):
        make_policy("cheapest", 1.0)


async def test_a_pinned_payment_only_goes_back_to_its_processor():
    default, fallback = view("default"), view("fallback")
    router = Router(default, fallback, FallbackOnFailurePolicy())
    payment = Payment(new_id(), 1)
    payment.processor, payment.requested_at = "default", 1
    outage(default, 0.0)
    assert router.route(payment, 0.05) is None            # not the fallback, even though it is healthy
    assert router.route(payment, 0.25) is default          # a probe slot
    fresh = Payment(new_id(), 1)
    assert router.route(fresh, 0.25) is fallback
    assert router.fallback_decisions == 1


def test_pacing_caps_the_calls_started_per_second():
    default, fallback = view("default", max_in_flight=10_000), view("fallback")
    router = Router(default, fallback, AlwaysDefaultPolicy(), tick_s=0.05, max_calls_per_s=100)
    started = 0
    now = 0.0
    while now < 2.0:  # senders asking every millisecond for two seconds
        payment = Payment(new_id(), 1)
        if router.route(payment, now) is not None:
            default.started(payment, now)
            started += 1
        now += 0.001
    assert 195 <= started <= 215  # 100/s for 2 s, plus the initial burst of 10
    unpaced = Router(view("default", max_in_flight=10_000), view("fallback"), AlwaysDefaultPolicy())
    assert all(unpaced.route(Payment(new_id(), 1), 0.0) is not None for _ in range(500))
