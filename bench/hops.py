"""Where a POST's latency goes, hop by hop, at a light and steady pace (no k6, no ramp).

    python bench/hops.py [--requests 3000] [--gap-ms 2] [--rounds 3]

One client on one kept-alive connection posts payments one after another (a fresh correlationId
each, `--gap-ms` apart) to three targets, round after round:
  floor   NGINX alone answering 202 itself (bench/floor.py's configuration);
  api     one API node directly on its Unix socket (linked to the worker, payments flowing);
  stack   the same API nodes through NGINX, as clients reach them.
floor + (api - client overhead) is what stack would cost if the NGINX -> API hop were free;
the difference is the hop. Same client, same machine, interleaved, medians of the rounds.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from floor import render_floor_conf  # noqa: E402
from official import free_port  # noqa: E402

from rinha.config import StackConfig  # noqa: E402
from rinha.stack.launcher import Stack  # noqa: E402

QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "p99.9": 0.999}


def connect(target: str | int) -> socket.socket:
    if isinstance(target, str):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(target)
        return sock
    sock = socket.create_connection(("127.0.0.1", target))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def post_one_by_one(target: str | int, requests: int, gap_s: float) -> list[float]:
    """Round-trip times in microseconds of `requests` POSTs, each sent once the last was answered."""
    rtts = []
    with connect(target) as sock:
        for _ in range(requests):
            body = b'{"correlationId":"%s","amount":19.90}' % str(uuid.uuid4()).encode()
            request = (b"POST /payments HTTP/1.1\r\nHost: rinha\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            began = time.perf_counter()
            sock.sendall(request)
            answer = sock.recv(4096)
            while b"\r\n\r\n" not in answer:
                more = sock.recv(4096)
                if not more:
                    raise SystemExit(f"{target}: connection closed mid-answer")
                answer += more
            rtts.append((time.perf_counter() - began) * 1e6)
            if not answer.startswith(b"HTTP/1.1 202"):
                raise SystemExit(f"{target}: unexpected answer {answer[:40]!r}")
            time.sleep(gap_s)
    return rtts


def quantiles(rtts: list[float]) -> dict[str, float]:
    ordered = sorted(rtts)
    return {name: ordered[min(len(ordered) - 1, int(q * len(ordered)))] for name, q in QUANTILES.items()}


def stack_config(run_dir: str) -> StackConfig:
    return replace(StackConfig(), port=free_port(), worker_port=free_port(), worker_metrics_port=free_port(),
                   default_port=free_port(), fallback_port=free_port(), run_dir=run_dir, log_level="WARNING")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="POSTs per target per round (default 3000)")
    parser.add_argument("--gap-ms", type=float, default=2.0, help="pause after each answer (default 2 ms)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    quiet = lambda line: None  # noqa: E731
    with Stack(stack_config(tempfile.mkdtemp(prefix="rinha-hops-")), log=quiet) as stack, \
            Stack(stack_config(tempfile.mkdtemp(prefix="rinha-floor-")), log=quiet, with_nodes=False,
                  render_conf=render_floor_conf) as floor:
        targets = {"floor": floor.config.port, "api": stack.socket_path(1), "stack": stack.config.port}
        results: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
        for round_ in range(1, args.rounds + 1):
            for name, target in targets.items():
                figures = quantiles(post_one_by_one(target, args.requests, args.gap_ms / 1000))
                results[name].append(figures)
                print(f"round {round_} {name:<6}" + "".join(f"  {k} {v:6.0f}" for k, v in figures.items()) + "  µs",
                      flush=True)
    print(f"\nmedians of {args.rounds} rounds, {args.requests} POSTs each, {args.gap_ms:g} ms apart (µs):")
    print(f"{'target':<8}" + "".join(f"{name:>8}" for name in QUANTILES))
    for name, rounds in results.items():
        print(f"{name:<8}" + "".join(f"{statistics.median(r[q] for r in rounds):>8.0f}" for q in QUANTILES))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
