"""Routing scenarios: each fault schedule run with our policies and the two baselines, side by side.

    python bench/scenarios.py [--runs 1] [--only official,c,gen:outage-to-end:1007] [--max-requests 550]
    python bench/scenarios.py --generated outage-to-end:1007,default-slow:1012 --policies robust,profit

Every run is a full `bench/official.py` run (the whole stack, emulators, k6) with the worker's
routing policy switched by RINHA_WORKER_POLICY. `--only` takes the scenarios below, any schedule
official.py takes (a name in bench/schedules/, gen:<seed>, gen:<class>:<seed>), or both;
`--generated CLASS:SEED,...` adds generated ones (bench/schedule_gen.py), to confirm for real what
bench/evaluate.py found on them. The table at the end has, per scenario and policy, the median
final score over the runs and the worst case of everything that must be zero.
Run folders are kept under bench/results/scenarios-<timestamp>/.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import schedule_gen
from runs import BENCH, batch_folder, finish, progress_log, run_official

# name -> (schedule, duplicate rate, what it checks)
SCENARIOS = {
    "official": ("official", 0.0, "the official fault schedule"),
    "a": ("default-down-from-15s", 0.0, "default fails from 15 s to the end, fallback healthy"),
    "b": ("both-down-15s", 0.0, "both fail from 20 s to 35 s"),
    "c": ("default-slow-1600ms", 0.0, "default healthy but 1,600 ms slow from 20 s to 30 s"),
    "d": ("official", 0.01, "official schedule, 1 % of POSTs repeat an earlier correlationId"),
}
POLICIES = ("robust", "profit", "always-default", "fallback-on-failure")
BASELINES = ("always-default", "fallback-on-failure")


def scenario(name: str) -> tuple[str, float, str]:
    """(schedule, duplicate rate, what it checks) of a scenario name or of any schedule name;
    ValueError for a name that names nothing (before any run starts)."""
    if name in SCENARIOS:
        return SCENARIOS[name]
    generated = schedule_gen.parse_name(name)  # ValueError for a malformed name or an unknown class
    if generated is not None:
        return name, 0.0, generated["description"]
    if (BENCH / "schedules" / f"{name}.json").exists() or (name.endswith(".json") and Path(name).exists()):
        return name, 0.0, f"schedule {name}"
    raise ValueError(f"no scenario or schedule {name!r}: one of {', '.join(SCENARIOS)}, a name in "
                     f"bench/schedules/, gen:<seed> or gen:<class>:<seed>")


def official_flags(schedule: str, duplicates: float, policy: str, max_requests: int) -> list[str]:
    return ["--schedule", schedule, "--policy", policy, "--duplicate-rate", str(duplicates),
            "--max-requests", str(max_requests)]


def run_one(name: str, policy: str, folder: Path, max_requests: int, log) -> dict | None:
    schedule, duplicates, _ = scenario(name)
    card = run_official(folder, official_flags(schedule, duplicates, policy, max_requests), log)
    if card is not None:
        r = card["rinha"]
        log(f"  {name}/{policy}: final {r['final']:,.0f}, net {r['net']:,.0f}, p99 {r['p99_ms']:.2f} ms, "
            f"default {r['default_requests']}, fallback {r['fallback_requests']}, lag {r['lag']}, "
            f"inconsistencies {r['inconsistencies']}, double charges {card['double_charges']}, "
            f"failed POSTs {r['posts_failed']}")
    return card


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1, help="runs of each scenario and policy (default 1)")
    parser.add_argument("--only", default=None,
                        help="comma-separated scenario or schedule names (default: every scenario, "
                             "unless --generated is given)")
    parser.add_argument("--generated", default="", metavar="CLASS:SEED,...",
                        help="generated schedules to run too, e.g. outage-to-end:1007 (gen:outage-to-end:1007)")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--max-requests", type=int, default=550)
    args = parser.parse_args(argv)
    only = args.only if args.only is not None else "" if args.generated else ",".join(SCENARIOS)
    args.names = [name for name in only.split(",") if name]
    args.names += [f"gen:{item}" for item in args.generated.split(",") if item]
    args.policies = [policy for policy in args.policies.split(",") if policy]
    for name in args.names:
        try:
            scenario(name)
        except ValueError as exc:
            parser.error(str(exc))
    for policy in args.policies:
        if policy not in POLICIES:
            parser.error(f"unknown policy {policy!r}: one of {', '.join(POLICIES)}")
    if not args.names:
        parser.error("no scenario to run")
    return args


def table(names: list[str], policies: list[str], cards: dict[tuple[str, str], list[dict]]) -> str:
    """Per scenario and policy: medians of final and net over the runs, the worst of what must be
    zero; each of our policies is marked against the baselines' medians on the same scenario."""
    # `net` is the money before the p99 bonus: what routing decides. `final` adds the p99 bonus,
    # which on a shared 2-core machine is mostly noise of the moment; both are medians.
    width = max(9, *(len(name) + 1 for name in names))
    ours = [policy for policy in policies if policy not in BASELINES]
    compared = [policy for policy in policies if policy in BASELINES]
    lines = [f"{'scenario':<{width}}{'policy':<21}{'final':>10}{'net':>10}{'default':>9}{'fallback':>9}{'lag':>6}"
             f"{'incons.':>8}{'doubles':>8}{'failed':>7}{'p99 ms':>8}  >= baselines (final, net)"]
    for name in names:
        medians = {policy: (statistics.median(c["rinha"]["final"] for c in cards[(name, policy)]),
                            statistics.median(c["rinha"]["net"] for c in cards[(name, policy)]))
                   for policy in policies if cards.get((name, policy))}
        baselines = [b for b in compared if b in medians]
        for policy in policies:
            runs = cards.get((name, policy), [])
            if not runs:
                lines.append(f"{name:<{width}}{policy:<21}{'no result':>15}")
                continue
            rs = [c["rinha"] for c in runs]
            final, net = medians[policy]
            line = (f"{name:<{width}}{policy:<21}{final:>10,.0f}{net:>10,.0f}"
                    f"{statistics.median(r['default_requests'] for r in rs):>9.0f}"
                    f"{statistics.median(r['fallback_requests'] for r in rs):>9.0f}"
                    f"{max(r['lag'] for r in rs):>6}{max(r['inconsistencies'] for r in rs):>8}"
                    f"{max(c['double_charges'] or 0 for c in runs):>8}{max(r['posts_failed'] for r in rs):>7}"
                    f"{statistics.median(r['p99_ms'] for r in rs):>8.2f}")
            if policy in ours and baselines:
                by_final = all(final >= medians[b][0] for b in baselines)
                by_net = all(net >= medians[b][1] for b in baselines)
                line += f"  {'yes' if by_final else 'NO'}, {'yes' if by_net else 'NO'}"
            lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = batch_folder("scenarios")
    log = progress_log(root)
    names, policies = args.names, args.policies
    cards: dict[tuple[str, str], list[dict]] = {}

    total = len(names) * len(policies) * args.runs
    done = 0
    for run in range(1, args.runs + 1):
        for name in names:
            for policy in policies:  # interleaved, so machine noise falls on every policy alike
                done += 1
                log(f"[{done}/{total}] scenario {name} ({scenario(name)[2]}), policy {policy}, run {run}")
                card = run_one(name, policy, root / f"{name.replace(':', '_')}-{policy}-{run}", args.max_requests, log)
                if card is not None:
                    cards.setdefault((name, policy), []).append(card)
    return finish(root, table(names, policies, cards), log)




if __name__ == "__main__":
    raise SystemExit(main())
