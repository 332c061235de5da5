"""Crash drills on the full stack under the official-style load: nothing lost, nothing twice.

    python bench/crash.py [--runs 3] [--only worker-kill,api-kill,link-cut]

Each run is a full `bench/official.py --drill ...` run: at a random moment between 5 s and 45 s
the worker or one API node is killed with SIGKILL and restarted 1 s later, or the link between
the API nodes and the worker is cut for 5 s. Per run it reports lost payments (answered 2xx but
stored by no processor), double charges (stored by both), audit inconsistencies and lag. The API
node drill runs twice: in the default mode (answer at once) and in ack mode.
"""

from __future__ import annotations

import argparse

from runs import batch_folder, finish, progress_log, run_official

# name -> (drill, extra flags)
CASES = {
    "worker-kill": ("worker-kill", []),
    "api-kill": ("api-kill", []),
    "api-kill-ack": ("api-kill", ["--ack-mode"]),
    "link-cut": ("link-cut", []),
}
# --cluster (make crash CLUSTER=1): the drills of `rinha stack --cluster`.
CLUSTER_CASES = {
    "worker-kill": ("worker-kill", []),
    "nats-kill": ("nats-kill", []),
    "worker-and-nats-kill": ("worker-kill,nats-kill", []),
    "api-kill": ("api-kill", []),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default=None, help="cases, comma-separated (default: all of the mode's)")
    parser.add_argument("--schedule", default="official")
    parser.add_argument("--cluster", action="store_true", help="drill `rinha stack --cluster`")
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    cases = CLUSTER_CASES if args.cluster else CASES
    mode = ["--cluster", "--workers", str(args.workers)] if args.cluster else []
    root = batch_folder("crash")
    log = progress_log(root)
    names = [name for name in (args.only or ",".join(cases)).split(",") if name]
    rows = []

    total, done = len(names) * args.runs, 0
    for run in range(1, args.runs + 1):
        for name in names:
            done += 1
            drill, flags = cases[name]
            log(f"[{done}/{total}] {name}, run {run}")
            card = run_official(root / f"{name}-{run}", ["--schedule", args.schedule, "--drill", drill,
                                                         "--seed", str(run * 1000 + done), *mode, *flags], log)
            rows.append((name, run, card))
            if card is None:
                continue
            r = card["rinha"]
            at = "never (the run ended first)" if card["drill_at_s"] is None else f"at {card['drill_at_s']:.1f} s"
            log(f"  {drill} {at}: lost {card['lost']}, double charges {card['double_charges']}, "
                f"inconsistencies {r['inconsistencies']}, lag {r['lag']}, failed POSTs {r['posts_failed']}, "
                f"p99 {r['p99_ms']:.2f} ms, final {r['final']:,.0f}")

    lines = [f"{'drill':<14}{'run':>4}{'lost':>6}{'double':>8}{'incons.':>9}{'lag':>6}{'failed':>8}{'p99 ms':>8}{'final':>12}"]
    for name, run, card in rows:
        if card is None:
            lines.append(f"{name:<14}{run:>4}  no result")
            continue
        r = card["rinha"]
        lines.append(f"{name:<14}{run:>4}{card['lost']:>6}{card['double_charges']:>8}{r['inconsistencies']:>9}"
                     f"{r['lag']:>6}{r['posts_failed']:>8}{r['p99_ms']:>8.2f}{r['final']:>12,.0f}")
    return finish(root, "\n".join(lines), log)


if __name__ == "__main__":
    raise SystemExit(main())
