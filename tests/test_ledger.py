"""The ledger's range sums, checked against a brute-force list, across chunk splits too."""

from __future__ import annotations

import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rinha.worker import ledger as ledger_module
from rinha.worker.ledger import CHUNK, Ledger, TimeSeriesTotals


def brute(entries: list[tuple[int, int]], start: int | None, end: int | None) -> tuple[int, int]:
    chosen = [cents for ms, cents in entries
              if (start is None or ms >= start) and (end is None or ms <= end)]
    return len(chosen), sum(chosen)


def filled(entries) -> TimeSeriesTotals:
    series = TimeSeriesTotals()
    for ms, cents in entries:
        series.add(ms, cents)
    return series


def check_invariants(series: TimeSeriesTotals) -> None:
    flat = [ms for chunk in series.times for ms in chunk]
    assert flat == sorted(flat)
    assert all(chunk for chunk in series.times)
    assert series.starts == [chunk[0] for chunk in series.times]
    assert series.chunk_counts == [len(chunk) for chunk in series.times]
    assert series.chunk_cents == [sum(chunk) for chunk in series.cents]
    assert all(len(chunk) < 2 * ledger_module.CHUNK for chunk in series.times)


# TimeSeriesTotals: small cases

ENTRIES = [(100, 10), (200, 20), (200, 5), (300, 30), (400, 40)]


def test_empty_series():
    series = TimeSeriesTotals()
    assert len(series) == 0
    assert series.totals(None, None) == (0, 0)
    assert series.totals(0, 10**15) == (0, 0)
    assert series.totals(5, None) == (0, 0)


def test_both_boundaries_are_inclusive():
    series = filled(ENTRIES)
    assert series.totals(100, 400) == (5, 105)
    assert series.totals(200, 300) == (3, 55)
    assert series.totals(200, 200) == (2, 25)
    assert series.totals(101, 399) == (3, 55)
    assert series.totals(100, 100) == (1, 10)
    assert series.totals(400, 400) == (1, 40)


def test_empty_ranges():
    series = filled(ENTRIES)
    assert series.totals(201, 299) == (0, 0)
    assert series.totals(300, 200) == (0, 0)  # from after to
    assert series.totals(250, 250) == (0, 0)


def test_ranges_before_and_after_all_data():
    series = filled(ENTRIES)
    assert series.totals(0, 99) == (0, 0)
    assert series.totals(None, 99) == (0, 0)
    assert series.totals(401, 10**13) == (0, 0)
    assert series.totals(401, None) == (0, 0)


def test_unbounded_sides():
    series = filled(ENTRIES)
    assert series.totals(None, None) == (5, 105)
    assert series.totals(None, 200) == (3, 35)
    assert series.totals(300, None) == (2, 70)
    assert series.totals(None, 100) == (1, 10)
    assert series.totals(400, None) == (1, 40)


def test_out_of_order_inserts():
    shuffled = [(300, 30), (100, 10), (400, 40), (200, 20), (50, 1), (200, 5)]
    series = filled(shuffled)
    check_invariants(series)
    assert len(series) == 6
    assert series.totals(None, None) == (6, 106)
    assert series.totals(50, 50) == (1, 1)
    assert series.totals(51, 300) == (4, 65)


def test_duplicates_of_the_same_ms():
    series = filled([(1000, 1)] * 50 + [(999, 100), (1001, 1000)])
    assert series.totals(1000, 1000) == (50, 50)
    assert series.totals(999, 1000) == (51, 150)
    assert series.totals(1000, 1001) == (51, 1050)
    assert series.totals(None, 999) == (1, 100)


# Across chunk splits


def test_in_order_inserts_across_many_chunks():
    entries = [(ms, ms % 97 + 1) for ms in range(5 * CHUNK + 17)]
    series = filled(entries)
    check_invariants(series)
    assert len(series.times) > 2
    for start, end in [(None, None), (0, 0), (CHUNK - 1, CHUNK), (CHUNK, 3 * CHUNK), (10, 4 * CHUNK + 3),
                       (2 * CHUNK + 5, None), (None, CHUNK + 1), (5 * CHUNK, 5 * CHUNK + 16),
                       (5 * CHUNK + 17, None), (3 * CHUNK, 3 * CHUNK)]:
        assert series.totals(start, end) == brute(entries, start, end), (start, end)


def test_boundaries_exactly_on_chunk_starts():
    entries = [(ms * 10, 1) for ms in range(3 * CHUNK)]
    series = filled(entries)
    check_invariants(series)
    for chunk_start in series.starts:
        for start, end in [(chunk_start, None), (None, chunk_start), (chunk_start, chunk_start),
                           (chunk_start - 1, chunk_start + 1), (chunk_start + 1, chunk_start + 9)]:
            assert series.totals(start, end) == brute(entries, start, end), (start, end)


def test_out_of_order_inserts_across_chunks():
    rng = random.Random(7)
    entries = [(rng.randrange(0, 50_000), rng.randrange(1, 10_000)) for _ in range(5 * CHUNK)]
    series = filled(entries)
    check_invariants(series)
    for _ in range(300):
        a, b = sorted(rng.randrange(-10, 50_010) for _ in range(2))
        assert series.totals(a, b) == brute(entries, a, b), (a, b)
    assert series.totals(None, None) == brute(entries, None, None)


