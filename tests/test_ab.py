"""bench/ab.py: variants as written on the command line, the table, the environment of a run."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import ab


def test_a_variant_is_a_name_and_its_environment():
    assert ab.parse_variant("base") == ("base", {})
    assert ab.parse_variant("x:RINHA_API_FLUSH_INTERVAL_MS=10,RINHA_WORKER_SENDERS=32") == (
        "x", {"RINHA_API_FLUSH_INTERVAL_MS": "10", "RINHA_WORKER_SENDERS": "32"})
    assert ab.parse_variant("empty:RINHA_DATA_DIR=") == ("empty", {"RINHA_DATA_DIR": ""})
    for bad in (":A=1", "x:A", "x:=1"):
        with pytest.raises(argparse.ArgumentTypeError):
            ab.parse_variant(bad)


def card(p99: float, worker_cpu: float) -> dict:
    processes = {name: {"cpu_s": 1.0} for name in ab.OUR_PROCESSES}
    processes["worker"] = {"cpu_s": worker_cpu}
    return {"rinha": {"p99_ms": p99, "p999_ms": 2 * p99, "posts_failed": 0, "inconsistencies": 0, "lag": 0},
            "processes": processes, "wall_s": 10.0}


def test_the_table_lists_every_run_then_each_variants_medians():
    floor = card(2.0, 0.0)
    runs = [ab.row("base", card(4.0, 7.0), floor), ab.row("flush10", card(3.0, 6.0), floor),
            ab.row("base", card(5.0, 9.0), floor), ab.row("flush10", card(3.6, 8.0), None),
            ab.row("base", card(4.4, 8.0), floor)]
    lines = ab.table(runs, ["base", "flush10"]).splitlines()
    assert lines[0] == ab.HEADER
    assert [line.split()[:2] for line in lines[1:6]] == [["base", "4.00"], ["flush10", "3.00"], ["base", "5.00"],
                                                         ["flush10", "3.60"], ["base", "4.40"]]
    medians = lines[lines.index("medians") + 1:-1]
    base, flush10 = (line.split() for line in medians)
    assert base[:4] == ["base", "4.40", "8.80", "2.20"]   # p99, p99.9 and p99 over the floor
    assert base[8] == "8.00"                              # the worker's CPU seconds
    assert flush10[:4] == ["flush10", "3.30", "6.60", "-"]  # one of its rounds had no floor


def test_a_runs_environment_is_put_back_as_it_was():
    os.environ["RINHA_TEST_AB_KEPT"] = "before"
    os.environ.pop("RINHA_TEST_AB_NEW", None)
    try:
        with ab.environment({"RINHA_TEST_AB_KEPT": "during", "RINHA_TEST_AB_NEW": "1"}):
            assert os.environ["RINHA_TEST_AB_KEPT"] == "during"
            assert os.environ["RINHA_TEST_AB_NEW"] == "1"
        assert os.environ["RINHA_TEST_AB_KEPT"] == "before"
        assert "RINHA_TEST_AB_NEW" not in os.environ
    finally:
        os.environ.pop("RINHA_TEST_AB_KEPT", None)
