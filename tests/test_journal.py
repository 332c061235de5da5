"""The worker's journal: replay gives back exactly the state that was written, whatever the crash."""

from __future__ import annotations

import os

import pytest

from conftest import new_id
from rinha.worker.journal import Journal, replay
from rinha.worker.queue import Payment


def payment(cents: int = 1990) -> Payment:
    return Payment(new_id(), cents)


def pin(p: Payment, processor: str, ms: int) -> Payment:
    p.processor, p.requested_at = processor, ms
    return p


async def test_replay_gives_back_owed_pinned_and_stored_payments(tmp_path):
    journal = Journal(str(tmp_path), fsync="never")
    assert journal.open().owed == []
    queued, in_flight, paid, refused = payment(100), payment(200), payment(300), payment(400)
    journal.accepted([queued, in_flight, paid, refused])
    journal.intent(pin(in_flight, "default", 1_000))
    journal.intent(pin(paid, "default", 1_001))
    journal.stored(paid)
    journal.intent(pin(refused, "fallback", 1_002))
    journal.failed(refused)
    await journal.close()  # the process may as well have died here: every write went to the OS

    state = replay(tmp_path / "journal.jsonl")
    owed = {p.correlation_id: p for p in state.owed}
    assert [p.correlation_id for p in state.owed] == [queued.correlation_id, in_flight.correlation_id,
                                                      refused.correlation_id]
    assert owed[queued.correlation_id].processor is None
    assert (owed[in_flight.correlation_id].processor, owed[in_flight.correlation_id].requested_at) == ("default", 1_000)
    assert owed[refused.correlation_id].processor is None  # a definite failure unpins
    assert state.stored == [(paid.correlation_id, "default", 1_001, 300)]


async def test_a_torn_last_record_is_dropped_and_the_rest_kept(tmp_path):
    journal = Journal(str(tmp_path), fsync="never")
    journal.open()
    first, second = payment(), payment()
    journal.accepted([first, second])
    await journal.close()
    with open(tmp_path / "journal.jsonl", "ab") as raw:
        raw.write(b'["I","' + first.correlation_id.encode()[:10])  # a crash in the middle of a write
    state = replay(tmp_path / "journal.jsonl")
    assert state.torn_tail
    assert [p.correlation_id for p in state.owed] == [first.correlation_id, second.correlation_id]
    assert all(p.processor is None for p in state.owed)
    reopened = Journal(str(tmp_path), fsync="never")
    assert len(reopened.open().owed) == 2
    await reopened.close()
    assert not replay(tmp_path / "journal.jsonl").torn_tail  # opening rewrote it whole


async def test_purge_forgets_stored_payments_but_not_owed_ones(tmp_path):
    journal = Journal(str(tmp_path), fsync="never")
    journal.open()
    paid, owed = payment(), payment()
    journal.accepted([paid, owed])
    journal.intent(pin(paid, "default", 5))
    journal.stored(paid)
    journal.purged()
    journal.accepted([pin(Payment(paid.correlation_id, 7), None, None)])  # the same id may come again
    await journal.close()
    state = replay(tmp_path / "journal.jsonl")
    assert state.stored == []
    assert sorted(p.correlation_id for p in state.owed) == sorted([owed.correlation_id, paid.correlation_id])


async def test_compaction_keeps_the_state_and_shrinks_the_file(tmp_path):
    journal = Journal(str(tmp_path), fsync="never", compact_bytes=2_000)
    journal.open()
    churned = payment()
    journal.accepted([churned])
    for attempt in range(50):  # a payment retried many times leaves many records behind
        journal.intent(pin(churned, "default", attempt))
        journal.failed(churned)
    journal.intent(pin(churned, "default", 99))
    assert journal.needs_compaction()
    before = os.path.getsize(tmp_path / "journal.jsonl")
    churned_state = replay(tmp_path / "journal.jsonl")
    journal.compact(churned_state.owed, churned_state.stored)
    after = os.path.getsize(tmp_path / "journal.jsonl")
    assert after < before / 10
    journal.stored(churned)  # appends still work after the swap
    await journal.close()
    state = replay(tmp_path / "journal.jsonl")
    assert state.owed == [] and state.stored == [(churned.correlation_id, "default", 99, 1990)]


async def test_always_policy_groups_concurrent_waits_into_few_fsyncs(tmp_path, monkeypatch):
    calls = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append(fd), real(fd))[1])
    journal = Journal(str(tmp_path), fsync="always")
    journal.open()
    import asyncio

    async def write_and_wait():
        journal.accepted([payment()])
        await journal.durable()

    await asyncio.gather(*(write_and_wait() for _ in range(50)))
    assert journal.synced_upto == journal.written == 50
    assert 1 <= len(calls) <= 3  # one fsync serves everyone who wrote before it started
    await journal.close()


def test_an_unknown_fsync_policy_is_refused(tmp_path):
    with pytest.raises(ValueError):
        Journal(str(tmp_path), fsync="sometimes")
