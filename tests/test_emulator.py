"""The payment-processor emulator over real sockets: every behaviour SPEC.md section 2 lists.

Each test starts its own emulator in-process on port 0 (the bound port is read back, so there is
no pick-a-port race) with a short health window and small admission limits, and talks to it with
one aiohttp session. Waits are polls with a deadline on the emulator's state; the only sleeps
wait for a rate-limit window, which is the behaviour under test.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import socket
import struct
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest

from rinha import clock
from rinha.config import EmulatorConfig
from rinha.emulator.server import EmulatorServer, serve

TOKEN = "123"
WINDOW_S = 0.5
REPO = Path(__file__).resolve().parents[1]
T = clock.parse_ms("2025-07-15T12:00:00.000Z")


def iso(ms: int) -> str:
    return clock.format_ms(ms)


def new_id() -> str:
    return str(uuid.uuid4())


HEALTH = "/payments/service-health"
HEALTH_REQUEST = b"GET /payments/service-health HTTP/1.1\r\nhost: x\r\n\r\n"


def payment_request(correlation_id: str) -> bytes:
    body = b'{"correlationId": "%s", "amount": 19.9, "requestedAt": "2025-07-15T12:00:00.000Z"}' % correlation_id.encode()
    return (b"POST /payments HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body))


class Processor:
    """A client for one emulator; every call returns (status, JSON body or None)."""

    def __init__(self, session: aiohttp.ClientSession, server: EmulatorServer) -> None:
        self.session = session
        self.server = server
        self.url = f"http://127.0.0.1:{server.port}"

    @property
    def emulator(self):
        return self.server.emulator

    async def call(self, method: str, path: str, *, json=None, data=None, params=None, token: str | None = None):
        headers = {"X-Rinha-Token": token} if token is not None else {}
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with self.session.request(method, self.url + path, json=json, data=data, params=params,
                                        headers=headers) as response:
            body = await response.read()
            payload = await response.json(content_type=None) if body else None
            return response.status, payload

    async def pay(self, correlation_id: str | None = None, amount=19.90, requested_ms: int = T):
        body = {"correlationId": correlation_id or new_id(), "amount": amount, "requestedAt": iso(requested_ms)}
        status, _ = await self.call("POST", "/payments", json=body)
        return status

    async def timed_pay(self, correlation_id: str | None = None, **kwargs) -> tuple[int, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        status = await self.pay(correlation_id, **kwargs)
        return status, loop.time() - started

    async def get(self, correlation_id: str):
        return await self.call("GET", f"/payments/{correlation_id}")

    async def summary(self, token: str = TOKEN, **params):
        return await self.call("GET", "/admin/payments-summary", params=params, token=token)

    async def set_delay(self, delay_ms: int):
        return await self.call("PUT", "/admin/configurations/delay", json={"delay": delay_ms}, token=TOKEN)

    async def set_failure(self, failure: bool):
        return await self.call("PUT", "/admin/configurations/failure", json={"failure": failure}, token=TOKEN)


async def send_raw(proc: Processor, request: bytes) -> asyncio.StreamWriter:
    """Sends one request on its own connection and leaves the answer unread; close to hang up."""
    _, writer = await asyncio.open_connection("127.0.0.1", proc.server.port)
    writer.write(request)
    await writer.drain()
    return writer


async def hang_up(writer: asyncio.StreamWriter, how: str = "reset") -> None:
    """Leaves like a client that gave up. A plain close sends FIN, which the HTTP layer reads as a
    half-close and still answers; a reset (SO_LINGER 0) tears the connection down at once."""
    if how == "reset":
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
    try:
        await writer.wait_closed()
    except ConnectionError:
        pass


async def until(predicate, timeout: float = 2.0, what: str = "condition") -> None:
    """Polls `predicate` until true; fails after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


@pytest.fixture
async def session():
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        yield s


