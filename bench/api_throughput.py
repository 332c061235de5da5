"""Requests per second of ONE API node, alone on its TCP port, driven by wrk on loopback.

    python bench/api_throughput.py [--seconds 10] [--runs 3] [--connections 64]
    python bench/api_throughput.py --compare-metrics [--runs 5]

Starts an emulator, the worker and one API node (with `--port`), then runs wrk `--runs` times
against `POST /payments` with a fresh correlationId per request (bench/wrk_payments.lua), and
prints each run's requests/s and latency percentiles and their median. No NGINX: this is the
node's own ceiling. On a 2-core machine wrk and the node share the CPU, so read it as a lower bound.

`--compare-metrics` weighs the metrics writers. First the hot path alone, in this process: the
node's `answered` hook for a 202, ours (rinha/api/metrics.py) against prometheus_client's
Counter and Histogram (bench/library_metrics.py), interleaved, in ns per call. Then three API
nodes on the same worker, `ours` (`--metrics on`), `library` (the same node with
prometheus_client's writer) and `off` (`--metrics off`), driven in turn in a rotating order (so a
drift of the machine weighs on all alike), `--runs` runs each after a short warm-up of each. Each
run reads the node's CPU time from /proc before and after, so besides requests/s and latency it
prints the node's CPU per request, the figure least bent by the other processes on the machine;
then the medians and the ratios against `ours`.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from rinha.probe import answers_http  # noqa: E402

UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass
class Run:
    rate: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    requests: int = 0
    cpu_us: float = math.nan  # the node's CPU per request (user + system), when measured


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(probe, what: str, seconds: float = 15.0) -> None:
    import time
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(0.05)
    raise SystemExit(f"{what} did not come up")


def latency_ms(out: str, percentile: int) -> float:
    value, unit = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\b", out, re.MULTILINE).groups()
    return float(value) * UNIT_MS[unit]


def wrk(binary: str, port: int, seconds: float, connections: int) -> Run:
    out = subprocess.run([binary, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
                          "-s", str(BENCH / "wrk_payments.lua"), f"http://127.0.0.1:{port}/payments"],
                         capture_output=True, text=True, check=True).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Run(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), latency_ms(out, 50), latency_ms(out, 99),
               int(non2xx.group(1)) if non2xx else 0, int(re.search(r"(\d+) requests in", out).group(1)))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat, fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured_wrk(binary: str, port: int, pid: int, seconds: float, connections: int) -> Run:
    """wrk against one node, with that node's CPU per request over the run."""
    before = cpu_seconds(pid)
    run = wrk(binary, port, seconds, connections)
    run.cpu_us = (cpu_seconds(pid) - before) / max(run.requests, 1) * 1e6
    return run


def describe(run: Run) -> str:
    cpu = "" if math.isnan(run.cpu_us) else f", node CPU {run.cpu_us:.2f} µs/request"
    return (f"{run.rate:,.0f} requests/s, p50 {run.p50_ms:.3f} ms, p99 {run.p99_ms:.3f} ms{cpu}"
            f"{f', NON-2xx: {run.non2xx}' if run.non2xx else ''}")