def test_duplicates_spanning_a_chunk_split_are_all_counted():
    """A run of equal timestamps that a split cuts in two: a bound on that ms must count both halves."""
    tie = 5000
    entries = [(ms, 1) for ms in range(CHUNK - 1)] + [(tie, 10)] * (CHUNK + 1)
    series = filled(entries)
    check_invariants(series)
    assert series.times[0][-1] == tie and series.starts[1] == tie  # the split fell inside the run
    assert series.totals(tie, None) == (CHUNK + 1, 10 * (CHUNK + 1))
    assert series.totals(tie, tie) == (CHUNK + 1, 10 * (CHUNK + 1))
    assert series.totals(None, tie) == (2 * CHUNK, (CHUNK - 1) + 10 * (CHUNK + 1))


def test_many_duplicates_of_one_ms_across_several_chunks():
    entries = [(7, 3)] * (5 * CHUNK) + [(6, 1), (8, 2)]
    series = filled(entries)
    check_invariants(series)
    assert series.totals(7, 7) == (5 * CHUNK, 15 * CHUNK)
    assert series.totals(6, 7) == (5 * CHUNK + 1, 15 * CHUNK + 1)
    assert series.totals(7, None) == (5 * CHUNK + 1, 15 * CHUNK + 2)


# Property test against a brute-force list, with tiny chunks so splits happen constantly

# A narrow time range makes equal timestamps (clock ties) common, also across chunk edges.
timestamps = st.integers(min_value=0, max_value=15)
entries_strategy = st.lists(st.tuples(timestamps, st.integers(min_value=1, max_value=10**11)), max_size=100)
bounds = st.one_of(st.none(), st.integers(min_value=-2, max_value=17))


@settings(max_examples=300, deadline=None)
@example(entries=[(1, 1), (5, 2), (5, 4), (5, 8), (9, 16)], queries=[(5, None), (5, 5), (None, 5)], chunk=1)
@given(entries_strategy, st.lists(st.tuples(bounds, bounds), min_size=1, max_size=12), st.sampled_from([1, 2, 3, 8]))
def test_totals_match_brute_force(entries, queries, chunk):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ledger_module, "CHUNK", chunk)
        series = filled(entries)
        check_invariants(series)
    assert len(series) == len(entries)
    for start, end in queries:
        assert series.totals(start, end) == brute(entries, start, end), (start, end)


# Ledger


def test_summary_shape_and_amounts():
    ledger = Ledger()
    ledger.record("default", 1000, 1990)
    ledger.record("default", 2000, 1990)
    ledger.record("fallback", 1500, 1)
    summary = ledger.summary(None, None)
    assert summary == {
        "default": {"totalRequests": 2, "totalAmount": 39.8},
        "fallback": {"totalRequests": 1, "totalAmount": 0.01},
    }
    assert list(summary) == ["default", "fallback"]
    for side in summary.values():
        assert set(side) == {"totalRequests", "totalAmount"}
        assert type(side["totalRequests"]) is int
        assert type(side["totalAmount"]) is float
    assert ledger.recorded == 3


def test_summary_of_an_empty_ledger():
    assert Ledger().summary(None, None) == {
        "default": {"totalRequests": 0, "totalAmount": 0.0},
        "fallback": {"totalRequests": 0, "totalAmount": 0.0},
    }
    assert type(Ledger().summary(None, None)["default"]["totalAmount"]) is float


def test_summary_window_is_inclusive_per_processor():
    ledger = Ledger()
    for ms in (100, 200, 300):
        ledger.record("default", ms, 1000)
        ledger.record("fallback", ms + 1, 500)
    assert ledger.summary(200, 300) == {
        "default": {"totalRequests": 2, "totalAmount": 20.0},
        "fallback": {"totalRequests": 1, "totalAmount": 5.0},
    }
    assert ledger.summary(None, 100)["fallback"] == {"totalRequests": 0, "totalAmount": 0.0}


def test_summary_amount_is_exact_cents_over_many_payments():
    ledger = Ledger()
    for ms in range(16_750):
        ledger.record("default", ms, 1990)
    # 16,750 x 19.90 summed as floats drifts; from integer cents it is exact.
    assert ledger.summary(None, None)["default"]["totalAmount"] == 333325.0
    assert ledger.summary(0, 9)["default"] == {"totalRequests": 10, "totalAmount": 199.0}


def test_unknown_processor_is_refused():
    with pytest.raises(KeyError):
        Ledger().record("other", 1, 1)


def test_purge_empties_everything():
    ledger = Ledger()
    for ms in range(3 * CHUNK):
        ledger.record("default" if ms % 2 else "fallback", ms, 100)
    ledger.purge()
    assert ledger.recorded == 0
    assert ledger.summary(None, None) == {
        "default": {"totalRequests": 0, "totalAmount": 0.0},
        "fallback": {"totalRequests": 0, "totalAmount": 0.0},
    }
    ledger.record("default", 5, 250)
    assert ledger.summary(None, None)["default"] == {"totalRequests": 1, "totalAmount": 2.5}
    assert ledger.recorded == 1


def test_custom_processor_names():
    ledger = Ledger(("a", "b", "c"))
    ledger.record("c", 1, 1)
    assert ledger.summary(None, None) == {
        "a": {"totalRequests": 0, "totalAmount": 0.0},
        "b": {"totalRequests": 0, "totalAmount": 0.0},
        "c": {"totalRequests": 1, "totalAmount": 0.01},
    }


def test_drop_before_forgets_only_whole_older_chunks(monkeypatch):
    monkeypatch.setattr(ledger_module, "CHUNK", 4)
    series = TimeSeriesTotals()
    for ms in range(40):
        series.add(ms, 1)
    newest = series.drop_before(20)
    assert newest is not None and newest < 20
    assert series.totals(newest + 1, None) == (40 - newest - 1, 40 - newest - 1)  # whole from there on
    assert series.drop_before(0) is None
