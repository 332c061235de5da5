"""Structured logs: one JSON object per line on stderr, for `docker logs ... | jq` and for tests.

Every line has `ts` (ISO-8601 UTC, milliseconds), `level`, `logger` and `msg`, the process's own
fields (`role`, and `node` on an API node), then the record's event fields, passed as
`log.warning("circuit opened", extra={"event": "circuit_opened", "processor": "default"})`, and
`exc` when there is a traceback. A state change carries an `event` name that tests and `jq`
select on. Quiet by default: INFO and above hold state changes only (a processor down or up, a
circuit opening or closing, the link lost or restored), never a line per request or payment.
"""

from __future__ import annotations

import logging
import sys

import orjson

from rinha import clock

# What every LogRecord carries; any other attribute of a record came in through `extra`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, fields: dict[str, object] | None = None) -> None:
        super().__init__()
        self.fields = fields or {}

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": clock.format_ms(int(record.created * 1000)),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **self.fields,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        # default=str: a Path or an exception among the fields is written as its text, never lost.
        return orjson.dumps(line, default=str).decode()


def setup(level: str, **fields: object) -> None:
    """Sends every logger's records, as JSON lines, to stderr at `level` and above."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(fields))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
