"""Profiles of the API nodes and the worker during a run, with py-spy (`official.py --profile`).

py-spy samples a running process from outside (no code of ours changes) and `--nonblocking`
keeps it from pausing the process it reads, so the run's latency is barely touched. Each process
gets one recorder: api1 and the worker as flame graphs (SVG, open in a browser), api2 as
collapsed stacks from which `top` prints where the CPU went. Both API nodes serve the same
traffic through NGINX's round robin, so api2's figures stand for api1's picture too.
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
from pathlib import Path

RATE_HZ = 200
# process name -> py-spy output format
RECORDINGS = {"api1": "flamegraph", "api2": "raw", "worker": "flamegraph"}
SUFFIX = {"flamegraph": "svg", "raw": "collapsed.txt"}


def start(pids: dict[str, int], out: Path) -> list[subprocess.Popen]:
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("py-spy not found: pip install py-spy (make deps does it)")
    recorders = []
    for name, fmt in RECORDINGS.items():
        path = out / f"profile-{name}.{SUFFIX[fmt]}"
        recorders.append(subprocess.Popen(
            [py_spy, "record", "--pid", str(pids[name]), "--rate", str(RATE_HZ), "--nonblocking",
             "--format", fmt, "--output", str(path)],
            stdout=subprocess.DEVNULL, stderr=(out / f"profile-{name}.log").open("w")))
    return recorders


def stop(recorders: list[subprocess.Popen]) -> None:
    """SIGINT makes py-spy write what it has sampled so far."""
    for recorder in recorders:
        if recorder.poll() is None:
            recorder.send_signal(signal.SIGINT)
    for recorder in recorders:
        try:
            recorder.wait(30)
        except subprocess.TimeoutExpired:
            recorder.kill()


def top(collapsed: Path, n: int = 15) -> str:
    """The functions that held the CPU themselves (self samples) and with their callees (total)."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        weight = int(count)
        samples += weight
        own[frames[-1]] += weight
        for frame in set(frames):
            total[frame] += weight
    if not samples:
        return f"{collapsed.name}: no samples"
    lines = [f"{collapsed.name}: {samples} samples at {RATE_HZ} Hz (busy time only)",
             f"{'self %':>7}{'total %':>9}  function (file:line)"]
    for frame, count in own.most_common(n):
        lines.append(f"{100 * count / samples:>7.1f}{100 * total[frame] / samples:>9.1f}  {frame}")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(top(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 15))