def hot_path_ns(rounds: int = 7, calls: int = 200_000) -> dict[str, float]:
    """ns per `answered` call for a 202, each writer's median over `rounds`, the writers taking
    turns within each round."""
    from types import SimpleNamespace

    from library_metrics import LibraryApiMetrics

    from rinha.api.metrics import ApiMetrics
    from rinha.api.routes import ACCEPTED, ROUTES

    held, link = SimpleNamespace(held=0), SimpleNamespace(connected=True, reconnects=0)
    writers = {"ours": ApiMetrics(held, link, routes=ROUTES, accepted=ACCEPTED),
               "library": LibraryApiMetrics(held, link, routes=ROUTES, accepted=ACCEPTED)}
    times: dict[str, list[float]] = {name: [] for name in writers}
    for _ in range(rounds):
        for name, metrics in writers.items():
            answered, began = metrics.answered, time.perf_counter()
            start = time.perf_counter_ns()
            for _ in range(calls):
                answered(b"/payments", ACCEPTED, began)
            times[name].append((time.perf_counter_ns() - start) / calls)
    return {name: statistics.median(done) for name, done in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3, help="runs (per setting with --compare-metrics)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--compare-metrics", action="store_true",
                        help="our metrics writer against prometheus_client's and against none: the hot path alone, "
                             "then interleaved runs against three nodes")
    parser.add_argument("--warmup-seconds", type=int, default=2, help="with --compare-metrics: a first run per node, not counted")
    args = parser.parse_args()
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    processor, worker = free_port(), free_port()
    settings = ("ours", "library", "off") if args.compare_metrics else ("ours",)
    ports = {setting: free_port() for setting in settings}
    rinha = [sys.executable, "-m", "rinha"]
    # The same node, with prometheus_client's writer swapped in for ours (bench/library_metrics.py).
    library = [sys.executable, str(BENCH / "library_metrics.py")]
    folder = tempfile.mkdtemp(prefix="rinha-bench-")
    env = {**os.environ, "RINHA_LINK_SECRET": secrets.token_urlsafe(32)}  # this run's own
    started: list[subprocess.Popen] = []
    nodes: dict[str, subprocess.Popen] = {}
    if args.compare_metrics:
        print("hot path alone (one answered() for a 202, in this process), median ns per call:", flush=True)
        ns = hot_path_ns()
        print(f"  ours {ns['ours']:,.0f} ns, prometheus_client {ns['library']:,.0f} ns "
              f"(x{ns['library'] / ns['ours']:.1f}, {ns['library'] - ns['ours']:+,.0f} ns)\n", flush=True)
    try:
        argvs = [["emulator", "--port", str(processor)],
                 ["worker", "--listen", f"127.0.0.1:{worker}", "--default-url", f"http://127.0.0.1:{processor}",
                  "--fallback-url", f"http://127.0.0.1:{processor}", "--metrics-listen", "", "--log-level", "WARNING"]]
        for argv in argvs:
            # The emulator and the worker are flooded on purpose here: their warnings (health checks
            # timing out) would only bury the figures. An API node's are kept.
            started.append(subprocess.Popen(rinha + argv, env=env, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL))
        for setting, port in ports.items():
            argv = ["api", "--socket", f"{folder}/api-{setting}.sock", "--port", str(port),
                    "--metrics-listen", f"{folder}/metrics-{setting}.sock", "--worker", f"127.0.0.1:{worker}",
                    "--metrics", "off" if setting == "off" else "on", "--log-level", "WARNING"]
            nodes[setting] = subprocess.Popen((library if setting == "library" else rinha) + argv, env=env,
                                              stdout=subprocess.DEVNULL)
            started.append(nodes[setting])
        for setting, port in ports.items():
            wait_for(lambda port=port: answers_http(("127.0.0.1", port), "/healthcheck", b'"link":"up"'),
                     f"the API node (metrics {setting})")
        if args.compare_metrics:
            return compare(binary, ports, {setting: node.pid for setting, node in nodes.items()}, args)
        runs = []
        for number in range(1, args.runs + 1):
            runs.append(wrk(binary, ports["ours"], args.seconds, args.connections))
            print(f"run {number}: {describe(runs[-1])}", flush=True)
        print(f"median of {args.runs} runs: {statistics.median(r.rate for r in runs):,.0f} requests/s "
              f"({args.connections} connections, 1 wrk thread, {args.seconds} s each)")
    finally:
        for process in reversed(started):
            process.terminate()
            process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def compare(binary: str, ports: dict[str, int], pids: dict[str, int], args: argparse.Namespace) -> int:
    settings = list(ports)
    for setting in settings:
        warm = measured_wrk(binary, ports[setting], pids[setting], args.warmup_seconds, args.connections)
        print(f"warm-up, metrics {setting}: {describe(warm)}", flush=True)
    runs: dict[str, list[Run]] = {setting: [] for setting in settings}
    for round_ in range(args.runs):
        # ours, library, off; then library, off, ours; ...: each takes each place in turn.
        for setting in settings[round_ % len(settings):] + settings[:round_ % len(settings)]:
            runs[setting].append(measured_wrk(binary, ports[setting], pids[setting], args.seconds, args.connections))
            print(f"run {len(runs[setting])}, metrics {setting:>7}: {describe(runs[setting][-1])}", flush=True)
    medians = {setting: Run(statistics.median(r.rate for r in done), statistics.median(r.p50_ms for r in done),
                            statistics.median(r.p99_ms for r in done), sum(r.non2xx for r in done),
                            sum(r.requests for r in done), statistics.median(r.cpu_us for r in done))
               for setting, done in runs.items()}
    print(f"\nmedians of {args.runs} runs each ({args.connections} connections, 1 wrk thread, {args.seconds} s each):")
    for setting, median in medians.items():
        print(f"  metrics {setting:>7}: {describe(median)}")
    ours = medians["ours"]
    for setting in ("library", "off"):
        other = medians[setting]
        print(f"  {setting} / ours: requests/s x{other.rate / ours.rate:.3f}, p50 x{other.p50_ms / ours.p50_ms:.3f}, "
              f"p99 x{other.p99_ms / ours.p99_ms:.3f}, CPU/request x{other.cpu_us / ours.cpu_us:.3f} "
              f"({other.cpu_us - ours.cpu_us:+.2f} µs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
