"""Cluster mode's store: the queue on NATS JetStream, the ledger on PostgreSQL, shared by every worker.

The same `Store` steps as the embedded store, spread over two engines:

  accept(batch)   publishes each payment to a work-queue stream (replicated on the NATS cluster)
                  with `Nats-Msg-Id` = correlationId, and returns once every PubAck is in: the
                  API node's batch may then be ACKed. Nothing is queued locally: payments reach a
                  worker's queue only through the stream's consumer, which every worker pulls.
  intent(p)       claims the pin in PostgreSQL: the first worker's (processor, requestedAt) wins,
                  and a later claimant is handed that pin, so a payment held by two workers at once
                  (a redelivery racing a slow worker) still goes to one processor, one timestamp.
  stored(p)       marks the row stored, then acks the message: a worker that dies before the ack
                  has its payments redelivered, and the row (or the processor's 422) says stored.
  failed(p)       nothing: pins are kept until stored (`keeps_pins`), since another worker may be
                  calling the same processor with the same pin at that moment.
  restamp(p)      after a call that surely stored nothing, the next one keeps the processor but is
                  stamped now: a resend with its first stamp, stored when a processor recovers,
                  would land in a window the auditor may be reading at that moment.

The stream's duplicate window is finite (2 minutes); the row's unique correlationId is what
charges a payment once at any age: a message whose row is stored is acked and dropped.

A worker pulls only while it holds fewer than `max_held` messages: a backlog (an outage) waits in
the stream, replicated, not in any one worker's memory, and a live worker marks what it holds as
in progress every third of `ack_wait_s`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import asyncpg
import nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig

from rinha import clock
from rinha.worker.queue import Payment, PaymentQueue
from rinha.worker.store.base import PROCESSORS, RECENT_WAIT_MAX_S, Store

log = logging.getLogger(__name__)

STREAM = "RINHA_PAYMENTS"
SUBJECT = "rinha.payments"
CONSUMER = "workers"
DUPLICATE_WINDOW_S = 120.0
# Writes wait this long for company before one round trip carries them all (group commit).
COMMIT_INTERVAL_S = 0.002
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 1.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
    cid TEXT PRIMARY KEY,          -- the unique key: charged once at any age
    cents BIGINT NOT NULL,
    processor TEXT NOT NULL,       -- the pin, written before the first call, kept until stored
    requested_at BIGINT NOT NULL,  -- epoch ms sent with every call of this payment
    stored BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX IF NOT EXISTS stored_by_time ON payments (requested_at) INCLUDE (processor, cents) WHERE stored;
CREATE INDEX IF NOT EXISTS owed_by_time ON payments (requested_at) WHERE NOT stored;
CREATE TABLE IF NOT EXISTS stored_counts (
    shard INTEGER NOT NULL,        -- one row per worker's shard and processor: no counter all workers fight over
    processor TEXT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (shard, processor)
);
CREATE TABLE IF NOT EXISTS health (
    processor TEXT PRIMARY KEY,
    failing BOOLEAN NOT NULL,
    min_response_ms INTEGER NOT NULL,
    polled_at BIGINT NOT NULL      -- epoch ms of the call, so a new lease holder keeps the pace
);
CREATE TABLE IF NOT EXISTS health_slots (
    processor TEXT PRIMARY KEY,
    claimed_at BIGINT NOT NULL     -- epoch ms of the latest call, written before it is made
);
"""

