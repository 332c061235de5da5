"""The worker's dispatch rules against a real processor emulator over real sockets."""

from __future__ import annotations

import asyncio
import dataclasses

import aiohttp
import pytest

from conftest import eventually, new_id
from rinha import clock
from rinha.config import EmulatorConfig, WorkerConfig
from rinha.emulator.server import EmulatorServer
from rinha.worker.health import HealthPoller
from rinha.worker.queue import Payment
from rinha.worker.server import Worker
from rinha.worker.store.base import RECENT_WAIT_MAX_S

TOKEN = {"X-Rinha-Token": "123"}


class Rig:
    """A real worker (queue, senders, router, health pollers, ledger) wired to two emulators."""

    def __init__(self, default: EmulatorServer, fallback: EmulatorServer, *, senders: int, timeout_s: float,
                 **settings):
        self.servers = {"default": default, "fallback": fallback}
        self.worker = Worker(WorkerConfig(default_url=self.url("default"), fallback_url=self.url("fallback"),
                                          senders=senders, request_timeout_s=timeout_s, probe_interval_ms=20,
                                          **settings))
        self.queue = self.worker.queue
        self.store = self.worker.store
        self.dispatcher = self.worker.dispatcher
        self.http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "Rig":
        self.http = aiohttp.ClientSession()
        await self.worker.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.worker.stop()
        await self.http.close()

    def in_flight(self) -> set:
        return {p for view in self.worker.router.views.values() for p in view.in_flight}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.servers[name].port}"

    async def admin(self, name: str, setting: str, value: object) -> None:
        async with self.http.put(f"{self.url(name)}/admin/configurations/{setting}", json={setting: value},
                                 headers=TOKEN) as response:
            assert response.status == 200

    async def stored(self, name: str, correlation_id: str) -> dict | None:
        async with self.http.get(f"{self.url(name)}/payments/{correlation_id}") as response:
            return await response.json() if response.status == 200 else None

    async def processor_count(self, name: str) -> int:
        async with self.http.get(f"{self.url(name)}/admin/payments-summary", headers=TOKEN) as response:
            return (await response.json())["totalRequests"]

    def recorded(self) -> int:
        return sum(self.store.stored_count(name) for name in ("default", "fallback"))

    async def totals(self, name: str, start: int | None = None, end: int | None = None) -> tuple[int, int]:
        return (await self.store.summary(start, end))[name]


@pytest.fixture
async def emulators():
    config = EmulatorConfig(port=0, max_concurrent=50, max_queued=50)
    async with EmulatorServer(config) as default, EmulatorServer(dataclasses.replace(config, fee=0.15)) as fallback:
        yield default, fallback


async def test_a_stored_payment_is_recorded_with_the_requested_at_the_processor_holds(emulators):
    async with Rig(*emulators, senders=2, timeout_s=2) as rig:
        payment = Payment(new_id(), 1990)
        rig.queue.put(payment)
        await eventually(lambda: _true(rig.recorded() == 1))
        held = await rig.stored("default", payment.correlation_id)
        assert held["amount"] == pytest.approx(19.90)
        assert clock.parse_ms(held["requestedAt"]) == payment.requested_at
        assert await rig.totals("default", payment.requested_at, payment.requested_at) == (1, 1990)
        assert await rig.processor_count("fallback") == 0


async def test_a_failing_processor_leaves_payments_queued_and_unpinned_until_it_recovers(emulators):
    async with Rig(*emulators, senders=2, timeout_s=2) as rig:
        await rig.admin("default", "failure", True)
        payments = [Payment(new_id(), 100 + n) for n in range(5)]
        for payment in payments:
            rig.queue.put(payment)
        # A failed payment goes back to the front: the oldest are retried first.
        await eventually(lambda: _true(sum(p.attempts for p in payments) >= 10))
        assert rig.recorded() == 0
        # Only a payment a sender holds (its pin being committed, or its call in flight) may be
        # pinned: a 500 means "not stored", go anywhere.
        held = rig.in_flight() | rig.worker.dispatcher.held
        assert all(p.processor is None or p in held for p in payments)
        await rig.admin("default", "failure", False)
        await eventually(lambda: _true(rig.recorded() == 5))
        assert await rig.processor_count("default") == 5
        assert len(rig.queue) == 0


