"""bench/scenarios.py's arguments and table: generated schedules side by side, without running k6.

The schedule a scenario names must be the one official.py (the k6 run) writes for rinha.js:
checked by feeding the flags scenarios.py builds to official.py's own parser and schedule loader.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import official  # noqa: E402
import scenarios  # noqa: E402
import schedule_gen  # noqa: E402


def test_generated_schedules_join_the_named_scenarios_in_the_order_given():
    args = scenarios.parse_args(["--only", "official,gen:outage-to-end:1007", "--generated",
                                 "default-slow:1012,both-down:3", "--policies", "robust,fallback-on-failure"])
    assert args.names == ["official", "gen:outage-to-end:1007", "gen:default-slow:1012", "gen:both-down:3"]
    assert args.policies == ["robust", "fallback-on-failure"]
    schedule, duplicates, what = scenarios.scenario("gen:default-slow:1012")
    assert (schedule, duplicates) == ("gen:default-slow:1012", 0.0)
    assert what == schedule_gen.generate(1012, "default-slow")["description"]
    assert scenarios.scenario("c") == scenarios.SCENARIOS["c"]
    assert scenarios.scenario("quiet")[0] == "quiet"  # any file of bench/schedules/


def test_by_default_every_scenario_runs_and_generated_ones_alone_when_only_they_are_given():
    assert scenarios.parse_args([]).names == list(scenarios.SCENARIOS)
    assert scenarios.parse_args([]).policies == list(scenarios.POLICIES)
    assert scenarios.parse_args(["--generated", "flapping:5"]).names == ["gen:flapping:5"]


@pytest.mark.parametrize("argv", [["--generated", "late-outage:3"], ["--generated", "outage-to-end:x"],
                                  ["--only", "no-such-schedule"], ["--only", "gen:1:2:3"],
                                  ["--policies", "greedy"], ["--only", ","]])
def test_a_name_that_names_nothing_stops_before_any_run(argv, capsys):
    with pytest.raises(SystemExit) as stopped:
        scenarios.parse_args(argv)
    assert stopped.value.code == 2 and "error" in capsys.readouterr().err


def test_official_py_runs_the_very_schedule_the_scenario_names():
    for name, seed, cls in (("gen:outage-to-end:1007", 1007, "outage-to-end"), ("gen:default-slow:1012", 1012, "default-slow")):
        schedule, duplicates, _ = scenarios.scenario(name)
        args = official.parse_args(scenarios.official_flags(schedule, duplicates, "robust", 550))
        assert (args.schedule, args.policy, args.max_requests, args.duplicate_rate) == (name, "robust", 550, 0.0)
        assert json.loads(official.schedule_text(args.schedule)) == schedule_gen.generate(seed, cls)
    args = official.parse_args(scenarios.official_flags(*scenarios.SCENARIOS["d"][:2], "profit", 100))
    assert json.loads(official.schedule_text(args.schedule))["name"] == "official" and args.duplicate_rate == 0.01


def card(final: float, net: float, lag: int = 0) -> dict:
    return {"double_charges": 0, "rinha": {"final": final, "net": net, "default_requests": 100, "fallback_requests": 0,
                                           "lag": lag, "inconsistencies": 0, "posts_failed": 0, "p99_ms": 2.0}}


def test_each_of_our_policies_is_marked_against_the_baselines_listed_after_it():
    name = "gen:outage-to-end:1007"
    policies = list(scenarios.POLICIES)
    cards = {(name, "robust"): [card(300, 290), card(310, 292), card(100, 90)],  # medians 300 / 290
             (name, "profit"): [card(200, 199)],
             (name, "always-default"): [card(150, 140, lag=9)],
             (name, "fallback-on-failure"): [card(299, 291)]}
    rows = {line.split()[1]: line for line in scenarios.table([name], policies, cards).splitlines()[1:]}
    assert rows["robust"].startswith(name) and "300" in rows["robust"]
    assert rows["robust"].endswith("yes, NO")   # final 300 >= 299 and 150; net 290 < 291
    assert rows["profit"].endswith("NO, NO")
    assert not rows["always-default"].endswith(("yes", "NO")) and " 9 " in rows["always-default"]
    missing = scenarios.table([name, "official"], policies, cards)
    assert missing.count("no result") == 4
