"""The Prometheus text-format reader that bench/official.py's worker-metrics sampler uses."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from promtext import ParseError, Sample, parse, series_key

# What a worker's /metrics looks like mid-run (format 0.0.4), with the usual HELP/TYPE lines.
WORKER_SCRAPE = """\
# HELP rinha_worker_queue_payments Payments waiting in the worker's queue.
# TYPE rinha_worker_queue_payments gauge
rinha_worker_queue_payments 1834
# HELP rinha_worker_in_flight_calls Calls to a processor not yet answered.
# TYPE rinha_worker_in_flight_calls gauge
rinha_worker_in_flight_calls{processor="default"} 8
rinha_worker_in_flight_calls{processor="fallback"} 0
# HELP rinha_worker_ledger_payments Payments recorded in the ledger.
# TYPE rinha_worker_ledger_payments gauge
rinha_worker_ledger_payments{processor="default"} 10423
rinha_worker_ledger_payments{processor="fallback"} 12
# HELP rinha_worker_calls_total Calls to the processors by outcome.
# TYPE rinha_worker_calls_total counter
rinha_worker_calls_total{processor="default",outcome="ok"} 10423
rinha_worker_calls_total{processor="default",outcome="failed"} 2.0e+03
rinha_worker_calls_total{outcome="timeout",processor="fallback"} 3

"""


def values(samples: list[Sample]) -> dict[str, float]:
    return {sample.key: sample.value for sample in samples}


def test_a_worker_scrape_reads_into_one_value_per_series():
    assert values(parse(WORKER_SCRAPE)) == {
        "rinha_worker_queue_payments": 1834.0,
        'rinha_worker_in_flight_calls{processor="default"}': 8.0,
        'rinha_worker_in_flight_calls{processor="fallback"}': 0.0,
        'rinha_worker_ledger_payments{processor="default"}': 10423.0,
        'rinha_worker_ledger_payments{processor="fallback"}': 12.0,
        'rinha_worker_calls_total{outcome="ok",processor="default"}': 10423.0,
        'rinha_worker_calls_total{outcome="failed",processor="default"}': 2000.0,
        'rinha_worker_calls_total{outcome="timeout",processor="fallback"}': 3.0,
    }


def test_labels_are_kept_sorted_so_the_same_series_has_one_key_whatever_the_order():
    first, second = parse('m{b="2",a="1"} 1\nm{a="1",b="2"} 1\n')
    assert first.labels == second.labels == (("a", "1"), ("b", "2"))
    assert first.key == second.key == series_key("m", {"b": "2", "a": "1"}) == 'm{a="1",b="2"}'


def test_escapes_in_label_values_round_trip_through_the_key():
    (sample,) = parse(r'm{path="C:\\tmp",quote="say \"hi\"",lines="a\nb"} 1')
    assert dict(sample.labels) == {"path": "C:\\tmp", "quote": 'say "hi"', "lines": "a\nb"}
    assert parse(f"{sample.key} 1")[0] == sample


def test_special_values_timestamps_blanks_and_histogram_buckets():
    text = """\
# a free comment
process_start_time_seconds 1.7e9 1752591234567
x_seconds_bucket{le="0.005"} 3
x_seconds_bucket{le="+Inf"} 7
x_seconds_sum 0.25
  spaced_gauge{ a = "1" , }\t-2.5
weird_nan NaN
up +Inf
down -Inf
"""
    got = values(parse(text))
    assert got["process_start_time_seconds"] == 1.7e9
    assert got['x_seconds_bucket{le="+Inf"}'] == 7
    assert got['spaced_gauge{a="1"}'] == -2.5
    assert math.isnan(got["weird_nan"])
    assert got["up"] == math.inf and got["down"] == -math.inf


@pytest.mark.parametrize("line", [
    "1bad_name 1",
    "m{a=1} 1",
    'm{a="1} 1',
    'm{a="1" b="2"} 1',
    'm{a="1",a="2"} 1',
    'm{a="\\q"} 1',
    "m 1_000",
    "m one",
    "m",
    "m{} 1 2 3",
    "m 1 12.5",
    'm{a="1"}1',
])
def test_a_malformed_line_is_refused_with_its_line_number(line):
    with pytest.raises(ParseError, match="line 2"):
        parse(f"ok 1\n{line}\n")


def test_empty_and_comment_only_scrapes_have_no_samples():
    assert parse("") == []
    assert parse("# HELP x y\n# TYPE x gauge\n\n") == []
