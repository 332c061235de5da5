"""What each processor has stored for us: count and sum of cents over any [from, to] window.

Per processor, the entries are kept sorted by `requestedAt` in chunks of a bounded size, and each
chunk keeps its count and cents total. A range query bisects to the two edge chunks, sums inside
them, and sums the totals of the chunks between: a few microseconds at a million entries. Inserts
arrive almost in time order (out-of-order ones are resends and clock ties), so they land in the
last chunk and cost a bisect and an append.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

# 1,024 entries per chunk: the edge sums and the chunk-totals sum both stay around a thousand
# additions at a million entries, and a split moves only a thousand pointers.
CHUNK = 1024


class TimeSeriesTotals:
    """A multiset of (ms, cents) answering count and sum over inclusive time ranges."""

    __slots__ = ("starts", "times", "cents", "chunk_counts", "chunk_cents")

    def __init__(self) -> None:
        self.starts: list[int] = []            # first timestamp of each chunk, for bisecting
        self.times: list[list[int]] = []       # per chunk, sorted timestamps
        self.cents: list[list[int]] = []       # per chunk, cents aligned with times
        self.chunk_counts: list[int] = []
        self.chunk_cents: list[int] = []

    def __len__(self) -> int:
        return sum(self.chunk_counts)

    def add(self, ms: int, cents: int) -> None:
        if not self.times:
            self.starts.append(ms)
            self.times.append([ms])
            self.cents.append([cents])
            self.chunk_counts.append(1)
            self.chunk_cents.append(cents)
            return
        i = max(bisect_right(self.starts, ms) - 1, 0)
        times, amounts = self.times[i], self.cents[i]
        if ms >= times[-1]:
            times.append(ms)
            amounts.append(cents)
        else:
            at = bisect_right(times, ms)
            times.insert(at, ms)
            amounts.insert(at, cents)
            self.starts[i] = times[0]
        self.chunk_counts[i] += 1
        self.chunk_cents[i] += cents
        if len(times) >= 2 * CHUNK:
            self._split(i)

    def _split(self, i: int) -> None:
        times, amounts = self.times[i], self.cents[i]
        upper_times, upper_cents = times[CHUNK:], amounts[CHUNK:]
        del times[CHUNK:], amounts[CHUNK:]
        self.times.insert(i + 1, upper_times)
        self.cents.insert(i + 1, upper_cents)
        self.starts.insert(i + 1, upper_times[0])
        self.chunk_counts[i] = len(times)
        self.chunk_counts.insert(i + 1, len(upper_times))
        upper_sum = sum(upper_cents)
        self.chunk_cents.insert(i + 1, upper_sum)
        self.chunk_cents[i] -= upper_sum

    def drop_before(self, ms: int) -> int | None:
        """Forgets whole chunks whose entries are all older than `ms`; returns the newest time
        forgotten (None if nothing was), so the caller knows from when on the series is whole."""
        newest = None
        while len(self.times) > 1 and self.times[0][-1] < ms:
            newest = self.times[0][-1]
            del self.starts[0], self.times[0], self.cents[0], self.chunk_counts[0], self.chunk_cents[0]
        return newest

    def totals(self, start: int | None, end: int | None) -> tuple[int, int]:
        """(count, cents) of entries with start <= ms <= end; None is unbounded."""
        if not self.times:
            return 0, 0
        if start is None and end is None:
            return sum(self.chunk_counts), sum(self.chunk_cents)
        # bisect_left: equal timestamps may straddle a split, so the chunk before may hold some too.
        lo_chunk = 0 if start is None else max(bisect_left(self.starts, start) - 1, 0)
        hi_chunk = len(self.times) - 1 if end is None else bisect_right(self.starts, end) - 1
        if hi_chunk < lo_chunk:
            return 0, 0
        lo_at = 0 if start is None else bisect_left(self.times[lo_chunk], start)
        if lo_chunk == hi_chunk:
            times = self.times[lo_chunk]
            hi_at = len(times) if end is None else bisect_right(times, end)
            if hi_at <= lo_at:
                return 0, 0
            return hi_at - lo_at, sum(self.cents[lo_chunk][lo_at:hi_at])
        hi_times = self.times[hi_chunk]
        hi_at = len(hi_times) if end is None else bisect_right(hi_times, end)
        count = (len(self.times[lo_chunk]) - lo_at) + sum(self.chunk_counts[lo_chunk + 1:hi_chunk]) + hi_at
        cents = (sum(self.cents[lo_chunk][lo_at:]) + sum(self.chunk_cents[lo_chunk + 1:hi_chunk])
                 + sum(self.cents[hi_chunk][:hi_at]))
        return count, cents


class Ledger:
    """The record of every payment a processor confirmed, by processor name."""

    __slots__ = ("series", "recorded")

    def __init__(self, processors: tuple[str, ...] = ("default", "fallback")) -> None:
        self.series = {name: TimeSeriesTotals() for name in processors}
        self.recorded = 0

    def record(self, processor: str, requested_at_ms: int, cents: int) -> None:
        self.series[processor].add(requested_at_ms, cents)
        self.recorded += 1

    def summary(self, start: int | None, end: int | None) -> dict:
        """The body of `/payments-summary`: amounts as decimals, from exact integer cents."""
        body = {}
        for name, series in self.series.items():
            count, cents = series.totals(start, end)
            body[name] = {"totalRequests": count, "totalAmount": cents / 100}
        return body

    def purge(self) -> None:
        for name in self.series:
            self.series[name] = TimeSeriesTotals()
        self.recorded = 0
