"""The payment-processor emulator: its state, its routes and its listener.

It behaves as SPEC.md section 2 says. Where the spec is silent, these are the choices:

- An invalid body (not JSON, a missing field, a wrong type, a bad UUID or timestamp, an amount
  that is not a positive number) gets **400**, never 422: our worker reads 422 as "already stored".
  It is answered at once, before admission and delay.
- A payment whose delay has started is processed to the end even if its client hangs up: the
  spec warns that a call we abandoned may still be stored, and this makes it so. A payment still
  waiting for a slot is dropped if its connection is lost, as a rate limiter's queue drops a
  cancelled wait; so is a health call waiting for its window. (The HTTP layer reads a client's
  FIN as a half-close and still answers; only a reset or a lost connection cancels a wait.)
- The amount is read as the exact decimal the JSON text wrote (not the nearest binary float)
  and rounded to cents half-to-even; amounts are kept as integer cents from then on.
- `requestedAt` is kept as epoch milliseconds (finer digits are truncated).

Payments at delay 0 with a free slot are answered synchronously as bytes. A delayed or queued
payment costs one future and one timer handle, and the HTTP layer's task around it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import uuid
from decimal import ROUND_HALF_EVEN, Decimal
from urllib.parse import parse_qs

import orjson

from rinha import clock
from rinha.config import EmulatorConfig
from rinha.http import responses
from rinha.http.protocol import HttpProtocol, Limits, ServerState
from rinha.lifecycle import run_until_signalled

log = logging.getLogger(__name__)

# Health: calls that may wait for a later window once this window's permit is used.
HEALTH_QUEUE_MAX = 2
# On SIGTERM, how long answers already owed may take before they are cut off.
SHUTDOWN_GRACE_S = 2.0

_ONE = Decimal(1)

PAYMENT_OK = responses.json(200, {"message": "payment processed successfully"})
DUPLICATE = responses.error(422, "a payment with this correlationId already exists")
FAILING = responses.error(500, "payment processor is failing")
BUSY = responses.error(429, "too many payments in flight")
NOT_FOUND = responses.error(404, "no such route")
PAYMENT_NOT_FOUND = responses.error(404, "payment not found")
UNAUTHORIZED = responses.error(401, "missing or wrong X-Rinha-Token")
PURGED = responses.json(200, {"message": "All payments purged."})
TOKEN_CHANGED = responses.build(204)

NOT_ALLOWED = {
    method: responses.json(405, {"error": f"use {method.decode()}"}, extra_headers=b"allow: " + method + b"\r\n")
    for method in (b"GET", b"POST", b"PUT")
}

# path -> (method, name of the ProcessorEmulator method that answers it)
ADMIN_ROUTES = {
    b"/admin/payments-summary": (b"GET", "summary"),
    b"/admin/configurations/token": (b"PUT", "set_token"),
    b"/admin/configurations/delay": (b"PUT", "set_delay"),
    b"/admin/configurations/failure": (b"PUT", "set_failure"),
    b"/admin/purge-payments": (b"POST", "purge"),
    # Not in the real processor: lets our scenario runs find payments stored by both processors.
    b"/admin/payments": (b"GET", "list_payments"),
    # Not in the real processor either: when each health call came and how it was answered, so
    # tests can check the cluster's pace of health polling.
    b"/admin/health-calls": (b"GET", "list_health_calls"),
}
# The newest health calls kept for /admin/health-calls.
HEALTH_CALLS_KEPT = 1000

Payment = tuple[str, int, int]  # (correlationId, cents, requestedAt in epoch ms)


class Invalid(Exception):
    """A request body or query we answer with 400; the message says what was wrong."""


class ProcessorEmulator:
    """The state of one processor and the answer to every route (`handle`, called by HttpProtocol)."""

    __slots__ = (
        # Settings the admin endpoints change
        "token", "delay_ms", "failing", "fee", "fee_decimal",
        # The books: correlationId -> (cents, requestedAt ms)
        "payments",
        # Payment admission
        "max_concurrent", "max_queued", "active", "waiting",
        # Health rate limit: fixed windows of window_s seconds starting at t0 (loop time)
        "window_s", "t0", "health_window", "health_queue", "health_timer", "health_calls",
        # Delayed payments still owed an answer -> the timer that will give it
        "timers", "loop",
    )

    def __init__(self, config: EmulatorConfig) -> None:
        self.loop = asyncio.get_running_loop()
        self.token = config.token.encode()
        self.delay_ms = 0
        self.failing = False
        self.fee = config.fee
        self.fee_decimal = Decimal(repr(config.fee))
        self.payments: dict[str, tuple[int, int]] = {}
        self.max_concurrent = config.max_concurrent
        self.max_queued = config.max_queued
        # Payments being served (sleeping their delay or being answered). While `waiting` is not
        # empty every slot is taken: a finishing payment hands its slot straight to the next.
        self.active = 0
        self.waiting: collections.deque[tuple[asyncio.Future, Payment]] = collections.deque()
        self.window_s = config.rate_limit_seconds
        self.t0 = self.loop.time()
        self.health_window = -1  # the last window whose one health permit is used
        self.health_queue: list[asyncio.Future] = []
        self.health_timer: asyncio.TimerHandle | None = None  # armed for a boundary while calls queue
        self.health_calls: collections.deque[tuple[int, str]] = collections.deque(maxlen=HEALTH_CALLS_KEPT)
        self.timers: dict[asyncio.Future, asyncio.Handle] = {}

    @property
    def queued(self) -> int:
        """Payments waiting for a slot whose clients are still there."""
        return sum(1 for future, _ in self.waiting if not future.done())

    def handle(self, method: bytes, path: bytes, query: bytes, body: bytes,
               headers: dict[bytes, bytes] | None) -> bytes | asyncio.Future:
        if path == b"/payments":
            return self.pay(body) if method == b"POST" else NOT_ALLOWED[b"POST"]
        if path.startswith(b"/payments/"):
            if method != b"GET":
                return NOT_ALLOWED[b"GET"]
            if path == b"/payments/service-health":
                return self.health()
            return self.lookup(path[10:])
        route = ADMIN_ROUTES.get(path)
        if route is None:
            return NOT_FOUND
        expected, name = route
        if method != expected:
            return NOT_ALLOWED[expected]
        if headers is None or headers.get(b"x-rinha-token") != self.token:
            return UNAUTHORIZED
        try:
            return getattr(self, name)(query, body)
        except Invalid as bad:
            return responses.error(400, str(bad))

    # POST /payments: admission, then delay, then failure check, then the duplicate check and store.

    def pay(self, body: bytes) -> bytes | asyncio.Future:
        try:
            payment = parse_payment(body)
        except Invalid as bad:
            return responses.error(400, str(bad))
        if self.active < self.max_concurrent:
            self.active += 1
            delay = self.delay_ms
            if delay:
                return self._sleep(delay, payment)
            answer = self._complete(payment)
            self.active -= 1  # nobody waits while a slot was free
            return answer
        if len(self.waiting) >= self.max_queued:
            # Looks full: forget the waits whose clients left (rare, so pruned only here).
            self.waiting = collections.deque(entry for entry in self.waiting if not entry[0].done())
        if len(self.waiting) < self.max_queued:
            future = self.loop.create_future()
            self.waiting.append((future, payment))
            return future
        return BUSY

    def _sleep(self, delay_ms: int, payment: Payment) -> asyncio.Future:
        future = self.loop.create_future()
        self.timers[future] = self.loop.call_later(delay_ms / 1000, self._wake, future, payment)
        return future

    def _wake(self, future: asyncio.Future, payment: Payment) -> None:
        """The payment's delay is over: answer it (stored even if its client left) and free its slot."""
        del self.timers[future]
        answer = self._complete(payment)
        if not future.done():
            future.set_result(answer)
        self._release()

    def _release(self) -> None:
        waiting = self.waiting
        while waiting and waiting[0][0].done():
            waiting.popleft()  # its client left while it waited: it never reaches the handler
        if not waiting:
            self.active -= 1
            return
        future, payment = waiting.popleft()
        # The slot passes to the oldest waiting payment, whose delay starts now with today's value.
        delay = self.delay_ms
        if delay:
            self.timers[future] = self.loop.call_later(delay / 1000, self._wake, future, payment)
        else:
            # call_soon, not a direct call: a long queue at delay 0 would otherwise recurse.
            self.timers[future] = self.loop.call_soon(self._wake, future, payment)

    def _complete(self, payment: Payment) -> bytes:
        if self.failing:
            return FAILING
        correlation_id, cents, requested_ms = payment
        if correlation_id in self.payments:
            return DUPLICATE
        self.payments[correlation_id] = (cents, requested_ms)
        return PAYMENT_OK

    # GET /payments/service-health: one call per fixed window, two more queued, the rest 429.

    def health(self) -> bytes | asyncio.Future:
        now = self.loop.time()
        window = int((now - self.t0) // self.window_s)
        queue = self.health_queue
        if queue:
            queue[:] = [future for future in queue if not future.done()]  # drop calls whose clients left
        if not queue and self.health_window < window:
            self.health_window = window
            self.health_calls.append((clock.now_ms(), "served"))
            return self._health_answer()
        if len(queue) < HEALTH_QUEUE_MAX:
            self.health_calls.append((clock.now_ms(), "queued"))
            future = self.loop.create_future()
            queue.append(future)
            if self.health_timer is None:
                self._arm_health(window + 1)
            return future
        retry_after = max(1, math.ceil(self.t0 + (window + 1) * self.window_s - now))
        self.health_calls.append((clock.now_ms(), "limited"))
        return responses.json(429, {"error": "health check rate limit exceeded"},
                              extra_headers=b"retry-after: %d\r\n" % retry_after)

    def _arm_health(self, window: int) -> None:
        self.health_timer = self.loop.call_at(self.t0 + window * self.window_s, self._health_window_opens, window)

    def _health_window_opens(self, window: int) -> None:
        """A window begins: its permit goes to the oldest queued call still wanted."""
        self.health_timer = None
        queue = self.health_queue
        while queue:
            future = queue.pop(0)
            if not future.done():
                self.health_window = window
                future.set_result(self._health_answer())
                break
        if queue:
            self._arm_health(window + 1)

    def _health_answer(self) -> bytes:
        return responses.json(200, {"failing": self.failing, "minResponseTime": self.delay_ms})

    # GET /payments/{id}

    def lookup(self, raw_id: bytes) -> bytes:
        try:
            correlation_id = str(uuid.UUID(raw_id.decode("ascii")))
        except (ValueError, UnicodeDecodeError):
            return PAYMENT_NOT_FOUND
        stored = self.payments.get(correlation_id)
        if stored is None:
            return PAYMENT_NOT_FOUND
        cents, requested_ms = stored
        return responses.json(200, {"correlationId": correlation_id, "amount": cents / 100,
                                    "requestedAt": clock.format_ms(requested_ms)})

    # Admin routes (the token is already checked)

    def summary(self, query: bytes, body: bytes) -> bytes:
        start, end = parse_bounds(query)
        # A plain scan on purpose: this is the oracle our own ledger is checked against.
        count = cents = 0
        for amount, requested_ms in self.payments.values():
            if start <= requested_ms <= end:
                count += 1
                cents += amount
        fee_cents = int((Decimal(cents) * self.fee_decimal).quantize(_ONE, ROUND_HALF_EVEN))
        return responses.json(200, {"totalRequests": count, "totalAmount": cents / 100,
                                    "totalFee": fee_cents / 100, "feePerTransaction": self.fee})

    def set_token(self, query: bytes, body: bytes) -> bytes:
        token = _json_object(body).get("token")
        if type(token) is not str or not token:
            raise Invalid("token must be a non-empty string")
        self.token = token.encode()
        log.info("admin token changed")
        return TOKEN_CHANGED

    def set_delay(self, query: bytes, body: bytes) -> bytes:
        delay = _json_object(body).get("delay")
        if type(delay) is not int or delay < 0:
            raise Invalid("delay must be a non-negative integer (ms)")
        was, self.delay_ms = self.delay_ms, delay
        log.info("delay changed from %d to %d ms", was, delay)
        return responses.json(200, {"config": "delay", "was": was, "is": delay})

    def set_failure(self, query: bytes, body: bytes) -> bytes:
        failure = _json_object(body).get("failure")
        if type(failure) is not bool:
            raise Invalid("failure must be true or false")
        was, self.failing = self.failing, failure
        log.info("failure mode changed from %s to %s", was, failure)
        return responses.json(200, {"config": "failure", "was": was, "is": failure})

    def list_payments(self, query: bytes, body: bytes) -> bytes:
        """Every stored correlationId (an emulator extension, for double-charge checks)."""
        return responses.json(200, {"correlationIds": list(self.payments)})

    def list_health_calls(self, query: bytes, body: bytes) -> bytes:
        """The newest health calls: when each came (epoch ms) and its answer: served at once,
        queued for a later window, or limited (429)."""
        return responses.json(200, {"calls": [{"at": at, "answer": answer} for at, answer in self.health_calls]})

    def purge(self, query: bytes, body: bytes) -> bytes:
        log.info("purged %d payments", len(self.payments))
        self.payments.clear()
        return PURGED

    def close(self) -> None:
        """Stops every timer; answers still owed are cancelled (the HTTP layer then closes)."""
        for future, handle in self.timers.items():
            handle.cancel()
            future.cancel()
        self.timers.clear()
        for future, _ in self.waiting:
            future.cancel()
        self.waiting.clear()
        if self.health_timer is not None:
            self.health_timer.cancel()
            self.health_timer = None
        for future in self.health_queue:
            future.cancel()
        self.health_queue.clear()


def parse_payment(body: bytes) -> Payment:
    data = _json_object(body)
    correlation_id = data.get("correlationId")
    amount = data.get("amount")
    requested_at = data.get("requestedAt")
    if type(correlation_id) is not str:
        raise Invalid("correlationId must be a UUID string")
    try:
        correlation_id = str(uuid.UUID(correlation_id))
    except ValueError:
        raise Invalid("correlationId must be a UUID string") from None
    # type() rather than isinstance(): a JSON true is not an amount.
    if type(amount) not in (int, float) or not amount > 0 or not math.isfinite(amount):
        raise Invalid("amount must be a positive number")
    if type(requested_at) is not str:
        raise Invalid("requestedAt must be an ISO-8601 timestamp")
    try:
        requested_ms = clock.parse_ms(requested_at)
    except (ValueError, OverflowError):
        raise Invalid("requestedAt must be an ISO-8601 timestamp") from None
    # repr() is the shortest text that reads back as this float: the decimal the client wrote.
    cents = int(Decimal(repr(amount)).scaleb(2).quantize(_ONE, ROUND_HALF_EVEN))
    return correlation_id, cents, requested_ms


def parse_bounds(query: bytes) -> tuple[float, float]:
    """`from` and `to` as epoch ms, both inclusive; a missing bound is infinite."""
    params = parse_qs(query.decode("latin-1")) if query else {}
    try:
        start = clock.parse_ms(params["from"][0], round_up=True) if "from" in params else -math.inf
        end = clock.parse_ms(params["to"][0]) if "to" in params else math.inf
    except (ValueError, OverflowError):
        raise Invalid("from and to must be ISO-8601 timestamps") from None
    return start, end


def _json_object(body: bytes) -> dict:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Invalid("body is not JSON") from None
    if type(data) is not dict:
        raise Invalid("body must be a JSON object")
    return data


class EmulatorServer:
    """One listening emulator. `async with EmulatorServer(config) as server:` then `server.port`
    (the bound port, so port 0 works) and `server.emulator` (its state)."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.emulator: ProcessorEmulator | None = None
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._state = ServerState()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        emulator = self.emulator = ProcessorEmulator(self.config)
        limits = Limits(keep_headers=True)  # the admin routes read X-Rinha-Token
        state = self._state
        self._server = await loop.create_server(lambda: HttpProtocol(emulator, limits, state),
                                                self.config.host, self.config.port, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("processor emulator listening on %s:%d (fee %s)", self.config.host, self.port, self.config.fee)

    async def close(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Stops listening, lets answers already owed finish for up to `grace_s`, then cuts them."""
        if self._server is None:
            return
        loop = asyncio.get_running_loop()
        self._server.close()
        for connection in list(self._state.connections):
            connection.shutdown()
        deadline = loop.time() + grace_s
        while self._state.tasks and loop.time() < deadline:
            await asyncio.wait(list(self._state.tasks), timeout=deadline - loop.time())
        self.emulator.close()
        if self._state.tasks:
            await asyncio.wait(list(self._state.tasks), timeout=1.0)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> EmulatorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()


async def serve(config: EmulatorConfig, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
    """Serves until `stop` is set; sets `ready` once listening."""
    async with EmulatorServer(config):
        if ready is not None:
            ready.set()
        await stop.wait()


def run(config: EmulatorConfig) -> int:
    return run_until_signalled(serve, config)