CLAIM = """
INSERT INTO payments (cid, cents, processor, requested_at)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[])
ON CONFLICT (cid) DO UPDATE SET processor = payments.processor
RETURNING cid, processor, requested_at
"""
# A pin kept through a call that stored nothing takes a fresh requestedAt, unless another holder of
# the payment moved it first (or it is stored): then the row's pin is handed back as it is.
RESTAMP = """
WITH wanted AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS w(cid, old, fresh)),
moved AS (UPDATE payments p SET requested_at = w.fresh FROM wanted w
          WHERE p.cid = w.cid AND p.requested_at = w.old AND NOT p.stored RETURNING p.cid, p.processor, p.requested_at)
SELECT cid, processor, requested_at FROM moved
UNION ALL
SELECT p.cid, p.processor, p.requested_at FROM payments p JOIN wanted w ON p.cid = w.cid
WHERE NOT EXISTS (SELECT 1 FROM moved m WHERE m.cid = p.cid)
"""
# Only rows this call marks are counted (RETURNING gives no row already stored), in the same statement.
MARK_STORED = """
WITH marked AS (UPDATE payments SET stored = TRUE WHERE cid = ANY($1::text[]) AND NOT stored RETURNING processor)
INSERT INTO stored_counts (shard, processor, n) SELECT $2, processor, count(*) FROM marked GROUP BY processor
ON CONFLICT (shard, processor) DO UPDATE SET n = stored_counts.n + excluded.n
"""
STORED_COUNTS = "SELECT processor, sum(n) FROM stored_counts GROUP BY processor"
COUNT_SHARDS = 64
COUNTS_REFRESH_S = 1.0
PINS = "SELECT cid, processor, requested_at, stored FROM payments WHERE cid = ANY($1::text[])"
SUMMARY = ("SELECT processor, count(*), coalesce(sum(cents), 0) FROM payments "
           "WHERE stored AND requested_at BETWEEN $1 AND $2 GROUP BY processor")
# Pins not yet stored inside a window, per processor: how many are stamped at or before $3, and
# the newest stamped after it (the recent ones, whose calls a summary waits for).
UNSETTLED = ("SELECT processor, count(*) FILTER (WHERE requested_at <= $3), max(requested_at) FILTER (WHERE requested_at > $3) "
             "FROM payments WHERE NOT stored AND requested_at BETWEEN $1 AND $2 GROUP BY processor")
SETTLE_POLL_S = 0.005
FAR_FUTURE_MS = 2 ** 62


PG_TRANSIENT = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError)


async def retry_pg(call, what: str):
    """Runs `call()` until PostgreSQL answers (it may be restarting); what must be durable or read
    cannot be skipped, so there is no deadline, only a backoff up to RETRY_MAX_S."""
    backoff = RETRY_FIRST_S
    while True:
        try:
            return await call()
        except PG_TRANSIENT as exc:
            log.warning(f"ledger {what} failed; retrying", extra={"event": "pg_retry", "error": repr(exc)})
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RETRY_MAX_S)


class GroupCommit:
    """Items added within `interval_s` of each other go to PostgreSQL in one call of `write`;
    each adder waits for it. A failed write (PostgreSQL restarting) is retried until it succeeds:
    a pin must be durable before its call, and a stored payment before its ack."""

    def __init__(self, write, interval_s: float) -> None:
        self.write = write
        self.interval_s = interval_s
        self.items: list = []
        self.futures: list[asyncio.Future] = []
        self.timer: asyncio.TimerHandle | None = None
        self.tasks: set[asyncio.Task] = set()

    def add(self, item) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.items.append(item)
        self.futures.append(future)
        if self.timer is None:
            self.timer = loop.call_later(self.interval_s, self._flush)
        return future

    def _flush(self) -> None:
        self.timer = None
        items, futures = self.items, self.futures
        self.items, self.futures = [], []
        task = asyncio.get_running_loop().create_task(self._write(items, futures))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _write(self, items: list, futures: list[asyncio.Future]) -> None:
        result = await retry_pg(lambda: self.write(items), "write")
        for i, future in enumerate(futures):
            if not future.done():
                future.set_result(result[i] if result is not None else None)

    async def drain(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self._flush()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)


