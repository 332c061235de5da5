"""Requests per second of ONE API node, alone on its TCP port, driven by wrk on loopback.

    python bench/api_throughput.py [--seconds 10] [--runs 3] [--connections 64]

Starts an emulator, the worker and one API node (with `--port`), then runs wrk `--runs` times
against `POST /payments` with a fresh correlationId per request (bench/wrk_payments.lua), and
prints each run's requests/s and latency percentiles and their median. No NGINX: this is the
node's own ceiling. On a 2-core machine wrk and the node share the CPU, so read it as a lower bound.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from rinha.probe import answers_http  # noqa: E402


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    processor, worker, api = free_port(), free_port(), free_port()
    rinha = [sys.executable, "-m", "rinha"]
    folder = tempfile.mkdtemp(prefix="rinha-bench-")
    started = []
    try:
        for argv in (["emulator", "--port", str(processor)],
                     ["worker", "--listen", f"127.0.0.1:{worker}", "--default-url", f"http://127.0.0.1:{processor}",
                      "--fallback-url", f"http://127.0.0.1:{processor}", "--log-level", "WARNING"],
                     ["api", "--socket", f"{folder}/api.sock", "--port", str(api), "--worker", f"127.0.0.1:{worker}",
                      "--log-level", "WARNING"]):
            started.append(subprocess.Popen(rinha + argv, stdout=subprocess.DEVNULL))
        wait_for(lambda: answers_http(("127.0.0.1", api), "/healthcheck", b'"link":"up"'), "the API node")
        rates, p50s, p99s = [], [], []
        for run in range(1, args.runs + 1):
            out = subprocess.run([wrk, "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "--latency",
                                  "-s", str(BENCH / "wrk_payments.lua"), f"http://127.0.0.1:{api}/payments"],
                                 capture_output=True, text=True, check=True).stdout
            rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
            p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)
            p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)
            non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            rates.append(rate)
            p50s.append(p50)
            p99s.append(p99)
            print(f"run {run}: {rate:,.0f} requests/s, p50 {p50}, p99 {p99}"
                  f"{', NON-2xx: ' + non2xx.group(1) if non2xx else ''}", flush=True)
        print(f"median of {args.runs} runs: {statistics.median(rates):,.0f} requests/s "
              f"({args.connections} connections, 1 wrk thread, {args.seconds} s each)")
    finally:
        for process in reversed(started):
            process.terminate()
            process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
