"""Requests per second of ONE API node, alone on its TCP port, driven by wrk on loopback.

    python bench/api_throughput.py [--seconds 10] [--runs 3] [--connections 64]
    python bench/api_throughput.py --compare-metrics [--runs 5]

Starts an emulator, the worker and one API node (with `--port`), then runs wrk `--runs` times
against `POST /payments` with a fresh correlationId per request (bench/wrk_payments.lua), and
prints each run's requests/s and latency percentiles and their median. No NGINX: this is the
node's own ceiling. On a 2-core machine wrk and the node share the CPU, so read it as a lower bound.

`--compare-metrics` starts two API nodes on the same worker, one with `--metrics on` and one with
`--metrics off`, and drives them in turn (on/off, then off/on, and so on, so a drift of the
machine weighs on both alike), `--runs` runs each after a short warm-up of each; it prints both
medians and the ratio on/off.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
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
               int(non2xx.group(1)) if non2xx else 0)


def describe(run: Run) -> str:
    return (f"{run.rate:,.0f} requests/s, p50 {run.p50_ms:.3f} ms, p99 {run.p99_ms:.3f} ms"
            f"{f', NON-2xx: {run.non2xx}' if run.non2xx else ''}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3, help="runs (per setting with --compare-metrics)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--compare-metrics", action="store_true",
                        help="interleave runs against a node with --metrics on and one with --metrics off")
    parser.add_argument("--warmup-seconds", type=int, default=2, help="with --compare-metrics: a first run per node, not counted")
    args = parser.parse_args()
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    processor, worker = free_port(), free_port()
    settings = ("on", "off") if args.compare_metrics else ("on",)
    ports = {setting: free_port() for setting in settings}
    rinha = [sys.executable, "-m", "rinha"]
    folder = tempfile.mkdtemp(prefix="rinha-bench-")
    env = {**os.environ, "RINHA_LINK_SECRET": secrets.token_urlsafe(32)}  # this run's own
    started = []
    try:
        argvs = [["emulator", "--port", str(processor)],
                 ["worker", "--listen", f"127.0.0.1:{worker}", "--default-url", f"http://127.0.0.1:{processor}",
                  "--fallback-url", f"http://127.0.0.1:{processor}", "--metrics-listen", "", "--log-level", "WARNING"]]
        for setting, port in ports.items():
            argvs.append(["api", "--socket", f"{folder}/api-{setting}.sock", "--port", str(port),
                          "--metrics-listen", f"{folder}/metrics-{setting}.sock",
                          "--worker", f"127.0.0.1:{worker}", "--metrics", setting, "--log-level", "WARNING"])
        for argv in argvs:
            # The emulator and the worker are flooded on purpose here: their warnings (health checks
            # timing out) would only bury the figures. An API node's are kept.
            quiet = subprocess.DEVNULL if argv[0] != "api" else None
            started.append(subprocess.Popen(rinha + argv, env=env, stdout=subprocess.DEVNULL, stderr=quiet))
        for setting, port in ports.items():
            wait_for(lambda port=port: answers_http(("127.0.0.1", port), "/healthcheck", b'"link":"up"'),
                     f"the API node (metrics {setting})")
        if args.compare_metrics:
            return compare(binary, ports, args)
        runs = []
        for number in range(1, args.runs + 1):
            runs.append(wrk(binary, ports["on"], args.seconds, args.connections))
            print(f"run {number}: {describe(runs[-1])}", flush=True)
        print(f"median of {args.runs} runs: {statistics.median(r.rate for r in runs):,.0f} requests/s "
              f"({args.connections} connections, 1 wrk thread, {args.seconds} s each)")
    finally:
        for process in reversed(started):
            process.terminate()
            process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def compare(binary: str, ports: dict[str, int], args: argparse.Namespace) -> int:
    for setting, port in ports.items():
        warm = wrk(binary, port, args.warmup_seconds, args.connections)
        print(f"warm-up, metrics {setting}: {describe(warm)}", flush=True)
    runs: dict[str, list[Run]] = {"on": [], "off": []}
    for pair in range(args.runs):
        for setting in (("on", "off") if pair % 2 == 0 else ("off", "on")):
            runs[setting].append(wrk(binary, ports[setting], args.seconds, args.connections))
            print(f"run {len(runs[setting])}, metrics {setting:>3}: {describe(runs[setting][-1])}", flush=True)
    medians = {setting: Run(statistics.median(r.rate for r in done), statistics.median(r.p50_ms for r in done),
                            statistics.median(r.p99_ms for r in done), sum(r.non2xx for r in done))
               for setting, done in runs.items()}
    print(f"\nmedians of {args.runs} runs each ({args.connections} connections, 1 wrk thread, {args.seconds} s each):")
    for setting, median in medians.items():
        print(f"  metrics {setting:>3}: {describe(median)}")
    on, off = medians["on"], medians["off"]
    print(f"  on / off: requests/s x{on.rate / off.rate:.3f} ({100 * (on.rate / off.rate - 1):+.1f} %), "
          f"p50 x{on.p50_ms / off.p50_ms:.3f}, p99 x{on.p99_ms / off.p99_ms:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