async def test_a_timed_out_call_is_resent_to_the_same_processor_with_the_same_requested_at(emulators):
    async with Rig(*emulators, senders=1, timeout_s=0.2) as rig:
        await rig.admin("default", "delay", 400)
        payment = Payment(new_id(), 1990)
        rig.queue.put(payment)
        # The first call times out on our side; the processor stores the payment when its delay ends.
        await eventually(lambda: rig.stored("default", payment.correlation_id), timeout=5)
        first_stamp = payment.requested_at
        assert payment.processor == "default" and first_stamp is not None
        await rig.admin("default", "delay", 0)
        await eventually(lambda: _true(rig.recorded() == 1), timeout=5)
        assert payment.attempts >= 2  # it was sent again, and the processor answered 422
        assert payment.requested_at == first_stamp
        held = await rig.stored("default", payment.correlation_id)
        assert clock.parse_ms(held["requestedAt"]) == first_stamp
        assert await rig.processor_count("default") == 1
        assert await rig.processor_count("fallback") == 0


async def test_busy_answers_put_payments_back_and_nothing_is_lost(emulators):
    default, fallback = emulators
    default.emulator.max_concurrent = 1
    default.emulator.max_queued = 0
    async with Rig(default, fallback, senders=4, timeout_s=2) as rig:
        await rig.admin("default", "delay", 30)
        payments = [Payment(new_id(), 1) for _ in range(12)]
        for payment in payments:
            rig.queue.put(payment)
        await eventually(lambda: _true(rig.recorded() == 12), timeout=15)
        assert any(p.attempts > 1 for p in payments)  # some calls were answered 429
        assert await rig.processor_count("default") == 12


async def test_the_worker_queues_each_correlation_id_once():
    worker = Worker(WorkerConfig())
    await worker.store.open()
    first, second = new_id(), new_id()
    await worker.accept([[first, 100], [second, 200]])
    await worker.accept([[first, 100], [second, 200], [first, 999]])  # a resent batch and a repeat
    assert [p.correlation_id for p in worker.queue] == [first, second]
    recorded = worker.queue.items.popleft()
    await worker.store.intent(pin(recorded, "default", 1))
    await worker.store.stored(recorded)
    assert (await worker.answer({"op": "purge"}))[0] == 200
    await worker.accept([[first, 100]])  # after a purge a recorded id may be paid again; a queued one may not
    await worker.accept([[second, 200]])
    assert [p.correlation_id for p in worker.queue] == [second, first]
    await worker.store.close()


async def test_a_batch_whose_ack_is_cancelled_is_still_queued():
    worker = Worker(WorkerConfig(commit_interval_ms=50))
    await worker.store.open()
    correlation_id = new_id()
    ack = worker.accept([[correlation_id, 100]])
    await asyncio.sleep(0)  # one turn of the loop: the batch is in the store, its commit pending
    ack.cancel()            # the link was lost before the ACK
    await eventually(lambda: _true(len(worker.queue) == 1))
    await worker.accept([[correlation_id, 100]])  # the API node resends it: known, not queued twice
    assert [p.correlation_id for p in worker.queue] == [correlation_id]
    await worker.store.close()


def pin(payment: Payment, processor: str, ms: int) -> Payment:
    payment.processor, payment.requested_at = processor, ms
    return payment


async def _true(value: bool) -> bool:
    return value


async def test_payments_go_to_a_healthy_fallback_once_default_has_been_out_longer_than_the_budget(emulators):
    async with Rig(*emulators, senders=4, timeout_s=2, fallback_after_s=0.3) as rig:
        await rig.admin("default", "failure", True)
        payments = [Payment(new_id(), 250) for _ in range(10)]
        for payment in payments:
            rig.queue.put(payment)
        await eventually(lambda: _true(rig.recorded() == 10), timeout=10)
        assert await rig.processor_count("default") == 0
        assert await rig.processor_count("fallback") == 10
        assert await rig.totals("fallback") == (10, 2500)
        assert rig.worker.router.fallback_decisions >= 10


async def test_default_is_used_again_as_soon_as_it_recovers(emulators):
    async with Rig(*emulators, senders=4, timeout_s=2) as rig:
        await rig.admin("default", "failure", True)
        first = Payment(new_id(), 100)
        rig.queue.put(first)
        await eventually(lambda: _true(rig.worker.router.default.open))
        await rig.admin("default", "failure", False)
        await eventually(lambda: _true(rig.recorded() == 1), timeout=5)
        assert not rig.worker.router.default.open
        assert await rig.processor_count("default") == 1
        assert await rig.processor_count("fallback") == 0


