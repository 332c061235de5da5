"""The embedded store: SQLite from the standard library, in WAL mode, in the worker's --data-dir.

One row per payment, keyed by its correlationId (the unique key that charges a payment once
however old its first attempt), and a table of per-hour and per-second totals kept as payments
are stored, so a summary over any window reads a few thousand rows at most.

Writes go into one open transaction that is committed `commit_interval_ms` after the first write
since the last commit: `accept` and `intent` wait for that commit (group commit: one serves every
write made meanwhile), `stored` and `failed` only make sure it comes. Once committed, a write is
in the OS (kill -9 loses nothing); `sync` says when it reaches the disk: `full` fsyncs every
commit, `normal` at WAL checkpoints (a power cut may lose the last commits), `off` never.
Checkpoints (copying the WAL into the database, and with `normal` the fsync) run in a thread of
their own on a connection of their own, once a second, so the event loop does not wait for the
copying. The WAL can start again from its beginning only when a write begins with all of it
copied, which a steady stream of commits never allows by itself: so once the thread finds the
WAL longer than `WAL_RESTART_FRAMES`, the event loop checkpoints what little is left right after
its next commit (one short checkpoint every few seconds) and the next write restarts the WAL.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sqlite3
import tempfile
import threading
from pathlib import Path

from rinha.worker.queue import Payment
from rinha.worker.store.base import BUCKET_WIDTHS_MS, FAR_FUTURE_MS, PROCESSORS, RecentIds, RecentWindow, Store, window_parts

log = logging.getLogger(__name__)

SYNC_POLICIES = ("full", "normal", "off")
DATABASE = "rinha.sqlite3"
CHECKPOINT_INTERVAL_S = 1.0
WAL_RESTART_FRAMES = 4096   # 16 MB of 4 KiB pages: the WAL file stays about this size

SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
    cid TEXT NOT NULL UNIQUE,
    cents INTEGER NOT NULL,
    processor INTEGER,          -- index in PROCESSORS while pinned or stored; NULL while free
    requested_at INTEGER,       -- epoch ms sent with the call
    stored INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS owed ON payments(stored) WHERE stored = 0;
CREATE INDEX IF NOT EXISTS stored_by_time ON payments(requested_at, processor, cents) WHERE stored = 1;
CREATE TABLE IF NOT EXISTS totals (
    width INTEGER NOT NULL,     -- bucket width in ms (BUCKET_WIDTHS_MS)
    bucket INTEGER NOT NULL,    -- requested_at // width
    processor INTEGER NOT NULL,
    count INTEGER NOT NULL,
    cents INTEGER NOT NULL,
    PRIMARY KEY (width, bucket, processor)
) WITHOUT ROWID;
"""

ACCEPT = "INSERT OR IGNORE INTO payments (cid, cents) VALUES (?, ?)"
INTENT = ("INSERT INTO payments (cid, cents, processor, requested_at) VALUES (?, ?, ?, ?) "
          "ON CONFLICT (cid) DO UPDATE SET processor = excluded.processor, requested_at = excluded.requested_at")
STORED = "UPDATE payments SET stored = 1 WHERE cid = ?"
FAILED = "UPDATE payments SET processor = NULL, requested_at = NULL WHERE cid = ?"
ADD_TOTALS = ("INSERT INTO totals VALUES (?, ?, ?, ?, ?) ON CONFLICT (width, bucket, processor) "
              "DO UPDATE SET count = count + excluded.count, cents = cents + excluded.cents")
SUM_PAYMENTS = ("SELECT processor, count(*), sum(cents) FROM payments "
                "WHERE stored = 1 AND requested_at >= ? AND requested_at < ? GROUP BY processor")
SUM_TOTALS = ("SELECT processor, sum(count), sum(cents) FROM totals "
              "WHERE width = ? AND bucket >= ? AND bucket < ? GROUP BY processor")


