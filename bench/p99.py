"""Our latency against the floor NGINX itself sets: floor, stack, floor, stack, ... (issue 6).

    python bench/p99.py [--pairs 3] [--hop] [--max-requests 550] [--duration 60]

Each pair is one `bench/floor.py` run (NGINX alone, constant answers) followed by one
`bench/official.py` run of the whole stack, with the same k6 script, schedule and emulators.
Interleaving puts the machine's noise on both sides alike. The table has each pair's p99 and
p99.9 with their ratios stack/floor, the medians of each column, and the CPU seconds per process
and peak RSS of the stack runs against the budget (0.75 CPU-s/s and 150 MB: half the contest's).
"""

from __future__ import annotations

import argparse
import statistics

from official import CPU_TARGET, MEMORY_TARGET_MB, OUR_PROCESSES as PROCESSES
from runs import batch_folder, finish, progress_log, run_official


def table(pairs: list[tuple[dict, dict]]) -> str:
    lines = [f"{'pair':<6}{'floor p99':>10}{'stack p99':>10}{'ratio':>7}{'floor p99.9':>12}{'stack p99.9':>12}"
             f"{'ratio':>7}{'failed':>7}{'incons.':>8}{'CPU/s':>7}{'RSS MB':>8}"]
    rows = []
    for floor, stack in pairs:
        f, s = floor["rinha"], stack["rinha"]
        cpu = sum(stack["processes"][p]["cpu_s"] for p in PROCESSES) / stack["wall_s"]
        rss = sum(stack["processes"][p]["peak_rss_mb"] for p in PROCESSES)
        row = (f["p99_ms"], s["p99_ms"], s["p99_ms"] / f["p99_ms"], f["p999_ms"], s["p999_ms"],
               s["p999_ms"] / f["p999_ms"], f["posts_failed"] + s["posts_failed"], s["inconsistencies"], cpu, rss)
        rows.append(row)
        lines.append(f"{len(rows):<6}" + _cells(row))
    lines.append(f"{'median':<6}" + _cells(tuple(statistics.median(column) for column in zip(*rows))))
    lines.append(f"(ratios are per pair; their median is not the ratio of the medians. Targets: p99 ratio <= 1.25, "
                 f"0 failed, 0 inconsistencies, CPU <= {CPU_TARGET} CPU-s/s, RSS <= {MEMORY_TARGET_MB} MB)")
    lines.append("")
    lines.append(f"{'CPU s per process (stack runs)':<32}" + "".join(f"{p:>9}" for p in PROCESSES) + f"{'nginx (floor)':>15}")
    for n, (floor, stack) in enumerate(pairs, 1):
        lines.append(f"{'pair ' + str(n):<32}" + "".join(f"{stack['processes'][p]['cpu_s']:>9.2f}" for p in PROCESSES)
                     + f"{floor['processes']['nginx']['cpu_s']:>15.2f}")
    return "\n".join(lines)


def hop_table(runs: list[tuple[dict, dict, dict]]) -> str:
    """With --hop: where the stack's extra latency goes, the hop itself or our work behind it."""
    lines = [f"{'pair':<6}{'floor p99':>10}{'hop p99':>10}{'stack p99':>10}{'hop/floor':>10}{'stack/hop':>10}"]
    rows = []
    for floor, hop, stack in runs:
        f, h, s = (run["rinha"]["p99_ms"] for run in (floor, hop, stack))
        rows.append((f, h, s, h / f, s / h))
        lines.append(f"{len(rows):<6}" + "".join(f"{value:>10.2f}" for value in rows[-1]))
    lines.append(f"{'median':<6}" + "".join(f"{statistics.median(column):>10.2f}" for column in zip(*rows)))
    lines.append("(hop: NGINX proxying to bench/hop_node.py, our HTTP layer answering constants on the API sockets; "
                 "hop/floor is what the hop costs, stack/hop what our work behind it adds)")
    return "\n".join(lines)


def _cells(row: tuple) -> str:
    widths = (10, 10, 7, 12, 12, 7, 7, 8, 7, 8)
    formats = (".2f", ".2f", ".2f", ".2f", ".2f", ".2f", ".0f", ".0f", ".3f", ".1f")
    return "".join(f"{value:>{width}{fmt}}" for value, width, fmt in zip(row, widths, formats))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3, help="floor/stack pairs (default 3)")
    parser.add_argument("--max-requests", type=int, default=550)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--schedule", default="official")
    parser.add_argument("--hop", action="store_true",
                        help="also a hop floor run per pair (official.py --floor hop), and its table")
    args = parser.parse_args()
    root = batch_folder("p99")
    log = progress_log(root)
    flags = ["--max-requests", str(args.max_requests), "--duration", str(args.duration), "--schedule", args.schedule]
    pairs, hops = [], []
    for n in range(1, args.pairs + 1):
        log(f"[pair {n}/{args.pairs}] floor")
        floor = run_official(root / f"floor-{n}", [*flags, "--floor"], log)
        hop = None
        if args.hop:
            log(f"[pair {n}/{args.pairs}] hop floor")
            hop = run_official(root / f"hop-{n}", [*flags, "--floor", "hop"], log)
        log(f"[pair {n}/{args.pairs}] stack")
        stack = run_official(root / f"stack-{n}", flags, log)
        if floor is None or stack is None or (args.hop and hop is None):
            log(f"  pair {n} incomplete; left out of the table")
            continue
        log(f"  floor p99 {floor['rinha']['p99_ms']:.2f} ms, stack p99 {stack['rinha']['p99_ms']:.2f} ms "
            f"(ratio {stack['rinha']['p99_ms'] / floor['rinha']['p99_ms']:.2f})"
            + (f", hop floor p99 {hop['rinha']['p99_ms']:.2f} ms" if hop else ""))
        pairs.append((floor, stack))
        if hop:
            hops.append((floor, hop, stack))
    if not pairs:
        log("no complete pair")
        return 1
    return finish(root, table(pairs) + ("\n\n" + hop_table(hops) if hops else ""), log)


if __name__ == "__main__":
    raise SystemExit(main())