@pytest.fixture
async def start(session):
    """Starts an emulator with test-sized settings (overridable); all are closed at the end."""
    servers = []

    async def _start(**overrides) -> Processor:
        settings = {"port": 0, "rate_limit_seconds": WINDOW_S, "max_concurrent": 8, "max_queued": 8}
        settings.update(overrides)
        server = EmulatorServer(EmulatorConfig(**settings))
        await server.start()
        servers.append(server)
        return Processor(session, server)

    yield _start
    for server in servers:
        await server.close()


@pytest.fixture
async def proc(start) -> Processor:
    return await start()


# POST /payments and GET /payments/{id}

async def test_payment_is_stored_and_read_back(proc):
    cid = new_id()
    status, body = await proc.call("POST", "/payments",
                                   json={"correlationId": cid, "amount": 19.90, "requestedAt": "2025-07-15T12:34:56.789Z"})
    assert (status, body) == (200, {"message": "payment processed successfully"})
    assert await proc.get(cid) == (200, {"correlationId": cid, "amount": 19.9, "requestedAt": "2025-07-15T12:34:56.789Z"})


async def test_duplicate_correlation_id_is_422_and_stored_once(proc):
    cid = new_id()
    assert await proc.pay(cid, amount=10) == 200
    assert await proc.pay(cid, amount=99) == 422
    # The same UUID spelt in capitals is the same payment.
    assert await proc.pay(cid.upper(), amount=99) == 422
    assert (await proc.get(cid))[1]["amount"] == 10
    status, summary = await proc.summary()
    assert (summary["totalRequests"], summary["totalAmount"]) == (1, 10)


@pytest.mark.parametrize("sent, stored", [
    (19.999, 20.00),
    (19.994, 19.99),
    (19.90, 19.90),
    (20, 20.00),
    (0.125, 0.12),   # a tie goes to the even cent
    (0.135, 0.14),
    (1.015, 1.02),   # a tie as written, though 1.015 * 100 is 101.4999... in binary floats
])
async def test_amount_is_stored_rounded_to_cents(proc, sent, stored):
    cid = new_id()
    assert await proc.pay(cid, amount=sent) == 200
    status, payment = await proc.get(cid)
    assert (status, payment["amount"]) == (200, stored)
    status, summary = await proc.summary()
    assert (status, summary["totalAmount"]) == (200, stored)


@pytest.mark.parametrize("body", [
    b"not json",
    b"",
    b"[]",
    b'{"amount": 19.9, "requestedAt": "2025-07-15T12:00:00.000Z"}',
    b'{"correlationId": "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3", "requestedAt": "2025-07-15T12:00:00.000Z"}',
    b'{"correlationId": "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3", "amount": 19.9}',
    b'{"correlationId": 5, "amount": 19.9, "requestedAt": "2025-07-15T12:00:00.000Z"}',
    b'{"correlationId": "not-a-uuid", "amount": 19.9, "requestedAt": "2025-07-15T12:00:00.000Z"}',
    b'{"correlationId": "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3", "amount": "19.9", "requestedAt": "2025-07-15T12:00:00.000Z"}',
    b'{"correlationId": "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3", "amount": true, "requestedAt": "2025-07-15T12:00:00.000Z"}',
    b'{"correlationId": "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3", "amount": 0, "requestedAt": "2025-07-15T12:00:00.000Z"}',
    b'{"correlationId": "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3", "amount": -1.5, "requestedAt": "2025-07-15T12:00:00.000Z"}',
    b'{"correlationId": "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3", "amount": 19.9, "requestedAt": "yesterday"}',
    b'{"correlationId": "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3", "amount": 19.9, "requestedAt": 1752580800000}',
], ids=["not-json", "empty", "array", "no-id", "no-amount", "no-requestedAt", "id-int", "id-not-uuid",
        "amount-string", "amount-bool", "amount-zero", "amount-negative", "requestedAt-text", "requestedAt-number"])
async def test_invalid_payment_body_is_400_and_not_stored(proc, body):
    status, answer = await proc.call("POST", "/payments", data=body)
    assert status == 400 and "error" in answer
    assert (await proc.summary())[1]["totalRequests"] == 0


