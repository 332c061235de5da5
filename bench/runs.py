"""Shared by the multi-run benches (scenarios, crash drills): one official-style run in a folder,
and a progress log that goes to the terminal and to the batch's folder."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def batch_folder(kind: str) -> Path:
    root = BENCH / "results" / time.strftime(f"{kind}-%Y%m%d-%H%M%S")
    root.mkdir(parents=True)
    return root


def progress_log(root: Path):
    def log(line: str) -> None:
        print(line, flush=True)
        with (root / "progress.log").open("a") as progress:
            progress.write(line + "\n")
    return log


def run_official(folder: Path, flags: list[str], log) -> dict | None:
    """Runs bench/official.py with `flags` into `folder`; returns its scorecard.json, or None."""
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(BENCH / "official.py"), "--results", str(folder), *flags]
    with (folder / "run.log").open("w") as output:
        code = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT).returncode
    cards = list(folder.glob("*/scorecard.json"))
    if not cards:
        log(f"  no scorecard (exit {code}); see {folder / 'run.log'}")
        return None
    return json.loads(cards[0].read_text())


def finish(root: Path, table: str, log) -> int:
    """Prints and keeps a batch's table."""
    log("\n" + table)
    (root / "table.txt").write_text(table + "\n")
    log(f"\nruns kept in {root}")
    return 0