class SqliteStore(Store):
    def __init__(self, directory: str | None, *, sync: str = "normal", commit_interval_ms: float = 5.0,
                 recent_window_s: float = 60.0, recent_ids: int = 65_536, cache_mb: float = 8.0) -> None:
        """`directory` None: a private temporary folder, deleted on close (state lost on a crash)."""
        if sync not in SYNC_POLICIES:
            raise ValueError(f"sync policy must be one of {SYNC_POLICIES}")
        self.ephemeral = directory is None
        self.directory = None if directory is None else Path(directory)  # made by open() when None
        self.sync = sync
        self.commit_interval_s = commit_interval_ms / 1000
        self.cache_kib = int(cache_mb * 1024)
        self.recent = RecentWindow(int(recent_window_s * 1000))
        self.recent_ids = RecentIds(recent_ids)
        self.counts = dict.fromkeys(PROCESSORS, 0)
        self.code = {name: i for i, name in enumerate(PROCESSORS)}
        self.conn: sqlite3.Connection | None = None
        self._pending_totals: dict[tuple[int, int, int], list[int]] = {}
        self._commit_at: asyncio.TimerHandle | None = None
        self._committed: asyncio.Future | None = None   # resolved by the next commit
        self.commits = 0
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()
        self._wal_long = False  # set by the checkpointer, acted on by the next commit

    @property
    def path(self) -> Path:
        return self.directory / DATABASE

    async def open(self) -> list[Payment]:
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="rinha-worker-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        conn = self.conn = sqlite3.connect(self.path, isolation_level="DEFERRED")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.sync.upper()}")
        conn.execute(f"PRAGMA cache_size = -{self.cache_kib}")
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer thread does it, off the loop
        conn.executescript(SCHEMA)
        owed = []
        for cid, cents, processor, requested_at in conn.execute(
                "SELECT cid, cents, processor, requested_at FROM payments WHERE stored = 0 ORDER BY rowid"):
            payment = Payment(cid, cents)
            if processor is not None:
                payment.processor, payment.requested_at, payment.attempts = PROCESSORS[processor], requested_at, 1
            owed.append(payment)
            self.recent_ids.add(cid)
        for processor, count in conn.execute("SELECT processor, sum(count) FROM totals WHERE width = ? GROUP BY processor",
                                             (BUCKET_WIDTHS_MS[0],)):
            self.counts[PROCESSORS[processor]] = count
        newest = conn.execute("SELECT max(requested_at) FROM payments WHERE stored = 1").fetchone()[0]
        self.recent.reset(0 if newest is None else newest + 1)
        self._checkpointer = threading.Thread(target=self._checkpoint_every_interval, name="store-checkpoints", daemon=True)
        self._checkpointer.start()
        log.info("store opened", extra={"event": "store_opened", "path": str(self.path), "owed": len(owed),
                                        "pinned": sum(1 for p in owed if p.processor), "stored": sum(self.counts.values())})
        return owed

    # Writing

    async def accept(self, batch: list) -> list[Payment]:
        fresh = []
        recent, execute = self.recent_ids, self.conn.execute
        for correlation_id, cents in batch:
            if correlation_id in recent:
                continue  # a resent batch, or the same payment posted twice: charge once
            recent.add(correlation_id)
            if execute(ACCEPT, (correlation_id, cents)).rowcount:
                fresh.append(Payment(correlation_id, cents))
        self.accepted += len(fresh)
        self.duplicates += len(batch) - len(fresh)
        if self.conn.in_transaction:
            await self._durable()  # repeats too: what they repeat may not be committed yet
        return fresh

    async def intent(self, payment: Payment) -> None:
        self.conn.execute(INTENT, (payment.correlation_id, payment.cents, self.code[payment.processor], payment.requested_at))
        await self._durable()

    async def stored(self, payment: Payment) -> None:
        self.conn.execute(STORED, (payment.correlation_id,))
        processor, ms, cents = self.code[payment.processor], payment.requested_at, payment.cents
        for width in BUCKET_WIDTHS_MS:
            key = (width, ms // width, processor)
            total = self._pending_totals.get(key)
            if total is None:
                self._pending_totals[key] = [1, cents]
            else:
                total[0] += 1
                total[1] += cents
        self.recent.add(payment.processor, ms, cents)
        self.counts[payment.processor] += 1
        self._commit_soon()

    async def failed(self, payment: Payment) -> None:
        self.conn.execute(FAILED, (payment.correlation_id,))
        self._commit_soon()

    async def purge(self) -> None:
        self._pending_totals.clear()
        self.conn.execute("DELETE FROM payments WHERE stored = 1")
        self.conn.execute("DELETE FROM totals")
        await self._durable()
        self.recent.reset(0)   # nothing stored: memory holds the whole (empty) history again
        self.recent_ids.clear()
        self.counts = dict.fromkeys(PROCESSORS, 0)

    # Committing

    def _commit_soon(self) -> None:
        if self._commit_at is None:
            self._commit_at = asyncio.get_running_loop().call_later(self.commit_interval_s, self._commit)

    def _durable(self) -> asyncio.Future:
        if self._committed is None:
            self._committed = asyncio.get_running_loop().create_future()
        self._commit_soon()
        # Shielded: a waiter cancelled (a sender stopped, a link lost) must not cancel the
        # commit that every other waiter shares.
        return asyncio.shield(self._committed)

    def _flush_totals(self) -> None:
        if self._pending_totals:
            self.conn.executemany(ADD_TOTALS, [(*key, count, cents) for key, (count, cents) in self._pending_totals.items()])
            self._pending_totals.clear()

    def _commit(self) -> None:
        self._commit_at = None
        committed, self._committed = self._committed, None
        try:
            self._flush_totals()
            self.conn.commit()
        except sqlite3.Error as exc:
            # Nothing is acknowledged or sent on a failed commit; the worker cannot go on safely.
            log.critical("store commit failed", extra={"event": "store_commit_failed", "error": repr(exc)})
            if committed is not None and not committed.done():
                committed.set_exception(exc)
            raise
        self.commits += 1
        if committed is not None and not committed.done():
            committed.set_result(None)
        if self._wal_long:
            self._wal_long = False
            try:
                self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # nothing written since: it completes
            except sqlite3.Error:
                self._wal_long = True  # the thread's checkpoint held it: after the next commit, then

    def _checkpoint_every_interval(self) -> None:
        """A PASSIVE checkpoint never blocks the writer: it copies what no reader needs and stops."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA synchronous = {self.sync.upper()}")
            while not self._stop_checkpoints.wait(CHECKPOINT_INTERVAL_S):
                try:
                    _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if frames > WAL_RESTART_FRAMES:
                        self._wal_long = True
                except sqlite3.Error as exc:  # busy or I/O: the next round tries again; the WAL keeps all
                    log.warning("store checkpoint failed", extra={"event": "store_checkpoint_failed", "error": repr(exc)})
        finally:
            conn.close()

    # Reading

    async def summary(self, start: int | None, end: int | None) -> dict[str, tuple[int, int]]:
        if self.recent.covers(start):
            return self.recent.totals(start, end)
        self._flush_totals()
        totals = {name: [0, 0] for name in PROCESSORS}
        lo, hi = (0 if start is None else start), (FAR_FUTURE_MS if end is None else end + 1)
        execute = self.conn.execute
        for width, first, last in window_parts(lo, hi):
            rows = (execute(SUM_PAYMENTS, (first, last)) if width == 0
                    else execute(SUM_TOTALS, (width, first // width, last // width)))
            for processor, count, cents in rows:
                total = totals[PROCESSORS[processor]]
                total[0] += count
                total[1] += cents
        return {name: (count, cents) for name, (count, cents) in totals.items()}

    def stored_count(self, processor: str) -> int:
        return self.counts[processor]

    async def close(self) -> None:
        if self.conn is None:
            return
        if self._commit_at is not None:
            self._commit_at.cancel()
        self._commit()
        if self._checkpointer is not None:
            self._stop_checkpoints.set()
            await asyncio.get_running_loop().run_in_executor(None, self._checkpointer.join)
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()
        self.conn = None
        if self.ephemeral:
            shutil.rmtree(self.directory, ignore_errors=True)
