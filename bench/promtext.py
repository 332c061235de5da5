"""A reader for the Prometheus text exposition format 0.0.4, enough for the worker's /metrics.

    name{label="value",other="x"} 12.5 [timestamp-ms]

`# HELP` and `# TYPE` lines and other comments are skipped; label values may hold the escapes
\\\\, \\" and \\n. A malformed line raises ParseError naming its line number: a half-understood
scrape would put wrong numbers on the report's charts, which is worse than a gap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# The special values as Go's strconv.ParseFloat takes them (any case); Python's float() alone
# would also take "1_000", which is not a Prometheus number.
SPECIAL_VALUES = {"+inf": float("inf"), "inf": float("inf"), "-inf": float("-inf"), "nan": float("nan")}
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


class ParseError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]  # sorted by label name
    value: float

    @property
    def key(self) -> str:
        return series_key(self.name, dict(self.labels))


def series_key(name: str, labels: dict[str, str] | None = None) -> str:
    """One series as Prometheus writes it, labels sorted: `calls_total{outcome="ok",processor="default"}`."""
    if not labels:
        return name
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return f"{name}{{{body}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def parse(text: str) -> list[Sample]:
    samples = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            samples.append(_parse_sample(stripped))
        except ParseError as exc:
            raise ParseError(f"line {number}: {exc}: {line!r}") from None
    return samples


def _parse_sample(line: str) -> Sample:
    match = METRIC_NAME.match(line)
    if match is None:
        raise ParseError("no metric name")
    name, pos = match.group(), match.end()
    labels: dict[str, str] = {}
    if pos < len(line) and line[pos] == "{":
        pos = _parse_labels(line, pos + 1, labels)
    rest = line[pos:]
    if rest[:1] not in (" ", "\t"):
        raise ParseError("expected a space before the value")
    fields = rest.split()
    if len(fields) not in (1, 2):
        raise ParseError("expected a value and at most a timestamp")
    if len(fields) == 2 and not re.fullmatch(r"-?\d+", fields[1]):
        raise ParseError(f"bad timestamp {fields[1]!r}")
    return Sample(name, tuple(sorted(labels.items())), _parse_value(fields[0]))


def _parse_labels(line: str, pos: int, labels: dict[str, str]) -> int:
    """Reads `a="x",b="y"}` from `pos`; returns the position after the closing brace."""
    while True:
        pos = _skip_blanks(line, pos)
        if line.startswith("}", pos):
            return pos + 1
        match = LABEL_NAME.match(line, pos)
        if match is None:
            raise ParseError(f"bad label name at column {pos + 1}")
        pos = _skip_blanks(line, match.end())
        if not line.startswith("=", pos):
            raise ParseError(f"expected = after label {match.group()!r}")
        pos = _skip_blanks(line, pos + 1)
        if not line.startswith('"', pos):
            raise ParseError(f"label {match.group()!r}: value must be quoted")
        value, pos = _read_quoted(line, pos + 1)
        if match.group() in labels:
            raise ParseError(f"label {match.group()!r} given twice")
        labels[match.group()] = value
        pos = _skip_blanks(line, pos)
        if line.startswith(",", pos):
            pos += 1
        elif not line.startswith("}", pos):
            raise ParseError(f"expected , or }} at column {pos + 1}")


def _read_quoted(line: str, pos: int) -> tuple[str, int]:
    out = []
    while pos < len(line):
        char = line[pos]
        if char == '"':
            return "".join(out), pos + 1
        if char == "\\":
            escaped = ESCAPES.get(line[pos + 1:pos + 2])
            if escaped is None:
                raise ParseError(f"bad escape at column {pos + 1}")
            out.append(escaped)
            pos += 2
        else:
            out.append(char)
            pos += 1
    raise ParseError("unterminated label value")


def _skip_blanks(line: str, pos: int) -> int:
    while pos < len(line) and line[pos] in " \t":
        pos += 1
    return pos


def _parse_value(text: str) -> float:
    special = SPECIAL_VALUES.get(text.lower())
    if special is not None:
        return special
    if NUMBER.fullmatch(text) is None:
        raise ParseError(f"bad value {text!r}")
    return float(text)
