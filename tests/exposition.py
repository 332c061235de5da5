"""A strict reader of the Prometheus text exposition format 0.0.4, for the tests.

Written here rather than taken from prometheus_client (not a dependency of ours). It refuses
what a Prometheus server would refuse or misread: a sample before its family's TYPE, a HELP or
TYPE given twice, an unknown type, a histogram sample that is not `_bucket`/`_sum`/`_count`, a
bucket without `le`, buckets that are not cumulative, a +Inf bucket that disagrees with `_count`,
a negative counter, a malformed label set or value, text without a final newline.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE = re.compile(rf"({NAME})(?:\{{(.*)\}})? (\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}
UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}

Labels = tuple[tuple[str, str], ...]


@dataclass
class Exposition:
    help: dict[str, str] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, _key(labels))]

    def values(self, name: str) -> dict[Labels, float]:
        return {labels: value for (sample, labels), value in self.samples.items() if sample == name}

    def histogram(self, name: str, **labels: str) -> tuple[dict[float, float], float, float]:
        """({le: cumulative count}, sum, count) of one histogram child."""
        buckets = {}
        for (sample, key), value in self.samples.items():
            rest = dict(key)
            le = rest.pop("le", None)
            if sample == f"{name}_bucket" and rest == labels:
                buckets[float(le)] = value
        return buckets, self.value(f"{name}_sum", **labels), self.value(f"{name}_count", **labels)


def parse(text: str) -> Exposition:
    assert text.endswith("\n"), "the exposition must end with a newline"
    out = Exposition()
    for number, line in enumerate(text[:-1].split("\n"), 1):
        where = f"line {number}: {line!r}"
        if line.startswith(("# HELP ", "# TYPE ")):
            _, kind, name, *rest = line.split(" ", 3)
            assert re.fullmatch(NAME, name), where
            table = out.help if kind == "HELP" else out.types
            assert name not in table, f"{kind} given twice, {where}"
            table[name] = rest[0] if rest else ""
            if kind == "TYPE":
                assert table[name] in TYPES, where
                assert not any(sample_family(s, out.types) == name for s, _ in out.samples), f"TYPE after samples, {where}"
            continue
        assert line and not line.startswith("#"), f"unexpected line, {where}"
        match = SAMPLE.fullmatch(line)
        assert match, f"not a sample, {where}"
        name, label_text, raw = match.groups()
        labels = _labels(label_text or "", where)
        family = sample_family(name, out.types)
        assert family is not None, f"sample of an undeclared family, {where}"
        assert re.fullmatch(r"[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?|Inf)|NaN", raw), f"bad value, {where}"
        value = float(raw)
        if out.types[family] == "counter":
            assert value >= 0, f"negative counter, {where}"
        if out.types[family] == "histogram":
            assert name != family, f"a histogram sample must be _bucket, _sum or _count, {where}"
            assert (name == f"{family}_bucket") == ("le" in dict(labels)), where
        key = (name, labels)
        assert key not in out.samples, f"sample given twice, {where}"
        out.samples[key] = value
    _check_histograms(out)
    return out


def sample_family(name: str, types: dict[str, str]) -> str | None:
    if name in types:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and types.get(base) == "histogram":
            return base
    return None


def _labels(text: str, where: str) -> Labels:
    pairs = []
    position = 0
    while position < len(text):
        match = LABEL.match(text, position)
        assert match, f"bad label set, {where}"
        value = re.sub(r'\\[\\"n]', lambda m: UNESCAPE[m.group()], match.group(2))
        pairs.append((match.group(1), value))
        position = match.end()
        if position < len(text):
            assert text[position] == ",", f"bad label separator, {where}"
            position += 1
    names = [name for name, _ in pairs]
    assert len(set(names)) == len(names), f"a label given twice, {where}"
    return _key(dict(pairs))


def _key(labels: dict[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


def _check_histograms(out: Exposition) -> None:
    children: dict[tuple[str, Labels], list[tuple[float, float]]] = {}
    for (name, labels), value in out.samples.items():
        family = sample_family(name, out.types)
        if out.types.get(family) == "histogram" and name.endswith("_bucket"):
            rest = dict(labels)
            le = float(rest.pop("le"))
            children.setdefault((family, _key(rest)), []).append((le, value))
    for (family, labels), buckets in children.items():
        buckets.sort()
        counts = [count for _, count in buckets]
        assert counts == sorted(counts), f"{family}{labels}: buckets not cumulative"
        assert buckets[-1][0] == math.inf, f"{family}{labels}: no +Inf bucket"
        assert out.samples[(f"{family}_count", labels)] == buckets[-1][1], f"{family}{labels}: +Inf != _count"
        assert (f"{family}_sum", labels) in out.samples, f"{family}{labels}: no _sum"
