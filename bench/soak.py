"""The soak: N payments through the whole stack at a steady rate, then a kill -9 of the worker.

    python bench/soak.py [--payments 1000000] [--rate 1000] [--checkpoints 10] [--port 9511]

k6 (bench/soak.js) posts the payments through NGINX at `--rate` per second while this script
prints a progress line every few seconds and, at each checkpoint (every payments/checkpoints
accepted), the RSS of each process, the worker's bytes on disk per payment and the latency of
summaries (the auditor's window and the whole history, medians and max of a few reads through
NGINX). At the end: whether our ledger equals the processors' books once the queue has drained;
then the worker is killed with SIGKILL and started again on the same folder: its start-up time,
its peak RSS during start-up (VmHWM of the new process) and whether the summary is unchanged.
Everything goes to bench/results/soak-<time>/ (progress.log, stack.log, soak.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from official import free_port  # noqa: E402
from procstat import family, usage  # noqa: E402
from runs import batch_folder, progress_log  # noqa: E402
from sampler import series_key, text_string_to_metric_families  # noqa: E402

from rinha import clock  # noqa: E402
from rinha.config import StackConfig, build  # noqa: E402
from rinha.probe import answers_http  # noqa: E402
from rinha.stack.launcher import Stack  # noqa: E402

PROCESSES = ("nginx", "api1", "api2", "worker", "default", "fallback")
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get_json(url: str, headers: dict | None = None, timeout: float = 10) -> dict:
    with OPENER.open(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as response:
        return json.load(response)


def rss_mb(pid: int) -> float:
    """Current VmRSS of `pid` and its descendants (NGINX's workers)."""
    total = 0
    for member in family(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def worker_metrics(stack: Stack) -> dict[str, float]:
    with OPENER.open(stack.worker_metrics_url, timeout=5) as response:
        text = response.read().decode()
    return {series_key(sample.name, sample.labels): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def disk_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*") if f.is_file())


def summary_url(base: str, start: int | None = None, end: int | None = None) -> str:
    query = "&".join(f"{k}={clock.format_ms(v)}" for k, v in (("from", start), ("to", end)) if v is not None)
    return f"{base}/payments-summary" + (f"?{query}" if query else "")


def timed_summary(base: str, start: int | None, end: int | None) -> tuple[float, dict]:
    began = time.perf_counter()
    body = get_json(summary_url(base, start, end))
    return (time.perf_counter() - began) * 1000, body


def summary_latency(base: str, reads: int = 5) -> dict[str, tuple[float, float]]:
    """(median, max) ms of the auditor's window and of the whole history."""
    out = {}
    for name in ("auditor", "history"):
        times = []
        for _ in range(reads):
            now = clock.now_ms()
            window = (now - 15_000, now - 1_500) if name == "auditor" else (None, None)
            times.append(timed_summary(base, *window)[0])
        out[name] = (statistics.median(times), max(times))
    return out


def processors_books(stack: Stack) -> dict[str, tuple[int, float]]:
    books = {}
    for name, url in (("default", stack.default_url), ("fallback", stack.fallback_url)):
        body = get_json(f"{url}/admin/payments-summary", {"X-Rinha-Token": "123"})
        books[name] = (body["totalRequests"], round(body["totalAmount"], 2))
    return books


def ours(summary: dict) -> dict[str, tuple[int, float]]:
    return {name: (summary[name]["totalRequests"], round(summary[name]["totalAmount"], 2)) for name in ("default", "fallback")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payments", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=1000, help="payments per second")
    parser.add_argument("--checkpoints", type=int, default=10)
    parser.add_argument("--port", type=int, default=int(os.environ.get("RINHA_BENCH_PORT", 9999)))
    args = parser.parse_args()
    root = batch_folder("soak")
    log = progress_log(root)
    stack_log = (root / "stack.log").open("w", buffering=1)
    run_dir = Path(tempfile.mkdtemp(prefix="rinha-soak-"))
    config = replace(build(StackConfig), port=args.port, run_dir=str(run_dir))
    if args.port != 9999:
        config = replace(config, default_port=free_port(), fallback_port=free_port(),
                         worker_port=free_port(), worker_metrics_port=free_port())
    stack = Stack(config, log=lambda line: stack_log.write(line + "\n"))
    base = f"http://127.0.0.1:{args.port}"
    result: dict = {"payments": args.payments, "rate": args.rate, "checkpoints": []}
    stack.start()
    try:
        OPENER.open(urllib.request.Request(f"{base}/purge-payments", method="POST", headers=stack.admin_headers), timeout=5)
        pids = stack.pids()
        log(f"soak: {args.payments:,} payments at {args.rate}/s through {base}; results in {root}")
        k6 = subprocess.Popen(["k6", "run", "--quiet", "--no-usage-report", "-e", f"RATE={args.rate}",
                               "-e", f"PAYMENTS={args.payments}", "-e", f"BASE_URL={base}", str(BENCH / "soak.js")],
                              stdout=(root / "k6.log").open("w"), stderr=subprocess.STDOUT)
        started = time.monotonic()
        step = max(args.payments // args.checkpoints, 1)
        next_checkpoint = step
        last_line = 0.0
        header = ("accepted", "t s", *(f"{n} MB" for n in PROCESSES), "B/payment", "auditor ms", "history ms")
        table = [header]
        while True:
            finished = k6.poll() is not None
            m = worker_metrics(stack)
            accepted = int(m.get("rinha_worker_accepted_total", 0))
            stored = int(sum(v for k, v in m.items() if k.startswith("rinha_worker_ledger_payments")))
            elapsed = time.monotonic() - started
            if time.monotonic() - last_line >= 10:
                last_line = time.monotonic()
                log(f"  {elapsed:7.0f} s  accepted {accepted:>9,}  stored {stored:>9,}  queue "
                    f"{int(m.get('rinha_worker_queue_payments', 0)):>6,}  worker {rss_mb(pids['worker']):6.1f} MB")
            if accepted >= next_checkpoint or (finished and accepted > (table[-1][0] if len(table) > 1 else 0)):
                latency = summary_latency(base)
                row = (accepted, round(elapsed), *(round(rss_mb(pids[n]), 1) for n in PROCESSES),
                       round(disk_bytes(stack.worker_data_dir) / max(stored, 1)),
                       "%.1f / %.1f" % latency["auditor"], "%.1f / %.1f" % latency["history"])
                table.append(row)
                result["checkpoints"].append(dict(zip(header, row)))
                log("  checkpoint: " + ", ".join(f"{h} {v}" for h, v in zip(header, row)))
                while next_checkpoint <= accepted:
                    next_checkpoint += step
            if finished:
                break
            time.sleep(1)
        log(f"k6 exited {k6.returncode} after {time.monotonic() - started:.0f} s")
        # Drained: everything accepted is stored.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            m = worker_metrics(stack)
            stored = int(sum(v for k, v in m.items() if k.startswith("rinha_worker_ledger_payments")))
            if stored >= m["rinha_worker_accepted_total"] and m["rinha_worker_queue_payments"] == 0:
                break
            time.sleep(0.5)
        before = ours(get_json(summary_url(base)))
        books = processors_books(stack)
        result.update(accepted=int(m["rinha_worker_accepted_total"]), ledger=before, processors=books,
                      ledger_equals_processors=before == books)
        log(f"ledger {before} processors {books}: {'EQUAL' if before == books else 'DIFFERENT'}")
        widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
        lines = ["  ".join(str(v).rjust(w) for v, w in zip(row, widths)) for row in table]
        log("\n" + "\n".join(lines))

        # kill -9 and a restart on the same folder; VmHWM of the new process is its start-up peak.
        stack.stop_child("worker", signal.SIGKILL)
        began = time.monotonic()
        stack.restart("worker")
        worker_pid = stack.pids()["worker"]
        while not answers_http(("127.0.0.1", config.worker_port), None):
            time.sleep(0.02)
        startup_s = time.monotonic() - began
        after = None
        while after is None and time.monotonic() - began < 60:
            try:  # 503 until the API nodes' links are back
                after = ours(get_json(summary_url(base)))
            except OSError:
                time.sleep(0.1)
        peak = usage(worker_pid).peak_rss_mb
        result.update(restart_s=round(startup_s, 2), restart_peak_rss_mb=round(peak, 1), ledger_after_restart=after,
                      summary_unchanged=after == before)
        log(f"kill -9 + restart: ready in {startup_s:.2f} s, peak RSS {peak:.1f} MB, summary "
            f"{'unchanged' if after == before else f'CHANGED: {after}'}")
    finally:
        stack.stop()
        stack_log.close()
        shutil.rmtree(run_dir, ignore_errors=True)
        (root / "soak.json").write_text(json.dumps(result, indent=2))
    return 0 if result.get("ledger_equals_processors") and result.get("summary_unchanged") else 1


if __name__ == "__main__":
    raise SystemExit(main())
