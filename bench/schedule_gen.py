"""Seeded fault schedules for the 60 s official test (issue 14): a family instead of one schedule.

`generate(seed)` draws a class with the issue's shares, then its faults; `generate(seed, cls)`
forces the class. The same seed gives the same schedule, in bench/schedules/*.json's format.
Anywhere a schedule name is taken, `gen:<seed>` or `gen:<class>:<seed>` names one.

    python3 bench/schedule_gen.py 1000 [--class late-outage] [--count 5]
"""

from __future__ import annotations

import argparse
import json
import random
import sys

DURATION_S = 60
# class -> share of generated schedules
CLASSES = {
    "no-fault": 0.10,
    "outage-ends": 0.25,       # one default outage of 5-40 s that ends before the test does
    "outage-to-end": 0.20,     # a default outage that runs past the end of the test
    "flapping": 0.15,          # three or more default outages
    "default-slow": 0.10,      # default 1-3 s per call for a while
    "both-down": 0.10,         # both processors down at once for a while
    "fallback-bad": 0.10,      # fallback failing or slow while default is fine or flapping
}
HEALTHY = {"delay": 0, "failure": False}


def _pick_class(rng: random.Random) -> str:
    x = rng.random()
    for name, share in CLASSES.items():
        x -= share
        if x < 0:
            return name
    return name


def _steps(events: list[tuple[float, str, dict]], base_delay: dict[str, int]) -> list[dict]:
    """Events (at, processor, settings) folded into full steps: each step states both processors."""
    state = {p: {"delay": base_delay[p], "failure": False} for p in ("default", "fallback")}
    steps = [{"at": 1, "default": dict(state["default"]), "fallback": dict(state["fallback"])}]
    for at, processor, settings in sorted(events, key=lambda e: e[0]):
        at = max(2, min(DURATION_S - 1, int(round(at))))
        state[processor] = {**state[processor], **settings}
        step = {"at": at, "default": dict(state["default"]), "fallback": dict(state["fallback"])}
        if steps[-1]["at"] == at:
            steps[-1] = step
        else:
            steps.append(step)
    return steps


def _outage(events, processor, start, end, base):
    events.append((start, processor, {"failure": True}))
    if end < DURATION_S:
        events.append((end, processor, {"failure": False, "delay": base}))


def generate(seed: int, cls: str | None = None) -> dict:
    rng = random.Random(f"rinha-schedule-{seed}")
    drawn = _pick_class(rng)
    cls = cls or drawn
    if cls not in CLASSES:
        raise ValueError(f"unknown schedule class {cls!r}: one of {', '.join(CLASSES)}")
    base = {"default": rng.choice((0, 0, 1, 5, 10, 20, 50)), "fallback": rng.choice((0, 0, 1, 5, 10, 20, 50))}
    events: list[tuple[float, str, dict]] = []
    what = ""
    if cls == "outage-ends":
        length = rng.uniform(5, 40)
        start = rng.uniform(2, DURATION_S - 1 - length)
        _outage(events, "default", start, start + length, base["default"])
        what = f"default down {start:.0f}-{start + length:.0f} s"
    elif cls == "outage-to-end":
        start = rng.uniform(5, 55)
        if rng.random() < 0.5 and start > 15:  # a shorter outage before it, ended 3 s or more before
            first = rng.uniform(2, start - 8)
            length = rng.uniform(2, min(10, start - first - 3))
            _outage(events, "default", first, first + length, base["default"])
        _outage(events, "default", start, DURATION_S + 10, base["default"])
        what = f"default down from {start:.0f} s to the end"
    elif cls == "flapping":
        t = rng.uniform(2, 15)
        n = 0
        while t < DURATION_S - 3 and (n < 3 or rng.random() < 0.6):
            length = rng.uniform(1, 8)
            _outage(events, "default", t, t + length, base["default"])
            t += length + rng.uniform(1, 10)
            n += 1
        what = f"default flapping ({n} outages)"
    elif cls == "default-slow":
        delay = rng.randint(1000, 3000)
        start = rng.uniform(2, 50)
        end = start + rng.uniform(5, 40)
        events.append((start, "default", {"delay": delay}))
        if end < DURATION_S:
            events.append((end, "default", {"delay": base["default"]}))
        what = f"default {delay} ms per call from {start:.0f} s" + (f" to {end:.0f} s" if end < DURATION_S else " to the end")
    elif cls == "both-down":
        start = rng.uniform(2, 50)
        length = rng.uniform(3, 25)
        _outage(events, "default", start, start + length, base["default"])
        f_start = start + rng.uniform(-2, 2)
        _outage(events, "fallback", f_start, f_start + length + rng.uniform(-2, 2), base["fallback"])
        what = f"both down from about {start:.0f} s for about {length:.0f} s"
    elif cls == "fallback-bad":
        start = rng.uniform(2, 45)
        end = start + rng.uniform(5, 40)
        if rng.random() < 0.5:
            _outage(events, "fallback", start, end, base["fallback"])
        else:
            events.append((start, "fallback", {"delay": rng.randint(1000, 5000)}))
            if end < DURATION_S:
                events.append((end, "fallback", {"delay": base["fallback"]}))
        if rng.random() < 0.5:
            t = rng.uniform(2, 20)
            while t < DURATION_S - 5:
                length = rng.uniform(1, 5)
                _outage(events, "default", t, t + length, base["default"])
                t += length + rng.uniform(3, 12)
        what = f"fallback bad from {start:.0f} s"
    else:
        what = "no fault"
    return {"name": f"gen:{cls}:{seed}", "class": cls,
            "description": f"Generated (bench/schedule_gen.py, seed {seed}, class {cls}): {what}.",
            "steps": _steps(events, base)}


def parse_name(name: str) -> dict | None:
    """`gen:<seed>` or `gen:<class>:<seed>` as a schedule; None for any other name."""
    if not name.startswith("gen:"):
        return None
    parts = name.split(":")
    if len(parts) == 2:
        return generate(int(parts[1]))
    if len(parts) == 3:
        return generate(int(parts[2]), parts[1])
    raise ValueError(f"schedule {name!r}: expected gen:<seed> or gen:<class>:<seed>")


def family(seed: int, count: int) -> list[dict]:
    """`count` schedules from consecutive seeds starting at `seed`, classes drawn by their shares."""
    return [generate(s) for s in range(seed, seed + count)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("seed", type=int)
    parser.add_argument("--class", dest="cls", choices=CLASSES, default=None)
    parser.add_argument("--count", type=int, default=1)
    args = parser.parse_args()
    for s in range(args.seed, args.seed + args.count):
        json.dump(generate(s, args.cls), sys.stdout)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
