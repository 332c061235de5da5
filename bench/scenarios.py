"""Routing scenarios: each fault schedule run with our policy and the two baselines, side by side.

    python bench/scenarios.py [--runs 1] [--only official,c] [--max-requests 550]

Every run is a full `bench/official.py` run (the whole stack, emulators, k6) with the worker's
routing policy switched by RINHA_WORKER_POLICY. The table at the end has, per scenario and
policy, the median final score over the runs and the worst case of everything that must be zero.
Run folders are kept under bench/results/scenarios-<timestamp>/.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from runs import batch_folder, finish, progress_log, run_official

# name -> (schedule, duplicate rate, what it checks)
SCENARIOS = {
    "official": ("official", 0.0, "the official fault schedule"),
    "a": ("default-down-from-15s", 0.0, "default fails from 15 s to the end, fallback healthy"),
    "b": ("both-down-15s", 0.0, "both fail from 20 s to 35 s"),
    "c": ("default-slow-1600ms", 0.0, "default healthy but 1,600 ms slow from 20 s to 30 s"),
    "d": ("official", 0.01, "official schedule, 1 % of POSTs repeat an earlier correlationId"),
}
POLICIES = ("profit", "always-default", "fallback-on-failure")


def run_one(scenario: str, policy: str, folder: Path, max_requests: int, log) -> dict | None:
    schedule, duplicates, _ = SCENARIOS[scenario]
    card = run_official(folder, ["--schedule", schedule, "--policy", policy, "--duplicate-rate", str(duplicates),
                                 "--max-requests", str(max_requests)], log)
    if card is not None:
        r = card["rinha"]
        log(f"  {scenario}/{policy}: final {r['final']:,.0f}, net {r['net']:,.0f}, p99 {r['p99_ms']:.2f} ms, "
            f"default {r['default_requests']}, fallback {r['fallback_requests']}, lag {r['lag']}, "
            f"inconsistencies {r['inconsistencies']}, double charges {card['double_charges']}, "
            f"failed POSTs {r['posts_failed']}")
    return card


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1, help="runs of each scenario and policy (default 1)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenario names")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--max-requests", type=int, default=550)
    args = parser.parse_args()
    root = batch_folder("scenarios")
    log = progress_log(root)
    names = [name for name in args.only.split(",") if name]
    policies = [policy for policy in args.policies.split(",") if policy]
    cards: dict[tuple[str, str], list[dict]] = {}

    total = len(names) * len(policies) * args.runs
    done = 0
    for run in range(1, args.runs + 1):
        for name in names:
            for policy in policies:  # interleaved, so machine noise falls on every policy alike
                done += 1
                log(f"[{done}/{total}] scenario {name} ({SCENARIOS[name][2]}), policy {policy}, run {run}")
                card = run_one(name, policy, root / f"{name}-{policy}-{run}", args.max_requests, log)
                if card is not None:
                    cards.setdefault((name, policy), []).append(card)

    # `net` is the money before the p99 bonus: what routing decides. `final` adds the p99 bonus,
    # which on a shared 2-core machine is mostly noise of the moment; both are medians.
    lines = [f"{'scenario':<9}{'policy':<21}{'final':>10}{'net':>10}{'default':>9}{'fallback':>9}{'lag':>6}"
             f"{'incons.':>8}{'doubles':>8}{'failed':>7}{'p99 ms':>8}  ours >= baselines (final, net)"]
    for name in names:
        finals, nets = {}, {}
        for policy in policies:
            runs = cards.get((name, policy), [])
            if not runs:
                lines.append(f"{name:<9}{policy:<21}{'no result':>15}")
                continue
            rs = [c["rinha"] for c in runs]
            finals[policy] = statistics.median(r["final"] for r in rs)
            nets[policy] = statistics.median(r["net"] for r in rs)
            lines.append(
                f"{name:<9}{policy:<21}{finals[policy]:>10,.0f}{nets[policy]:>10,.0f}"
                f"{statistics.median(r['default_requests'] for r in rs):>9.0f}"
                f"{statistics.median(r['fallback_requests'] for r in rs):>9.0f}"
                f"{max(r['lag'] for r in rs):>6}{max(r['inconsistencies'] for r in rs):>8}"
                f"{max(c['double_charges'] or 0 for c in runs):>8}{max(r['posts_failed'] for r in rs):>7}"
                f"{statistics.median(r['p99_ms'] for r in rs):>8.2f}")
        if "profit" in finals and len(finals) > 1:
            by_final = all(finals["profit"] >= value for value in finals.values())
            by_net = all(nets["profit"] >= value for value in nets.values())
            lines[-len(policies)] += f"  {'yes' if by_final else 'NO'}, {'yes' if by_net else 'NO'}"
    return finish(root, "\n".join(lines), log)


if __name__ == "__main__":
    raise SystemExit(main())
