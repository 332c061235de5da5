"""The worker's /metrics read every half second during a run, for the run report's queue and
processor charts (bench/report.py). A thread of bench/official.py."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

SAMPLE_INTERVAL_S = 0.5
# Histograms whose buckets are kept (the others' buckets are dropped: no chart draws them): the
# payment wait, whose quantiles the scorecard shows (bench/report.py's payment_wait).
KEPT_BUCKETS = ("rinha_worker_payment_wait_seconds_bucket",)


def series_key(name: str, labels: dict[str, str] | None = None) -> str:
    """One series as Prometheus writes it, labels sorted, as worker-metrics.jsonl keys it:
    `calls_total{outcome="ok",processor="default"}`."""
    if not labels:
        return name
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return f"{name}{{{body}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class WorkerSampler(threading.Thread):
    """Reads the worker's /metrics every SAMPLE_INTERVAL_S while k6 runs, one JSON line per read:
    {"t": seconds since k6 was launched, "unix": epoch seconds, "<series>": value, ...} with the
    rinha_* series but histogram buckets (some 30 series a read that no chart draws; KEPT_BUCKETS
    are the exception), or
    {"t", "unix", "error"} when the read failed (e.g. during a worker drill).
    One last read when stopped shows where the worker stood once k6 was done."""

    def __init__(self, url: str, path: Path, started: float, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        super().__init__(daemon=True, name="worker-sampler")
        self.url, self.path, self.started, self.interval_s = url, path, started, interval_s
        self.stopping = threading.Event()
        # No proxy from the environment for a loopback read.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def sample(self) -> dict:
        line: dict = {"t": round(time.monotonic() - self.started, 3), "unix": round(time.time(), 3)}
        try:
            with self.opener.open(self.url, timeout=max(self.interval_s, 0.2)) as response:
                text = response.read().decode()
            # The parser is lazy: read the whole page here, so a malformed line is this read's error.
            samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]
        except (OSError, ValueError) as exc:  # refused, timed out, HTTP error, unreadable text
            line["error"] = f"{type(exc).__name__}: {exc}"
            return line
        line.update((series_key(sample.name, sample.labels), sample.value) for sample in samples
                    if sample.name.startswith("rinha_")
                    and (not sample.name.endswith("_bucket") or sample.name in KEPT_BUCKETS))
        return line

    def run(self) -> None:
        with self.path.open("w") as out:
            tick = 0
            while True:
                out.write(json.dumps(self.sample()) + "\n")
                out.flush()
                tick += 1
                # On a fixed grid from the start: one slow read delays one sample, not all later ones.
                if self.stopping.wait(max(self.started + tick * self.interval_s - time.monotonic(), 0.0)):
                    out.write(json.dumps(self.sample()) + "\n")
                    return

    def stop(self) -> None:
        self.stopping.set()
        self.join()