async def test_invalid_body_is_answered_at_once_even_with_a_delay(proc):
    await proc.set_delay(500)
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, _ = await proc.call("POST", "/payments", data=b"{}")
    assert status == 400 and loop.time() - started < 0.25


async def test_unknown_payment_is_404(proc):
    assert (await proc.get(new_id()))[0] == 404
    assert (await proc.get("not-a-uuid"))[0] == 404


# Delay and failure

async def test_delay_holds_each_payment_and_shows_in_health(proc):
    assert await proc.set_delay(200) == (200, {"config": "delay", "was": 0, "is": 200})
    status, elapsed = await proc.timed_pay()
    assert status == 200 and elapsed >= 0.2
    assert await proc.call("GET", "/payments/service-health") == (200, {"failing": False, "minResponseTime": 200})
    assert await proc.set_delay(0) == (200, {"config": "delay", "was": 200, "is": 0})
    status, elapsed = await proc.timed_pay()
    assert status == 200 and elapsed < 0.15


async def test_payment_is_stored_only_when_its_delay_ends(proc):
    await proc.set_delay(300)
    cid = new_id()
    pending = asyncio.create_task(proc.pay(cid))
    await until(lambda: proc.emulator.active == 1, what="the payment to be sleeping")
    assert (await proc.get(cid))[0] == 404
    assert await pending == 200
    assert (await proc.get(cid))[0] == 200


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_payment_is_stored_even_if_its_client_hangs_up_during_the_delay(proc, how):
    await proc.set_delay(200)
    cid = new_id()
    writer = await send_raw(proc, payment_request(cid))
    await until(lambda: proc.emulator.active == 1, what="the payment to be sleeping")
    await hang_up(writer, how)
    assert (await proc.get(cid))[0] == 404
    await until(lambda: proc.emulator.active == 0, what="the delay to end")
    assert (await proc.get(cid))[0] == 200


async def test_delay_change_applies_only_to_payments_that_start_after_it(proc):
    await proc.set_delay(400)
    slow = asyncio.create_task(proc.timed_pay())
    await until(lambda: proc.emulator.active == 1, what="the first payment to be sleeping")
    await proc.set_delay(0)
    status, elapsed = await proc.timed_pay()
    assert status == 200 and elapsed < 0.2
    assert not slow.done()
    status, elapsed = await slow
    assert status == 200 and elapsed >= 0.4


async def test_failure_mode_answers_500_and_stores_nothing(proc):
    assert await proc.set_failure(True) == (200, {"config": "failure", "was": False, "is": True})
    cid = new_id()
    assert await proc.pay(cid) == 500
    assert (await proc.get(cid))[0] == 404
    assert (await proc.summary())[1]["totalRequests"] == 0
    assert await proc.call("GET", "/payments/service-health") == (200, {"failing": True, "minResponseTime": 0})
    assert await proc.set_failure(False) == (200, {"config": "failure", "was": True, "is": False})
    assert await proc.pay(cid) == 200


async def test_failure_with_delay_answers_500_only_after_the_delay(proc):
    await proc.set_delay(200)
    await proc.set_failure(True)
    status, elapsed = await proc.timed_pay()
    assert status == 500 and elapsed >= 0.2


async def test_failure_is_read_after_the_delay(proc):
    await proc.set_delay(300)
    cid = new_id()
    sleeping = asyncio.create_task(proc.timed_pay(cid))
    await until(lambda: proc.emulator.active == 1, what="the payment to be sleeping")
    await proc.set_failure(True)
    status, elapsed = await sleeping
    assert status == 500 and elapsed >= 0.3
    assert (await proc.get(cid))[0] == 404


# Admission: max_concurrent served, max_queued waiting, the rest 429

