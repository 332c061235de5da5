"""Wall-clock time as integer milliseconds since the epoch, and its ISO-8601 form.

The ledger, the link and the processors all speak milliseconds: the auditor's windows have
millisecond precision, so anything finer would only invent disagreements.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def format_ms(ms: int) -> str:
    """`2025-07-15T12:34:56.789Z`: the form the processors store and the auditor sends."""
    seconds, millis = divmod(ms, 1000)
    t = time.gmtime(seconds)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, millis)


def parse_ms(text: str, *, round_up: bool = False) -> int:
    """An ISO-8601 timestamp as epoch ms; no offset means UTC.

    Finer-than-ms input is rounded inward of the range it bounds: a `from` rounds up and a `to`
    rounds down, so a payment is counted only if the exact bound includes it.
    Raises ValueError on anything that is not a timestamp.
    """
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    micros = (moment - _EPOCH) // _MICROSECOND
    ms, rest = divmod(micros, 1000)
    return ms + 1 if round_up and rest else ms