class ClusterStore(Store):
    keeps_pins = True

    def __init__(self, queue: PaymentQueue, *, nats_url: str, pg_dsn: str, ack_wait_s: float, replicas: int,
                 settle_s: float, max_held: int, settle_recent_s: float = 0.0, call_timeout_s: float = 10.0,
                 name: str = "worker") -> None:
        self.queue = queue
        self.nats_servers = [url.strip() for url in nats_url.split(",") if url.strip()]
        self.pg_dsn = pg_dsn
        self.ack_wait_s = ack_wait_s
        self.replicas = replicas
        self.settle_s = settle_s
        self.settle_recent_ms = round(settle_recent_s * 1000)
        self.call_timeout_s = call_timeout_s  # the longest any call lasts, for a processor not in call_timeouts
        self.max_held = max_held
        self.name = name
        self.nc = None
        self.js = None
        self.pool: asyncpg.Pool | None = None
        self.held: dict[str, object] = {}      # correlationId -> its latest delivered message
        self.room = asyncio.Event()             # set while fewer than max_held are held
        self.counts = dict.fromkeys(PROCESSORS, 0)   # the whole ledger's, read every COUNTS_REFRESH_S
        self.shard = random.randrange(COUNT_SHARDS)
        self.claims = GroupCommit(self._claim, COMMIT_INTERVAL_S)
        self.marks = GroupCommit(self._mark_stored, COMMIT_INTERVAL_S)
        self.restamps = GroupCommit(self._restamp, COMMIT_INTERVAL_S)
        self._tasks: list[asyncio.Task] = []

    # Engines

    async def open(self) -> list[Payment]:
        self.pool = await self._connect_pg()
        async with self.pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock(7461)")  # one schema creator at a time
            try:
                await conn.execute(SCHEMA)
            finally:
                await conn.execute("SELECT pg_advisory_unlock(7461)")
        self.nc = await nats.connect(servers=self.nats_servers, name=self.name, max_reconnect_attempts=-1,
                                     reconnect_time_wait=0.1, connect_timeout=2,
                                     error_cb=self._nats_error, disconnected_cb=self._nats_disconnected,
                                     reconnected_cb=self._nats_reconnected)
        self.js = self.nc.jetstream(timeout=5)
        await self._ensure_stream()
        self.room.set()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._consume()), loop.create_task(self._keep_alive()),
                       loop.create_task(self._read_counts())]
        return []  # what is owed is in the stream: the consumer brings it

    async def _connect_pg(self) -> asyncpg.Pool:
        deadline = time.monotonic() + 30
        while True:
            try:
                return await asyncpg.create_pool(self.pg_dsn, min_size=1, max_size=8, command_timeout=10)
            except (OSError, asyncpg.PostgresError) as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("PostgreSQL not reachable yet", extra={"event": "pg_wait", "error": repr(exc)})
                await asyncio.sleep(0.2)

    async def _ensure_stream(self) -> None:
        stream = StreamConfig(name=STREAM, subjects=[SUBJECT], retention=RetentionPolicy.WORK_QUEUE,
                              storage=StorageType.FILE, num_replicas=self.replicas,
                              duplicate_window=DUPLICATE_WINDOW_S)
        consumer = ConsumerConfig(durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT, ack_wait=self.ack_wait_s,
                                  max_deliver=-1, max_ack_pending=1_000_000, deliver_policy=DeliverPolicy.ALL)
        deadline = time.monotonic() + 30
        while True:
            try:  # while the cluster forms (no meta leader yet) every call fails for a moment
                try:
                    await self.js.stream_info(STREAM)
                except nats.js.errors.NotFoundError:
                    await self.js.add_stream(stream)
                try:
                    await self.js.consumer_info(STREAM, CONSUMER)
                except nats.js.errors.NotFoundError:
                    await self.js.add_consumer(STREAM, consumer)
                self.sub = await self.js.pull_subscribe_bind(CONSUMER, STREAM)
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise
                log.info("JetStream not ready yet", extra={"event": "jetstream_wait", "error": repr(exc)})
                await asyncio.sleep(0.2)

    async def _nats_error(self, exc) -> None:
        log.debug("NATS client error", extra={"error": repr(exc)})

    async def _nats_disconnected(self) -> None:
        log.warning("NATS server lost; reconnecting", extra={"event": "nats_disconnected"})

    async def _nats_reconnected(self) -> None:
        log.info("NATS reconnected", extra={"event": "nats_reconnected", "server": str(self.nc.connected_url.netloc)
                                            if self.nc and self.nc.connected_url else None})

    # Store

    async def accept(self, batch: list) -> list[Payment]:
        pending = list(batch)
        backoff = RETRY_FIRST_S
        retried: set[str] = set()
        while pending:
            results = await asyncio.gather(*(self.js.publish(SUBJECT, f"{cid} {cents}".encode(),
                                                             headers={"Nats-Msg-Id": cid})
                                             for cid, cents in pending), return_exceptions=True)
            failed = []
            for item, result in zip(pending, results):
                if isinstance(result, BaseException):
                    failed.append(item)
                    retried.add(item[0])
                # A duplicate of our own failed attempt (stored, but its PubAck lost) is still new.
                elif result.duplicate and item[0] not in retried:
                    self.duplicates += 1
                else:
                    self.accepted += 1
            if failed:
                log.warning("publish to JetStream failed; retrying", extra={
                    "event": "publish_retry", "payments": len(failed), "error": repr(next(
                        r for r in results if isinstance(r, BaseException)))})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX_S)
            pending = failed
        return []  # the stream's consumer brings them to whichever worker pulls them

    async def intent(self, payment: Payment) -> None:
        processor, requested_at = await self.claims.add(payment)
        payment.processor, payment.requested_at = processor, requested_at  # an earlier claim wins

    async def restamp(self, payment: Payment) -> None:
        processor, requested_at = await self.restamps.add((payment, clock.now_ms()))
        payment.processor, payment.requested_at = processor, requested_at

    async def stored(self, payment: Payment) -> None:
        await self.marks.add(payment.correlation_id)
        message = self.held.pop(payment.correlation_id, None)
        if message is not None:
            self._release()
            try:
                await message.ack()
            except Exception as exc:  # the row says stored: a redelivery is acked on sight
                log.debug("ack failed", extra={"error": repr(exc)})

    async def failed(self, payment: Payment) -> None:
        return None

    async def summary(self, start: int | None, end: int | None) -> dict[str, tuple[int, int]]:
        """Cluster-wide audit safety: pins inside the window that are not yet stored, in any worker,
        are waited for before the totals are read (a processor stores a payment just before
        answering). Those stamped within `settle_recent_s` of now are waited for until they are
        stored or their call's timeout has passed (at most RECENT_WAIT_MAX_S), as the worker's own
        settle does for its calls: a window that reaches the present counts what is under way in
        it. Older ones get only
        `settle_s`; an audit window ends 1.5 s before now, so it never waits longer than that."""
        lo = -FAR_FUTURE_MS if start is None else start
        hi = FAR_FUTURE_MS if end is None else end
        asked_at = clock.now_ms()
        recent_since = asked_at - self.settle_recent_ms if self.settle_recent_ms > 0 else FAR_FUTURE_MS
        recent_cap = asked_at + round(1000 * RECENT_WAIT_MAX_S)
        loop = asyncio.get_running_loop()
        settle_until = loop.time() + self.settle_s
        async with self.pool.acquire() as conn:
            while True:
                older, recent_until = 0, 0
                for processor, count, newest in await conn.fetch(UNSETTLED, lo, hi, recent_since):
                    older += count
                    if newest is not None:  # its call, the latest of that processor's, ends by then
                        timeout = self.call_timeouts.get(processor)
                        recent_until = max(recent_until, newest + round(
                            1000 * (timeout() if timeout is not None else self.call_timeout_s)))
                if not (clock.now_ms() < min(recent_until, recent_cap) or (older and loop.time() < settle_until)):
                    break
                await asyncio.sleep(SETTLE_POLL_S)
            rows = await conn.fetch(SUMMARY, lo, hi)
        totals = dict.fromkeys(PROCESSORS, (0, 0))
        for processor, count, cents in rows:
            totals[processor] = (count, int(cents))
        return totals

    async def purge(self) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            # First: a marking statement locks stored_counts before it touches a row, so none is
            # half done (a row marked, its count not yet added) while the two are emptied.
            await conn.execute("LOCK TABLE stored_counts IN EXCLUSIVE MODE")
            await conn.execute("DELETE FROM payments WHERE stored")
            await conn.execute("DELETE FROM stored_counts")
        self.counts = dict.fromkeys(PROCESSORS, 0)

    def stored_count(self, processor: str) -> int:
        """The whole ledger's count (every worker's), as of the last read: at most COUNTS_REFRESH_S old."""
        return self.counts[processor]

    async def _read_counts(self) -> None:
        while True:
            try:
                rows = await self.pool.fetch(STORED_COUNTS)
                self.counts = {**dict.fromkeys(PROCESSORS, 0), **{processor: int(n) for processor, n in rows}}
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # PostgreSQL restarting: the last counts stand
                log.debug("stored counts not read", extra={"error": repr(exc)})
            await asyncio.sleep(COUNTS_REFRESH_S)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.claims.drain()
        await self.marks.drain()
        await self.restamps.drain()
        if self.nc is not None:
            await self.nc.close()  # what we held unacked is redelivered to the other workers
        if self.pool is not None:
            await self.pool.close()

    # Writes, grouped

    async def _claim(self, payments: list[Payment]) -> list[tuple[str, int]]:
        unique = {p.correlation_id: p for p in payments}
        rows = await self.pool.fetch(CLAIM, list(unique), [p.cents for p in unique.values()],
                                     [p.processor for p in unique.values()], [p.requested_at for p in unique.values()])
        pins = {cid: (processor, requested_at) for cid, processor, requested_at in rows}
        return [pins[p.correlation_id] for p in payments]

    async def _restamp(self, items: list[tuple[Payment, int]]) -> list[tuple[str, int]]:
        unique = {payment.correlation_id: (payment.requested_at, fresh) for payment, fresh in items}
        rows = await self.pool.fetch(RESTAMP, list(unique), [old for old, _ in unique.values()],
                                     [fresh for _, fresh in unique.values()])
        pins = {cid: (processor, requested_at) for cid, processor, requested_at in rows}
        # A row gone (purged once stored): the payment keeps its pin, stamped afresh.
        return [pins.get(p.correlation_id, (p.processor, fresh)) for p, fresh in items]

    async def _mark_stored(self, cids: list[str]) -> None:
        await self.pool.execute(MARK_STORED, list(set(cids)), self.shard)
        return None

    # The consumer

    def _release(self) -> None:
        if len(self.held) < self.max_held:
            self.room.set()

    async def _consume(self) -> None:
        while True:
            await self.room.wait()
            want = self.max_held - len(self.held)
            if want <= 0:
                self.room.clear()
                continue
            try:
                messages = await self.sub.fetch(batch=min(want, 256), timeout=1.0)
            except NatsTimeout:
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a NATS server lost, a consumer leader moving: pull again
                log.debug("fetch failed", extra={"error": repr(exc)})
                await asyncio.sleep(0.05)
                continue
            await self._take(messages)
            if len(self.held) >= self.max_held:
                self.room.clear()

    async def _take(self, messages: list) -> None:
        fresh: dict[str, tuple[int, object]] = {}
        for message in messages:
            cid, _, cents = message.data.decode().partition(" ")
            if cid in self.held:
                self.held[cid] = message  # redelivered while we still work on it: ack the latest
                continue
            fresh[cid] = (int(cents), message)
        if not fresh:
            return
        rows = await retry_pg(lambda: self.pool.fetch(PINS, list(fresh)), "read")
        known = {cid: (processor, requested_at, stored) for cid, processor, requested_at, stored in rows}
        for cid, (cents, message) in fresh.items():
            pin = known.get(cid)
            if pin is not None and pin[2]:
                await message.ack()  # stored already (a resend past the duplicate window, or a lost ack)
                continue
            payment = Payment(cid, cents)
            if pin is not None:
                payment.processor, payment.requested_at = pin[0], pin[1]
            self.held[cid] = message
            self.queue.put(payment)

    async def _keep_alive(self) -> None:
        """Tells JetStream every held message is still being worked on, so only a dead worker's
        payments are redelivered."""
        while True:
            await asyncio.sleep(self.ack_wait_s / 3)
            for message in list(self.held.values()):
                try:
                    await message.in_progress()
                except Exception as exc:
                    log.debug("in_progress failed", extra={"error": repr(exc)})
                    break

    def health_poller(self, name: str, base_url: str, session_factory, **kwargs):
        """Leased: one worker in the cluster polls each processor; the others read its answers."""
        from rinha.cluster.health import LeasedHealthPoller
        return LeasedHealthPoller(name, base_url, session_factory, pg_dsn=self.pg_dsn,
                                  pool_factory=lambda: self.pool, **kwargs)
