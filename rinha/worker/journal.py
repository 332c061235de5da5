"""The worker's append-only journal: what it accepted, where it sent what, and what came of it.

One line per record, orjson arrays, in `DATA_DIR/journal.jsonl`:

  ["A", id, cents]               accepted from an API node (written before the batch is ACKed)
  ["I", id, processor, ms]       about to call `processor` with requestedAt `ms` (written before
                                 the call, so a crash can never forget where a payment may be)
  ["S", id]                      stored by the processor of its last intent: in the ledger
  ["F", id]                      the last call surely did not store it: free to go anywhere
  ["P"]                          purge: the ledger and the ids it holds are forgotten

Every record reaches the OS with one `write` before the worker acts on it, so a killed worker
(kill -9) loses nothing. Reaching the disk is the fsync policy's business:
  always    an ACK or a call waits for the fsync of its records; fsyncs are grouped (group
            commit) so one serves every record written meanwhile
  interval  fsync in the background every `fsync_interval_ms`: a machine crash loses at most
            that much (the default)
  never     leave it to the OS
On start the journal is replayed into the queue, the pins and the ledger; when it has grown past
`compact_bytes` it is rewritten with only the records that the present state needs.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from rinha.worker.queue import Payment

log = logging.getLogger(__name__)

FSYNC_POLICIES = ("always", "interval", "never")
JOURNAL = "journal.jsonl"


@dataclass
class Replayed:
    """The state a journal describes: payments still owed (oldest first) and what was stored."""

    owed: list[Payment] = field(default_factory=list)
    stored: list[tuple[str, str, int, int]] = field(default_factory=list)  # (id, processor, ms, cents)
    records: int = 0
    torn_tail: bool = False


def replay(path: Path) -> Replayed:
    """Reads a journal back. A last line cut short by a crash is ignored (it was never acted on)."""
    result = Replayed()
    if not path.exists():
        return result
    owed: dict[str, Payment] = {}
    stored: dict[str, tuple[str, str, int, int]] = {}
    with path.open("rb") as journal:
        for line in journal:
            if not line.endswith(b"\n"):
                result.torn_tail = True
                break
            record = orjson.loads(line)
            result.records += 1
            kind = record[0]
            if kind == "A":
                if record[1] not in owed and record[1] not in stored:
                    owed[record[1]] = Payment(record[1], record[2])
            elif kind == "I":
                payment = owed[record[1]]
                payment.processor, payment.requested_at = record[2], record[3]
                payment.attempts += 1
            elif kind == "S":
                payment = owed.pop(record[1])
                stored[payment.correlation_id] = (payment.correlation_id, payment.processor,
                                                  payment.requested_at, payment.cents)
            elif kind == "F":
                owed[record[1]].unpin()
            # Records are written in the order the worker acted, so an I, S or F always follows
            # its A: a KeyError here means a corrupt journal, and starting would be unsafe.
            elif kind == "P":
                stored.clear()
    result.owed = list(owed.values())
    result.stored = list(stored.values())
    return result


class Journal:
    def __init__(self, directory: str, *, fsync: str = "interval", fsync_interval_ms: float = 50.0,
                 compact_bytes: int = 64 * 1024 * 1024) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync policy must be one of {FSYNC_POLICIES}")
        self.directory = Path(directory)
        self.path = self.directory / JOURNAL
        self.fsync = fsync
        self.fsync_interval_s = fsync_interval_ms / 1000
        self.compact_bytes = compact_bytes
        self.fd = -1
        self.size = 0
        self.written = 0          # records written since open
        self.synced_upto = 0      # records known to be on disk
        self._sync_waiters: list[tuple[int, asyncio.Future]] = []
        self._sync_task: asyncio.Task | None = None
        self._group_task: asyncio.Task | None = None
        self._syncing = False

    def open(self) -> Replayed:
        self.directory.mkdir(parents=True, exist_ok=True)
        state = replay(self.path)
        if state.torn_tail:
            log.warning("journal ended in a torn record (a crash mid-write); it is dropped",
                        extra={"event": "journal_torn_tail", "path": str(self.path)})
        # Start from a compacted copy: it also drops a torn tail.
        self._rewrite(state)
        log.info("journal replayed", extra={"event": "journal_replayed", "path": str(self.path),
                                            "records": state.records, "owed": len(state.owed),
                                            "pinned": sum(1 for p in state.owed if p.processor),
                                            "stored": len(state.stored)})
        if self.fsync == "interval":
            self._sync_task = asyncio.get_running_loop().create_task(self._sync_every_interval())
        return state

    async def close(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
            await asyncio.gather(self._sync_task, return_exceptions=True)
        if self.fd >= 0:
            if self.fsync != "never":
                os.fdatasync(self.fd)
            os.close(self.fd)
            self.fd = -1

    # Writing

    def accepted(self, payments: list[Payment]) -> None:
        self._write(b"".join(orjson.dumps(["A", p.correlation_id, p.cents]) + b"\n" for p in payments), len(payments))

    def intent(self, payment: Payment) -> None:
        self._write(orjson.dumps(["I", payment.correlation_id, payment.processor, payment.requested_at]) + b"\n", 1)

    def stored(self, payment: Payment) -> None:
        self._write(b'["S","%s"]\n' % payment.correlation_id.encode(), 1)

    def failed(self, payment: Payment) -> None:
        self._write(b'["F","%s"]\n' % payment.correlation_id.encode(), 1)

    def purged(self) -> None:
        self._write(b'["P"]\n', 1)

    def _write(self, data: bytes, records: int) -> None:
        view = memoryview(data)
        while view:
            done = os.write(self.fd, view)
            view = view[done:]
        self.size += len(data)
        self.written += records

    async def durable(self) -> None:
        """Returns once everything written so far is on disk, if the policy is `always`.

        Concurrent callers share one fsync (group commit): whoever arrives while an fsync runs
        waits for the next one, which covers all of them."""
        if self.fsync != "always" or self.synced_upto >= self.written:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._sync_waiters.append((self.written, waiter))
        if not self._syncing:
            self._syncing = True  # now, not when the task starts: later callers join this one
            self._group_task = asyncio.get_running_loop().create_task(self._group_sync())
        await waiter

    async def _group_sync(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._sync_waiters:
                target = self.written
                await loop.run_in_executor(None, os.fdatasync, self.fd)
                self.synced_upto = target
                still = []
                for upto, waiter in self._sync_waiters:
                    if upto <= target:
                        if not waiter.done():
                            waiter.set_result(None)
                    else:
                        still.append((upto, waiter))
                self._sync_waiters = still
        finally:
            self._syncing = False

    async def _sync_every_interval(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.fsync_interval_s)
            if self.synced_upto < self.written:
                target = self.written
                await loop.run_in_executor(None, os.fdatasync, self.fd)
                self.synced_upto = target

    # Compaction

    def needs_compaction(self) -> bool:
        return self.size > self.compact_bytes

    def compact(self, owed: list[Payment], stored: list[tuple[str, str, int, int]]) -> None:
        """Rewrites the journal as the fewest records that give back the present state."""
        before = self.size
        self._rewrite(Replayed(owed=owed, stored=stored))
        log.info("journal compacted", extra={"event": "journal_compacted", "bytes_before": before,
                                             "bytes_after": self.size})

    def _rewrite(self, state: Replayed) -> None:
        lines = []
        for correlation_id, processor, ms, cents in state.stored:
            lines.append(orjson.dumps(["A", correlation_id, cents]))
            lines.append(orjson.dumps(["I", correlation_id, processor, ms]))
            lines.append(orjson.dumps(["S", correlation_id]))
        for payment in state.owed:
            lines.append(orjson.dumps(["A", payment.correlation_id, payment.cents]))
            if payment.processor is not None:
                lines.append(orjson.dumps(["I", payment.correlation_id, payment.processor, payment.requested_at]))
        data = b"".join(line + b"\n" for line in lines)
        fresh = self.path.with_suffix(".jsonl.new")
        with fresh.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(fresh, self.path)  # atomic: a crash leaves the old journal or the new, whole
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self.size = len(data)
        self.written = self.synced_upto = 0


class NullJournal:
    """No journal (no --data-dir): the same calls, nothing kept. A crash loses the worker's state."""

    fsync = "never"

    def open(self) -> Replayed:
        return Replayed()

    async def close(self) -> None:
        pass

    def accepted(self, payments: list[Payment]) -> None:
        pass

    def intent(self, payment: Payment) -> None:
        pass

    def stored(self, payment: Payment) -> None:
        pass

    def failed(self, payment: Payment) -> None:
        pass

    def purged(self) -> None:
        pass

    async def durable(self) -> None:
        pass

    def needs_compaction(self) -> bool:
        return False