async def test_the_health_poller_never_spends_more_than_the_processor_allows():
    config = EmulatorConfig(port=0, rate_limit_seconds=0.5)
    reports = []
    async with EmulatorServer(config) as server, aiohttp.ClientSession() as session:
        await _admin_put(session, server.port, "delay", 42)
        poller = HealthPoller("default", f"http://127.0.0.1:{server.port}", lambda: session, interval_s=0.55,
                              timeout_s=1, on_report=lambda failing, ms: reports.append((failing, ms)))
        poller.start()
        try:
            await eventually(lambda: _true(len(reports) >= 5), timeout=10)
        finally:
            await poller.stop()
    assert poller.refusals == 0
    assert set(reports) == {(False, 42)}


async def test_a_summary_waits_for_calls_in_flight_inside_its_window(emulators):
    async with Rig(*emulators, senders=2, timeout_s=3, settle_timeout_ms=2000) as rig:  # long, to see the wait
        await rig.admin("default", "delay", 300)
        payment = Payment(new_id(), 1990)
        rig.queue.put(payment)
        await eventually(lambda: _true(bool(rig.in_flight())))
        status, body = await rig.worker.answer({"op": "summary", "from": None, "to": clock.now_ms()})
        assert status == 200
        assert body["default"]["totalRequests"] == 1  # the answer waited for the call to end
        assert await rig.processor_count("default") == 1


async def test_a_summary_reaching_the_present_counts_the_calls_under_way_in_its_last_second(emulators):
    # The teardown that gets paid reads up to now: a default answering in 1.2 s (inside the gate)
    # has its newest payments in flight then. They are waited for, not left out as lag.
    async with Rig(*emulators, senders=2, timeout_s=5) as rig:  # settle_timeout_ms stays 5 ms
        await rig.admin("default", "delay", 1200)
        payment = Payment(new_id(), 1990)
        rig.queue.put(payment)
        await eventually(lambda: _true(bool(rig.in_flight())))
        status, body = await rig.worker.answer({"op": "summary", "from": None, "to": clock.now_ms()})
        assert status == 200
        assert body["default"]["totalRequests"] == 1
        assert await rig.processor_count("default") == 1


async def test_a_summary_waits_for_recent_calls_no_longer_than_the_api_waits_for_it(emulators):
    # A call to a processor answering in 4.5 s gets a 6 s timeout (the floor); the API nodes wait
    # 5 s for a summary. The summary answers by RECENT_WAIT_MAX_S, without the call.
    async with Rig(*emulators, senders=2, timeout_s=10) as rig:
        await rig.admin("default", "delay", 4500)
        payment = Payment(new_id(), 1990)
        rig.queue.put(payment)
        await eventually(lambda: _true(bool(rig.in_flight())))
        loop = asyncio.get_running_loop()
        asked = loop.time()
        status, body = await rig.worker.answer({"op": "summary", "from": None, "to": clock.now_ms()})
        waited = loop.time() - asked
        assert status == 200 and body["default"]["totalRequests"] == 0
        assert RECENT_WAIT_MAX_S - 0.1 <= waited < RECENT_WAIT_MAX_S + 0.5
        await eventually(lambda: _true(rig.recorded() == 1), timeout=5)


async def test_an_audited_window_never_waits_for_a_call_the_auditor_may_have_missed(emulators):
    # The audit stops 1.5 s short of now. A call stamped before that edge and still running may be
    # stored after the auditor read the processor: waiting for it would count what they do not.
    async with Rig(*emulators, senders=2, timeout_s=5) as rig:
        await rig.admin("default", "delay", 2200)
        payment = Payment(new_id(), 1990)
        rig.queue.put(payment)
        await eventually(lambda: _true(bool(rig.in_flight())))
        await eventually(lambda: _true(clock.now_ms() - payment.requested_at > 1600), timeout=3)
        now = clock.now_ms()
        status, body = await rig.worker.answer({"op": "summary", "from": now - 15_000, "to": now - 1500})
        assert status == 200
        assert body["default"]["totalRequests"] == 0
        assert payment in rig.in_flight()  # answered while the call was still under way
        await eventually(lambda: _true(rig.recorded() == 1), timeout=5)


async def _admin_put(session: aiohttp.ClientSession, port: int, setting: str, value: object) -> None:
    async with session.put(f"http://127.0.0.1:{port}/admin/configurations/{setting}", json={setting: value},
                           headers=TOKEN) as response:
        assert response.status == 200