async def test_payments_beyond_served_plus_queued_get_429_at_once(start):
    proc = await start(max_concurrent=2, max_queued=1)
    await proc.set_delay(300)
    admitted = [new_id() for _ in range(3)]
    calls = []
    for n, cid in enumerate(admitted, 1):
        calls.append(asyncio.create_task(proc.pay(cid)))
        await until(lambda: proc.emulator.active + proc.emulator.queued == n, what=f"payment {n} admitted")
    assert (proc.emulator.active, proc.emulator.queued) == (2, 1)
    refused = [new_id(), new_id()]
    for cid in refused:
        status, elapsed = await proc.timed_pay(cid)
        assert status == 429 and elapsed < 0.2
    assert await asyncio.gather(*calls) == [200, 200, 200]
    for cid in refused:
        assert (await proc.get(cid))[0] == 404
    assert (proc.emulator.active, proc.emulator.queued) == (0, 0)
    assert await proc.pay() == 200


async def test_never_more_than_max_concurrent_served_and_the_queue_is_fifo(start):
    proc = await start(max_concurrent=2, max_queued=10)
    await proc.set_delay(200)
    loop = asyncio.get_running_loop()
    peak = 0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.emulator.active)
            await asyncio.sleep(0.002)

    sampler = asyncio.create_task(sample())
    started = loop.time()
    finished: dict[int, float] = {}

    async def pay(n: int) -> int:
        status = await proc.pay()
        finished[n] = loop.time() - started
        return status

    calls = []
    for n in range(6):
        calls.append(asyncio.create_task(pay(n)))
        await until(lambda: proc.emulator.active + proc.emulator.queued == n + 1, what=f"payment {n} admitted")
    assert (proc.emulator.active, proc.emulator.queued) == (2, 4)
    assert await asyncio.gather(*calls) == [200] * 6
    done.set()
    await sampler
    assert peak == 2
    # Served in waves of two, in arrival order: the n-th ends no sooner than wave n // 2 allows.
    for n in range(6):
        assert finished[n] >= 0.2 * (n // 2 + 1) - 0.005, (n, finished)
    for n in range(4):
        assert finished[n] < finished[n + 2], (n, finished)


async def test_queued_payment_whose_client_leaves_is_dropped_and_frees_its_place(start):
    proc = await start(max_concurrent=1, max_queued=1)
    await proc.set_delay(200)

    async def occupy_slot_and_abandon_queued() -> tuple[asyncio.Task, str]:
        served = asyncio.create_task(proc.pay())
        await until(lambda: proc.emulator.active == 1, what="a payment to be sleeping")
        gone = new_id()
        writer = await send_raw(proc, payment_request(gone))
        await until(lambda: proc.emulator.queued == 1, what="a payment to queue")
        await hang_up(writer)
        await until(lambda: proc.emulator.queued == 0, what="the abandoned wait to be cancelled")
        return served, gone

    # The slot frees with nobody left waiting: the abandoned payment is never handled.
    served, gone = await occupy_slot_and_abandon_queued()
    assert await served == 200
    await until(lambda: proc.emulator.active == 0, what="the slot to free")
    assert (await proc.get(gone))[0] == 404

    # Its place in the queue is free again: the next payment queues instead of getting 429.
    served, gone = await occupy_slot_and_abandon_queued()
    third = asyncio.create_task(proc.pay())
    await until(lambda: proc.emulator.queued == 1, what="the third payment to queue")
    assert await asyncio.gather(served, third) == [200, 200]
    assert (await proc.get(gone))[0] == 404
    assert (await proc.summary())[1]["totalRequests"] == 3


async def test_queued_payment_takes_the_delay_in_force_when_it_gets_a_slot(start):
    proc = await start(max_concurrent=1, max_queued=1)
    await proc.set_delay(300)
    loop = asyncio.get_running_loop()

    async def finish_time() -> float:
        assert await proc.pay() == 200
        return loop.time()

    first = asyncio.create_task(finish_time())
    await until(lambda: proc.emulator.active == 1, what="the first payment to be sleeping")
    second = asyncio.create_task(finish_time())
    await until(lambda: proc.emulator.queued == 1, what="the second payment to queue")
    await proc.set_delay(0)
    first_done, second_done = await asyncio.gather(first, second)
    # Queued behind the first (which kept its 300 ms), then no delay of its own.
    assert 0 <= second_done - first_done < 0.1


async def test_sustains_hundreds_of_payments_per_second(proc):
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def sender(count: int) -> list[int]:
        return [await proc.pay() for _ in range(count)]

    results = await asyncio.gather(*(sender(75) for _ in range(8)))
    elapsed = loop.time() - started
    assert all(status == 200 for statuses in results for status in statuses)
    assert (await proc.summary())[1]["totalRequests"] == 600
    assert elapsed < 3.0  # 600 payments, client sharing the same loop and CPU


# GET /payments/service-health: one per fixed window, two queued, the rest 429

async def test_health_is_one_call_per_window_with_two_queued(proc):
    loop = asyncio.get_running_loop()
    emulator = proc.emulator

    def boundary(window: int) -> float:
        return emulator.t0 + window * WINDOW_S

    # Start just after a window opens, so the whole burst lands in one window.
    window = int((loop.time() - emulator.t0) // WINDOW_S) + 1
    await asyncio.sleep(boundary(window) - loop.time() + 0.01)

    health = HEALTH
    started = loop.time()
    assert await proc.call("GET", health) == (200, {"failing": False, "minResponseTime": 0})
    assert loop.time() - started < 0.1

    finished: dict[str, float] = {}

    async def queued(name: str):
        answer = await proc.call("GET", health)
        finished[name] = loop.time()
        return answer

    second = asyncio.create_task(queued("second"))
    await until(lambda: len(emulator.health_queue) == 1, what="the second call to queue")
    third = asyncio.create_task(queued("third"))
    await until(lambda: len(emulator.health_queue) == 2, what="the third call to queue")

    async with proc.session.get(proc.url + health) as refused:
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "1"  # the next window is under a second away
        assert "error" in await refused.json()
    assert loop.time() < boundary(window + 1)

    # Queued calls are answered when served, with the state of that moment.
    await proc.set_failure(True)
    assert await second == (200, {"failing": True, "minResponseTime": 0})
    assert await third == (200, {"failing": True, "minResponseTime": 0})
    assert boundary(window + 1) - 0.005 <= finished["second"] < boundary(window + 1) + 0.2
    assert boundary(window + 2) - 0.005 <= finished["third"] < boundary(window + 2) + 0.2

    # The queue has drained and a fresh window is served at once again.
    await asyncio.sleep(boundary(window + 3) - loop.time() + 0.01)
    started = loop.time()
    assert (await proc.call("GET", health))[0] == 200
    assert loop.time() - started < 0.1


async def test_health_retry_after_is_whole_seconds_to_the_next_window_rounded_up(start):
    proc = await start(rate_limit_seconds=3.0)
    loop = asyncio.get_running_loop()
    assert (await proc.call("GET", HEALTH))[0] == 200
    waiting = [await send_raw(proc, HEALTH_REQUEST) for _ in range(2)]
    await until(lambda: len(proc.emulator.health_queue) == 2, what="two health calls to queue")
    async with proc.session.get(proc.url + HEALTH) as refused:
        assert refused.status == 429
        retry_after = refused.headers["Retry-After"]
    # Still in the first 3 s window, more than 2 s before its end: 2.x s rounds up to 3.
    assert loop.time() - proc.emulator.t0 < 1.0
    assert retry_after == "3"
    for writer in waiting:
        await hang_up(writer)


async def test_health_call_whose_client_leaves_gives_up_its_place(proc):
    loop = asyncio.get_running_loop()
    emulator = proc.emulator
    assert (await proc.call("GET", HEALTH))[0] == 200
    window = int((loop.time() - emulator.t0) // WINDOW_S)
    waiting = [await send_raw(proc, HEALTH_REQUEST) for _ in range(2)]
    await until(lambda: len(emulator.health_queue) == 2, what="two health calls to queue")
    for writer in waiting:
        await hang_up(writer)
    await until(lambda: all(future.done() for future in emulator.health_queue), what="the waits to be cancelled")
    # Their places and their windows are free: this call queues for the very next window.
    status, _ = await proc.call("GET", HEALTH)
    assert status == 200
    assert emulator.t0 + (window + 1) * WINDOW_S <= loop.time() < emulator.t0 + (window + 2) * WINDOW_S


# Admin: token, summary, configuration, purge

ADMIN_CALLS = [
    ("GET", "/admin/payments-summary", None),
    ("PUT", "/admin/configurations/token", {"token": "abc"}),
    ("PUT", "/admin/configurations/delay", {"delay": 100}),
    ("PUT", "/admin/configurations/failure", {"failure": True}),
    ("POST", "/admin/purge-payments", None),
]


@pytest.mark.parametrize("method, path, body", ADMIN_CALLS, ids=[c[1] for c in ADMIN_CALLS])
@pytest.mark.parametrize("token", [None, "wrong", ""], ids=["no-token", "wrong-token", "empty-token"])
async def test_admin_endpoints_need_the_token(proc, method, path, body, token):
    status, answer = await proc.call(method, path, json=body, token=token)
    assert status == 401 and "error" in answer
    # Nothing changed.
    assert (proc.emulator.delay_ms, proc.emulator.failing, proc.emulator.token) == (0, False, b"123")


async def test_token_change(proc):
    assert await proc.call("PUT", "/admin/configurations/token", json={"token": "s3cret"}, token=TOKEN) == (204, None)
    assert (await proc.summary(token=TOKEN))[0] == 401
    assert (await proc.summary(token="s3cret"))[0] == 200
    assert await proc.call("PUT", "/admin/configurations/token", json={"token": "123"}, token="s3cret") == (204, None)
    assert (await proc.summary(token=TOKEN))[0] == 200


@pytest.mark.parametrize("path, body", [
    ("/admin/configurations/token", {"token": ""}),
    ("/admin/configurations/token", {"token": 5}),
    ("/admin/configurations/token", {}),
    ("/admin/configurations/delay", {"delay": -1}),
    ("/admin/configurations/delay", {"delay": "100"}),
    ("/admin/configurations/delay", {"delay": 1.5}),
    ("/admin/configurations/delay", {"delay": True}),
    ("/admin/configurations/failure", {"failure": "yes"}),
    ("/admin/configurations/failure", {"failure": 1}),
    ("/admin/configurations/failure", []),
])
async def test_bad_configuration_body_is_400_and_changes_nothing(proc, path, body):
    status, answer = await proc.call("PUT", path, json=body, token=TOKEN)
    assert status == 400 and "error" in answer
    status, _ = await proc.call("PUT", path, data=b"not json", token=TOKEN)
    assert status == 400
    assert (proc.emulator.delay_ms, proc.emulator.failing, proc.emulator.token) == (0, False, b"123")


async def test_summary_bounds_are_inclusive_and_optional(start):
    proc = await start(fee=0.15)
    for offset in (-1, 0, 500, 1000, 1001):
        assert await proc.pay(amount=19.90, requested_ms=T + offset) == 200

    async def count(**params) -> int:
        status, summary = await proc.summary(**params)
        assert status == 200
        return summary["totalRequests"]

    assert await count() == 5
    assert await count(**{"from": iso(T), "to": iso(T + 1000)}) == 3
    assert await count(**{"from": iso(T)}) == 4
    assert await count(to=iso(T + 1000)) == 4
    assert await count(**{"from": iso(T + 1000), "to": iso(T + 1000)}) == 1
    assert await count(**{"from": iso(T + 1), "to": iso(T)}) == 0
    # Sub-millisecond bounds round inward: from up, to down.
    assert await count(**{"from": "2025-07-15T12:00:00.0005Z", "to": "2025-07-15T12:00:01.0009Z"}) == 2
    # No offset means UTC; an explicit offset is honoured.
    assert await count(**{"from": "2025-07-15T12:00:00", "to": "2025-07-15T09:00:01-03:00"}) == 3

    status, summary = await proc.summary(**{"from": iso(T), "to": iso(T + 1000)})
    # 3 x 19.90 = 59.70; fee 0.15 of it = 8.955, rounded to the even cent.
    assert summary == {"totalRequests": 3, "totalAmount": 59.7, "totalFee": 8.96, "feePerTransaction": 0.15}


@pytest.mark.parametrize("params", [{"from": "yesterday"}, {"to": "2025-13-01T00:00:00Z"}, {"to": "12:00"}],
                         ids=["bad-from", "bad-month", "time-only"])
async def test_summary_with_bad_bounds_is_400(proc, params):
    status, answer = await proc.summary(**params)
    assert status == 400 and "error" in answer


async def test_summary_empty_bound_is_unbounded(proc):
    assert await proc.pay(requested_ms=T) == 200
    assert (await proc.summary(**{"from": "", "to": ""}))[1]["totalRequests"] == 1


async def test_summary_of_nothing(proc):
    assert await proc.summary() == (200, {"totalRequests": 0, "totalAmount": 0, "totalFee": 0, "feePerTransaction": 0.05})


async def test_purge_deletes_every_payment(proc):
    kept = [new_id(), new_id()]
    for cid in kept:
        assert await proc.pay(cid) == 200
    assert await proc.call("POST", "/admin/purge-payments", token=TOKEN) == (200, {"message": "All payments purged."})
    assert (await proc.summary())[1]["totalRequests"] == 0
    assert (await proc.get(kept[0]))[0] == 404
    assert await proc.pay(kept[0]) == 200  # no longer a duplicate


# Routing

@pytest.mark.parametrize("method, path, status, allow", [
    ("GET", "/nowhere", 404, None),
    ("GET", "/admin/nothing", 404, None),
    ("GET", "/payments", 405, "POST"),
    ("POST", "/payments/service-health", 405, "GET"),
    ("DELETE", "/payments/4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3", 405, "GET"),
    ("POST", "/admin/payments-summary", 405, "GET"),
    ("GET", "/admin/purge-payments", 405, "POST"),
    ("POST", "/admin/configurations/delay", 405, "PUT"),
])
async def test_unknown_route_404_and_wrong_method_405(proc, method, path, status, allow):
    async with proc.session.request(method, proc.url + path, headers={"X-Rinha-Token": TOKEN}) as response:
        assert response.status == status
        assert response.headers.get("Allow") == allow


# Logging and the command line

async def test_quiet_except_one_info_line_per_config_change(proc, caplog):
    caplog.set_level(logging.INFO, logger="rinha.emulator")
    assert await proc.pay() == 200
    assert (await proc.call("GET", "/payments/service-health"))[0] == 200
    assert await proc.pay(amount=0) == 400
    ours = lambda: [(r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("rinha")]
    assert ours() == []
    await proc.set_delay(10)
    assert ours() == [(logging.INFO, "delay changed from 0 to 10 ms")]


async def test_serve_sets_ready_and_returns_when_stopped():
    stop, ready = asyncio.Event(), asyncio.Event()
    serving = asyncio.create_task(serve(EmulatorConfig(port=0), stop, ready))
    await asyncio.wait_for(ready.wait(), timeout=5)
    assert not serving.done()
    stop.set()
    await asyncio.wait_for(serving, timeout=5)


async def test_command_line_serves_and_stops_cleanly_on_sigterm(session):
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rinha", "emulator", "--port", "0", "--log-level", "INFO",
        cwd=REPO, stderr=asyncio.subprocess.PIPE)
    try:
        line = await asyncio.wait_for(child.stderr.readline(), timeout=10)
        match = re.search(rb"listening on 127\.0\.0\.1:(\d+)", line)
        assert match, line
        url = f"http://127.0.0.1:{int(match.group(1))}"
        body = {"correlationId": new_id(), "amount": 19.9, "requestedAt": iso(T)}
        async with session.post(url + "/payments", json=body) as response:
            assert response.status == 200
        child.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(child.wait(), timeout=5) == 0
        assert b"Traceback" not in await child.stderr.read()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
