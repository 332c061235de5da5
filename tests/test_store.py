"""The worker's SQLite store: a reopened store gives back exactly what is owed, and summaries
are exact over any window, from memory or from the database."""

from __future__ import annotations

import asyncio
import random

import pytest

from conftest import new_id
from rinha.worker.queue import Payment
from rinha.worker.store import SqliteStore
from rinha.worker.store.base import BUCKET_WIDTHS_MS, window_parts


def pin(p: Payment, processor: str, ms: int) -> Payment:
    p.processor, p.requested_at = processor, ms
    return p


async def reopened(store: SqliteStore, **settings) -> tuple[SqliteStore, list[Payment]]:
    """Closes nothing: the old connection is dropped as a killed process would leave it."""
    store._commit_at.cancel()
    store._stop_checkpoints.set()
    store.conn = None  # no final commit, no close: only what was committed survives
    fresh = SqliteStore(str(store.directory), **settings)
    return fresh, await fresh.open()


async def test_a_reopened_store_gives_back_owed_and_pinned_payments_but_not_stored_ones(tmp_path):
    store = SqliteStore(str(tmp_path))
    assert await store.open() == []
    queued, in_flight, paid, refused = (new_id() for _ in range(4))
    fresh = await store.accept([[queued, 100], [in_flight, 200], [paid, 300], [refused, 400]])
    by_id = {p.correlation_id: p for p in fresh}
    await store.intent(pin(by_id[in_flight], "default", 1_000))
    await store.intent(pin(by_id[paid], "default", 1_001))
    await store.stored(by_id[paid])
    await store.intent(pin(by_id[refused], "fallback", 1_002))
    await store.failed(by_id[refused])
    await store.close()

    store = SqliteStore(str(tmp_path))
    owed = await store.open()
    assert [p.correlation_id for p in owed] == [queued, in_flight, refused]  # oldest first
    assert (owed[0].processor, owed[0].requested_at) == (None, None)
    assert (owed[1].processor, owed[1].requested_at) == ("default", 1_000)
    assert owed[2].processor is None  # a definite failure unpins
    assert await store.summary(None, None) == {"default": (1, 300), "fallback": (0, 0)}
    assert store.stored_count("default") == 1
    assert await store.accept([[paid, 300], [queued, 100]]) == []  # known ids: the unique key answers
    await store.close()


async def test_a_kill_after_the_awaited_steps_keeps_them_and_a_lost_stored_comes_back_pinned(tmp_path):
    store = SqliteStore(str(tmp_path))
    await store.open()
    cid = new_id()
    [payment] = await store.accept([[cid, 1990]])
    await store.intent(pin(payment, "fallback", 42))
    await store.stored(payment)  # its commit is due in a few ms: the crash below comes first
    store, owed = await reopened(store)
    assert [(p.correlation_id, p.processor, p.requested_at) for p in owed] == [(cid, "fallback", 42)]
    await store.close()


async def test_repeats_are_dropped_within_a_batch_across_batches_and_beyond_the_recent_ids(tmp_path):
    store = SqliteStore(str(tmp_path), recent_ids=8)
    await store.open()
    ids = [new_id() for _ in range(40)]
    fresh = await store.accept([[cid, 1] for cid in ids] + [[ids[0], 1]])
    assert [p.correlation_id for p in fresh] == ids
    assert len(store.recent_ids) == 8  # bounded: older repeats are answered by the unique key
    assert await store.accept([[cid, 1] for cid in reversed(ids)]) == []
    await store.close()


async def test_purge_forgets_stored_payments_but_not_owed_ones(tmp_path):
    store = SqliteStore(str(tmp_path))
    await store.open()
    paid, owed = new_id(), new_id()
    by_id = {p.correlation_id: p for p in await store.accept([[paid, 5], [owed, 6]])}
    await store.intent(pin(by_id[paid], "default", 5))
    await store.stored(by_id[paid])
    await store.purge()
    assert await store.summary(None, None) == {"default": (0, 0), "fallback": (0, 0)}
    assert [p.correlation_id for p in await store.accept([[paid, 7], [owed, 6]])] == [paid]  # paid again
    await store.close()
    store = SqliteStore(str(tmp_path))
    assert sorted(p.correlation_id for p in await store.open()) == sorted([owed, paid])
    await store.close()


def test_window_parts_cover_the_range_once_with_aligned_buckets():
    rng = random.Random(7)
    for _ in range(2000):
        lo = rng.randrange(0, 30_000_000)
        hi = lo + rng.choice([0, 1, 999, 1000, 3_600_000, rng.randrange(0, 20_000_000)])
        parts = window_parts(lo, hi)
        covered = lo
        for width, first, last in parts:
            assert first == covered and first < last
            if width:
                assert first % width == 0 and last % width == 0
            covered = last
        assert covered == hi or (lo == hi and parts == [])
        assert sum(1 for width, *_ in parts if width == 0) <= 2


