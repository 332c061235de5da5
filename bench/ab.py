"""Settings against each other: the official-style run with each variant's environment, interleaved.

    python bench/ab.py --runs 3 base flush10:RINHA_API_FLUSH_INTERVAL_MS=10 [--floor]

A variant is NAME or NAME:VAR=VALUE,VAR=VALUE; its variables reach every process of the stack
(each setting has an environment twin, see the configuration table in the README). Runs go
variant by variant within a round (base, flush10, base, flush10, ...), so the machine's noise
falls on all of them alike. `--floor` adds a floor run (NGINX alone) to each round, and the table
then has each variant's p99 against the floor of its own round. Medians per variant at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics

from official import OUR_PROCESSES
from runs import batch_folder, finish, progress_log, run_official


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """`flush10:RINHA_API_FLUSH_INTERVAL_MS=10` -> ("flush10", {"RINHA_API_FLUSH_INTERVAL_MS": "10"})."""
    name, _, assignments = text.partition(":")
    env = {}
    for assignment in filter(None, assignments.split(",")):
        var, sep, value = assignment.partition("=")
        if not sep or not var:
            raise argparse.ArgumentTypeError(f"{assignment!r} is not VAR=VALUE")
        env[var] = value
    if not name:
        raise argparse.ArgumentTypeError(f"{text!r} has no name")
    return name, env


def row(name: str, card: dict, floor: dict | None) -> tuple:
    """One run's line of the table, from its scorecard.json (and its round's floor, if any)."""
    r = card["rinha"]
    cpu = {p: card["processes"][p]["cpu_s"] for p in OUR_PROCESSES}
    ratio = r["p99_ms"] / floor["rinha"]["p99_ms"] if floor else None
    return (name, r["p99_ms"], r["p999_ms"], ratio, r["posts_failed"], r["inconsistencies"], r["lag"],
            sum(cpu.values()) / card["wall_s"], cpu["worker"], cpu["api1"] + cpu["api2"])


HEADER = (f"{'variant':<14}{'p99':>7}{'p99.9':>8}{'/floor':>8}{'failed':>7}{'incons.':>8}{'lag':>6}"
          f"{'CPU/s':>7}{'worker s':>9}{'apis s':>8}")


def cells(values: tuple) -> str:
    name, *numbers = values
    formats = ((7, ".2f"), (8, ".2f"), (8, ".2f"), (7, ".0f"), (8, ".0f"), (6, ".0f"), (7, ".3f"), (9, ".2f"), (8, ".2f"))
    return f"{name:<14}" + "".join(f"{'-':>{width}}" if value is None else f"{value:>{width}{fmt}}"
                                   for value, (width, fmt) in zip(numbers, formats))


def table(runs: list[tuple], names: list[str]) -> str:
    """Every run in the order it ran, then each variant's medians (no floor: '-')."""
    lines = [HEADER, *(cells(run) for run in runs), "medians"]
    for name in names:
        mine = [run[1:] for run in runs if run[0] == name]
        if mine:
            lines.append(cells((name, *(None if None in column else statistics.median(column)
                                        for column in zip(*mine)))))
    lines.append("(ms; /floor is p99 over the floor run of the same round; CPU/s over the k6 run, all our processes)")
    return "\n".join(lines)


@contextlib.contextmanager
def environment(env: dict[str, str]):
    """`env` set in os.environ (inherited by the run's processes), the previous values put back after."""
    saved = {var: os.environ.get(var) for var in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", type=parse_variant, help="NAME or NAME:VAR=VALUE,...")
    parser.add_argument("--runs", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--floor", action="store_true", help="a floor run in each round, for ratios")
    parser.add_argument("--schedule", default="official")
    parser.add_argument("--max-requests", type=int, default=550)
    args = parser.parse_args()
    names = [name for name, _ in args.variants]
    if len(set(names)) != len(names):
        parser.error("variant names must differ")
    root = batch_folder("ab")
    log = progress_log(root)
    flags = ["--schedule", args.schedule, "--max-requests", str(args.max_requests)]
    runs: list[tuple] = []
    for round_ in range(1, args.runs + 1):
        floor = None
        if args.floor:
            log(f"round {round_}: floor")
            floor = run_official(root / f"floor-{round_}", [*flags, "--floor"], log)
        for name, env in args.variants:
            log(f"round {round_}: {name} {env or ''}")
            with environment(env):
                card = run_official(root / f"{name}-{round_}", flags, log)
            if card is not None:
                runs.append(row(name, card, floor))
                log(cells(runs[-1]))
    return finish(root, table(runs, names), log)


if __name__ == "__main__":
    raise SystemExit(main())
