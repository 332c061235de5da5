"""Health polling for the whole cluster: one call per 5 s per processor, whoever the workers are.

The poll of a processor is held by a lease, a PostgreSQL advisory lock on a connection of its
own: the worker holding it polls and writes the answer (with when it polled) to the `health`
table; every other worker reads that row once a second and reports what is new to its router. A
holder that dies drops its connection and so its lock; the next one to take it waits until one
interval after the last poll before polling, so the processor's 5 s window holds across the
handover. The time of each poll is written before the call is made (`health_slots`), not only
with its answer: a holder that loses PostgreSQL mid-call (its answer never written) has still
left the time of its call for the next holder to keep its distance from.
"""

from __future__ import annotations

import asyncio
import logging
import zlib

import asyncpg

from rinha import clock
from rinha.worker.health import HealthPoller

log = logging.getLogger(__name__)

FOLLOW_INTERVAL_S = 1.0

READ = ("SELECT h.failing, h.min_response_ms, h.polled_at, s.claimed_at FROM (SELECT $1::text AS processor) p "
        "LEFT JOIN health h USING (processor) LEFT JOIN health_slots s USING (processor)")
# Taken only a whole interval after the previous one, atomically: even two workers that both
# believe they hold the lease (one's connection dead but not yet known to be) cannot both poll.
CLAIM_SLOT = ("INSERT INTO health_slots VALUES ($1, $2) ON CONFLICT (processor) DO UPDATE SET "
              "claimed_at = excluded.claimed_at WHERE health_slots.claimed_at <= excluded.claimed_at - $3 "
              "RETURNING claimed_at")
WRITE = ("INSERT INTO health VALUES ($1, $2, $3, $4) ON CONFLICT (processor) DO UPDATE SET "
         "failing = excluded.failing, min_response_ms = excluded.min_response_ms, polled_at = excluded.polled_at")


class LeasedHealthPoller(HealthPoller):
    def __init__(self, *args, pg_dsn: str, pool_factory, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pg_dsn = pg_dsn
        self.pool_factory = pool_factory
        self.lock_key = zlib.crc32(f"rinha-health-{self.name}".encode()) & 0x7FFFFFFF
        self.lease: asyncpg.Connection | None = None
        self.seen_at = 0      # polled_at of the last row reported
        report = self.on_report
        self.on_report = lambda failing, ms: self._polled(report, failing, ms)
        self.follow = report
        self.polled_at = 0

    def _polled(self, report, failing: bool, ms: int) -> None:
        report(failing, ms)
        self.seen_at = self.polled_at
        task = asyncio.get_running_loop().create_task(self._write(failing, ms, self.polled_at))
        task.add_done_callback(lambda t: t.exception())

    async def _write(self, failing: bool, ms: int, polled_at: int) -> None:
        await self.pool_factory().execute(WRITE, self.name, failing, ms, polled_at)

    async def _hold_lease(self) -> bool:
        if self.lease is not None and not self.lease.is_closed():
            return True
        self.lease = None
        connection = await asyncpg.connect(self.pg_dsn, timeout=2)
        if await connection.fetchval("SELECT pg_try_advisory_lock($1)", self.lock_key):
            self.lease = connection
            log.info("health lease taken", extra={"event": "health_lease", "processor": self.name})
            return True
        await connection.close()
        return False

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            wait_s = FOLLOW_INTERVAL_S
            try:
                row = await self.pool_factory().fetchrow(READ, self.name)
                if row["polled_at"] is not None and row["polled_at"] > self.seen_at:
                    self.seen_at = row["polled_at"]
                    self.follow(row["failing"], row["min_response_ms"])
                if await self._hold_lease():
                    last = max(row["polled_at"] or 0, row["claimed_at"] or 0)
                    due_in = (last + self.interval_s * 1000 - clock.now_ms()) / 1000
                    if due_in <= 0:
                        self.polled_at = clock.now_ms()
                        if await self.pool_factory().fetchval(CLAIM_SLOT, self.name, self.polled_at,
                                                              int(self.interval_s * 1000)) is not None:
                            wait_s = max(self.interval_s, await self.poll_once())
                    else:
                        wait_s = min(due_in, self.interval_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # PostgreSQL away: keep the last view, try again
                log.warning("health lease round failed", extra={"processor": self.name, "error": repr(exc)})
                if self.lease is not None:
                    self.lease.terminate()
                    self.lease = None
            await asyncio.sleep(max(0.0, started + wait_s - loop.time()))

    async def stop(self) -> None:
        await super().stop()
        if self.lease is not None:
            await self.lease.close()