async def test_robust_sends_waiting_payments_to_a_healthy_fallback_after_its_bound(emulators):
    async with Rig(*emulators, senders=4, timeout_s=2, policy="robust", hold_ms=300) as rig:
        await rig.admin("default", "failure", True)
        payments = [Payment(new_id(), 250) for _ in range(10)]
        for payment in payments:
            rig.queue.put(payment)
        await eventually(lambda: _true(rig.worker.router.default.open))
        opened = asyncio.get_running_loop().time()
        await eventually(lambda: _true(rig.recorded() == 10), timeout=10)
        assert asyncio.get_running_loop().time() - opened >= 0.25  # held for default first, up to the bound
        assert await rig.processor_count("default") == 0
        assert await rig.processor_count("fallback") == 10


async def test_robust_never_moves_a_pinned_payment_to_fallback(emulators):
    # Calls that timed out may be stored: their payments go back only to that processor, however
    # long default stays out. A fresh payment in the same state goes to fallback after the bound.
    async with Rig(*emulators, senders=4, timeout_s=2, policy="robust", hold_ms=300) as rig:
        await rig.admin("default", "delay", 2600)  # longer than a call's 2 s timeout
        pinned = [Payment(new_id(), 1990) for _ in range(4)]
        for payment in pinned:
            rig.queue.put(payment)
        # Three timeouts in a row open the circuit; every payment has been tried and stays pinned.
        await eventually(lambda: _true(rig.worker.router.default.open), timeout=6)
        assert all(p.attempts >= 1 and p.processor == "default" for p in pinned)
        fresh = Payment(new_id(), 1990)
        rig.queue.put(fresh)
        await eventually(lambda: _true(rig.store.stored_count("fallback") == 1), timeout=5)
        assert await rig.stored("fallback", fresh.correlation_id) is not None
        assert rig.worker.router.default.open  # the pinned ones were still waiting for default then
        await rig.admin("default", "delay", 0)
        await eventually(lambda: _true(rig.recorded() == 5), timeout=10)
        for payment in pinned:
            assert await rig.stored("fallback", payment.correlation_id) is None
            assert await rig.stored("default", payment.correlation_id) is not None
        assert await rig.processor_count("fallback") == 1


async def test_pinned_payments_waiting_for_their_processor_do_not_hold_up_the_queue(emulators):
    # Every sender holds a payment pinned to an out default, one of them probing: the payments
    # queued behind them get senders of their own and go to fallback after the bound.
    async with Rig(*emulators, senders=4, timeout_s=2, policy="robust", hold_ms=300, max_probes=1) as rig:
        await rig.admin("default", "delay", 2600)  # longer than a call's 2 s timeout
        pinned = [Payment(new_id(), 1990) for _ in range(4)]
        for payment in pinned:
            rig.queue.put(payment)
        await eventually(lambda: _true(rig.worker.router.default.open), timeout=6)
        fresh = [Payment(new_id(), 1990) for _ in range(10)]
        for payment in fresh:
            rig.queue.put(payment)
        await eventually(lambda: _true(rig.store.stored_count("fallback") == 10), timeout=5)
        assert rig.worker.router.default.open
        assert all(p.processor == "default" for p in pinned)
        await rig.admin("default", "delay", 0)
        await eventually(lambda: _true(rig.recorded() == 14), timeout=10)
        assert await rig.processor_count("fallback") == 10


async def test_robust_lets_a_slow_default_carry_its_load_with_more_than_64_calls_in_flight():
    config = EmulatorConfig(port=0)  # SPEC.md's 800 served at once, 500 waiting
    async with EmulatorServer(config) as default, EmulatorServer(dataclasses.replace(config, fee=0.15)) as fallback, \
            Rig(default, fallback, senders=64, timeout_s=5, policy="robust") as rig:
        await rig.admin("default", "delay", 1200)
        payments = [Payment(new_id(), 100) for _ in range(200)]
        for payment in payments:
            rig.queue.put(payment)
        await eventually(lambda: _true(len(rig.worker.router.default.in_flight) > 64), timeout=5)
        await eventually(lambda: _true(rig.recorded() == 200), timeout=15)
        assert len(rig.dispatcher._tasks) > 64
        assert await rig.processor_count("default") == 200  # slow is not down: nothing moved to fallback
        assert await rig.processor_count("fallback") == 0