@pytest.mark.parametrize("recent_window_s", [3600.0, 0.001])  # answered from memory; from SQL
async def test_summaries_are_exact_over_random_windows(tmp_path, recent_window_s):
    rng = random.Random(13)
    store = SqliteStore(str(tmp_path), recent_window_s=recent_window_s, commit_interval_ms=0)
    await store.open()
    base = 1_750_000_000_000 - 1_750_000_000_000 % BUCKET_WIDTHS_MS[0]
    entries = []
    batch = [[new_id(), rng.randrange(1, 10_000)] for _ in range(3000)]
    for payment in await store.accept(batch):
        # Mostly in time order over ~3 hours, some late (resends keep their requestedAt), ties on edges.
        ms = base + len(entries) * 3_600 + rng.choice([0, 0, 0, -rng.randrange(0, 50_000), 1])
        processor = rng.choice(["default", "default", "fallback"])
        await store.intent(pin(payment, processor, ms))
        await store.stored(payment)
        entries.append((processor, ms, payment.cents))
    edges = [base, base + 999, base + 1_000, base + 3_600_000, base + 3_599_999] + [ms for _, ms, _ in entries[::97]]
    windows = [(None, None), (None, base + 5_000_000), (base + 4_000_000, None)]
    windows += [(rng.choice(edges), rng.choice(edges)) for _ in range(150)]
    windows += [(lo, lo + rng.randrange(0, 20_000)) for lo in rng.sample(edges, 30)]
    for start, end in windows:
        want = {name: (sum(1 for p, ms, _ in entries if p == name and (start is None or ms >= start) and (end is None or ms <= end)),
                       sum(c for p, ms, c in entries if p == name and (start is None or ms >= start) and (end is None or ms <= end)))
                for name in ("default", "fallback")}
        assert await store.summary(start, end) == want, (start, end)
    await store.close()


async def test_the_recent_window_stays_bounded_and_moves_its_horizon(tmp_path):
    store = SqliteStore(str(tmp_path), recent_window_s=1.0, commit_interval_ms=0)
    await store.open()
    payments = await store.accept([[new_id(), 1] for _ in range(20_000)])
    # 1,000 payments per second; intents awaited together share their commits, as the senders' do.
    await asyncio.gather(*(store.intent(pin(payment, "default", 1_000_000 + i)) for i, payment in enumerate(payments)))
    for payment in payments:
        await store.stored(payment)
    kept = len(store.recent.ledger.series["default"])
    assert kept <= 3 * 1000 + 2 * 1024  # a bounded window, not the 20,000 stored
    assert store.recent.covers(1_000_000 + 19_000) and not store.recent.covers(1_000_000)
    assert await store.summary(1_000_000, None) == {"default": (20_000, 20_000), "fallback": (0, 0)}  # from SQL
    await store.close()


def test_an_unknown_sync_policy_is_refused(tmp_path):
    with pytest.raises(ValueError):
        SqliteStore(str(tmp_path), sync="sometimes")


async def test_start_up_reads_only_what_is_owed_whatever_the_history(tmp_path):
    store = SqliteStore(str(tmp_path), commit_interval_ms=0)
    await store.open()
    payments = await store.accept([[new_id(), 1] for _ in range(30_000)])
    await asyncio.gather(*(store.intent(pin(p, "default", 5_000_000 + i)) for i, p in enumerate(payments)))
    for payment in payments[:-3]:
        await store.stored(payment)
    await store.close()
    store = SqliteStore(str(tmp_path))
    owed = await store.open()
    assert [p.correlation_id for p in owed] == [p.correlation_id for p in payments[-3:]]
    assert len(store.recent_ids) == 3                       # the history stays on disk:
    assert len(store.recent.ledger.series["default"]) == 0  # nothing of it is read into memory
    assert store.recent.horizon == 5_000_000 + 30_000 - 3   # newer than anything stored before
    assert await store.summary(5_000_000, None) == {"default": (29_997, 29_997), "fallback": (0, 0)}
    await store.close()


async def test_a_cancelled_waiter_leaves_the_shared_commit_to_the_others(tmp_path):
    store = SqliteStore(str(tmp_path), commit_interval_ms=50)
    await store.open()
    first_id, second_id = new_id(), new_id()
    first = asyncio.ensure_future(store.accept([[first_id, 1]]))
    second = asyncio.ensure_future(store.accept([[second_id, 2]]))
    await asyncio.sleep(0)  # one turn of the loop: both now wait for the same commit
    first.cancel()          # a link lost while its batch waited
    assert [p.correlation_id for p in await second] == [second_id]
    await store.close()
    store = SqliteStore(str(tmp_path))
    assert [p.correlation_id for p in await store.open()] == [first_id, second_id]  # both were kept
    await store.close()
