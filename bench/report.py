"""The run report: one self-contained HTML page with the scorecard and charts over time.

    python bench/report.py bench/results/<run>      # (re)writes <run>/run-report.html

bench/official.py writes it at the end of every run, from these files of the run's folder:

  k6-samples.csv.gz     one row per HTTP request k6 made (end time, duration, tags) and one per
                        audit round's inconsistency count: k6's CSV output cut down by
                        compact_k6_csv() to what the charts use
  worker-metrics.jsonl  the worker's /metrics every 0.5 s during the k6 run (official.py's sampler)
  partial-results.json  the `rinha` object: when the scenarios started (second 0 of every chart)
  schedule.json         the fault schedule the run used
  scorecard.txt         shown at the top

Charts share one x axis, seconds since the scenarios started (second 0 of the fault schedule):
requests/s, p50/p99 of POST /payments per second, the worker's queue and calls in flight,
payments stored per processor. Each shows the processors' fault windows and the audit rounds.
matplotlib renders PNGs that are embedded in the page as base64, so it opens anywhere as one file.
"""

from __future__ import annotations

import base64
import csv
import datetime
import gzip
import html
import io
import json
import math
import sys
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sampler import series_key

from rinha.config import WorkerConfig

SAMPLES = "k6-samples.csv.gz"
WORKER_METRICS = "worker-metrics.jsonl"
RESULTS = "partial-results.json"
SCHEDULE = "schedule.json"
SCORECARD = "scorecard.txt"
REPORT = "run-report.html"

# k6's CSV output holds ~15 metrics per request (timings, bytes, iterations...); the charts need
# one duration per request and the audit's per-round verdict.
KEPT_METRICS = ("http_req_duration", "audit_inconsistencies")
SAMPLE_COLUMNS = ("metric", "end_us", "value", "scenario", "method", "name", "status")
PAYMENT = ("POST", "POST /payments")
OUR_SUMMARY = "GET /payments-summary"
PROCESSORS = ("default", "fallback")

# A processor counts as slow (lighter shading) from the delay at which our router stops giving it
# new payments (the worker's --slow-ms, 1,000 ms by default): below that the delay only lengthens
# calls nobody waits for; above it routing changes and calls may straddle the audit's 1.5 s edge.
SLOW_MS = WorkerConfig().slow_threshold_s() * 1000  # the default policy's slowness gate

QUEUE = series_key("rinha_worker_queue_payments")


def in_flight(processor: str) -> str:
    return series_key("rinha_worker_in_flight_calls", {"processor": processor})


def ledger(processor: str) -> str:
    return series_key("rinha_worker_ledger_payments", {"processor": processor})


# ---------------------------------------------------------------------------------------------
# k6 samples


def compact_k6_csv(raw: Path, dest: Path) -> int:
    """Keeps KEPT_METRICS rows of k6's gzipped CSV output, with SAMPLE_COLUMNS; returns rows kept."""
    kept = 0
    with gzip.open(raw, "rt", newline="") as source, gzip.open(dest, "wt", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(SAMPLE_COLUMNS)
        for row in csv.DictReader(source):
            if row["metric_name"] in KEPT_METRICS:
                writer.writerow((row["metric_name"], _to_micros(row["timestamp"]), row["metric_value"],
                                 row["scenario"], row["method"], row["name"], row["status"]))
                kept += 1
    return kept


def _to_micros(timestamp: str) -> int:
    """k6 writes whole seconds unless K6_CSV_TIME_FORMAT says otherwise; official.py asks for µs."""
    value = float(timestamp)
    for limit, scale in ((1e11, 1e6), (1e14, 1e3), (1e17, 1.0)):
        if value < limit:
            return round(value * scale)
    return round(value / 1e3)  # nanoseconds


@dataclass(frozen=True, slots=True)
class Request:
    end_s: float  # unix seconds at which k6 had the whole answer (k6 stamps samples at the end)
    duration_ms: float
    scenario: str  # payments, audit or faults; empty in setup and teardown
    method: str
    name: str
    status: int  # 0: no answer (timeout, refused)

    @property
    def start_s(self) -> float:
        return self.end_s - self.duration_ms / 1000

    @property
    def ok(self) -> bool:  # what the score's p99 counts (SPEC.md section 4)
        return 200 <= self.status < 400

    @property
    def is_payment(self) -> bool:
        return (self.method, self.name) == PAYMENT


@dataclass(frozen=True, slots=True)
class Samples:
    requests: list[Request]
    audit_checks: list[tuple[float, float]]  # (unix s, inconsistencies found by that round)


def load_samples(path: Path) -> Samples:
    requests, checks = [], []
    with gzip.open(path, "rt", newline="") as source:
        for row in csv.DictReader(source):
            end_s = int(row["end_us"]) / 1e6
            if row["metric"] == "http_req_duration":
                requests.append(Request(end_s, float(row["value"]), row["scenario"], row["method"], row["name"],
                                        int(row["status"] or 0)))
            elif row["metric"] == "audit_inconsistencies":
                checks.append((end_s, float(row["value"])))
    requests.sort(key=lambda r: r.end_s)
    checks.sort()
    return Samples(requests, checks)


def run_start(rinha: dict, samples: Samples) -> float:
    """Unix seconds of second 0: the scenarios' start as rinha.js saw it, else the first request
    made by a scenario (all three start together; the audit's first round is at once)."""
    if rinha.get("started_at_ms"):
        return rinha["started_at_ms"] / 1000
    starts = [r.start_s for r in samples.requests if r.scenario]
    if not starts:
        raise ValueError("no start time: partial-results.json has no started_at_ms and k6 made no scenario request")
    return min(starts)


# ---------------------------------------------------------------------------------------------
# Aggregation


def percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks, as k6 computes p(99) for the score."""
    if not ordered:
        raise ValueError("percentile of nothing")
    rank = q * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def counts_per_second(times: Iterable[float]) -> dict[int, int]:
    """How many events fell in each second [s, s + 1), by second."""
    counts: dict[int, int] = defaultdict(int)
    for t in times:
        counts[math.floor(t)] += 1
    return dict(counts)


def percentiles_per_second(points: Iterable[tuple[float, float]], qs: Sequence[float]) -> dict[int, list[float]]:
    """For (t, value) points: each second's percentiles `qs` of the values that fell in it."""
    by_second: dict[int, list[float]] = defaultdict(list)
    for t, value in points:
        by_second[math.floor(t)].append(value)
    return {second: [percentile(sorted(values), q) for q in qs] for second, values in by_second.items()}


@dataclass(frozen=True, slots=True)
class Window:
    processor: str
    kind: str  # "failing" or "slow"
    start: float
    end: float


def fault_windows(schedule: dict, duration_s: float, slow_ms: float = SLOW_MS) -> list[Window]:
    """When each processor was failing, or slow (delay >= slow_ms, not failing), per the schedule.

    As in rinha.js, steps at or after the end of the run never fire, a step holds until the next
    one, and before the first the processors are calm (setup() resets them)."""
    steps = sorted((s for s in schedule["steps"] if s["at"] < duration_s), key=lambda s: s["at"])
    windows = []
    for processor in PROCESSORS:
        current: list = []  # [kind, start] of the open window
        for step in steps:
            settings = step[processor]
            kind = "failing" if settings["failure"] else "slow" if settings["delay"] >= slow_ms else None
            if current and current[0] != kind:
                windows.append(Window(processor, current[0], current[1], step["at"]))
                current = []
            if kind and not current:
                current = [kind, step["at"]]
        if current:
            windows.append(Window(processor, current[0], current[1], duration_s))
    return windows


@dataclass(frozen=True, slots=True)
class AuditRound:
    at: float  # seconds since start at which our GET /payments-summary was sent
    inconsistencies: float | None  # None: the round's verdict is not in the samples


def audit_rounds(samples: Samples, t0: float) -> list[AuditRound]:
    """The audit scenario's checks of our summary; each gets the verdict recorded right after it."""
    gets = [r for r in samples.requests if r.scenario == "audit" and r.name == OUR_SUMMARY]
    gets.sort(key=lambda r: r.start_s)
    check_times = [t for t, _ in samples.audit_checks]
    rounds = []
    for i, get in enumerate(gets):
        # A round's verdict comes after its three reads and before the next round starts.
        j = bisect_left(check_times, get.end_s)
        next_start = gets[i + 1].start_s if i + 1 < len(gets) else math.inf
        verdict = samples.audit_checks[j][1] if j < len(check_times) and check_times[j] < next_start else None
        rounds.append(AuditRound(get.start_s - t0, verdict))
    return rounds


def load_worker_metrics(path: Path) -> tuple[list[dict], int]:
    """The sampler's lines that hold metrics, and how many scrapes failed."""
    lines, errors = [], 0
    if not path.exists():
        return lines, errors
    for text in path.read_text().splitlines():
        if not text.strip():
            continue
        line = json.loads(text)
        if "error" in line:
            errors += 1
        else:
            lines.append(line)
    return lines, errors


# ---------------------------------------------------------------------------------------------
# The payment wait: a service level, from the worker's histogram

WAIT = "rinha_worker_payment_wait_seconds"
_WAIT_BUCKET = WAIT + '_bucket{le="'


@dataclass(frozen=True, slots=True)
class WaitLevel:
    """Quantiles of a payment's wait, from its acceptance by the worker to the answer that stored it."""

    payments: int
    p50_s: float
    p99_s: float
    p99_beyond: bool  # the p99 is past the last finite bucket: p99_s is a lower bound


def _wait_buckets(line: dict) -> dict[float, float]:
    """{le: cumulative count} of the wait histogram in one sampler line ({} if it holds none)."""
    return {float(key[len(_WAIT_BUCKET):-2]): value for key, value in line.items() if key.startswith(_WAIT_BUCKET)}


def histogram_increase(lines: list[dict]) -> dict[float, float]:
    """How much each cumulative bucket grew from the first line to the last, as Prometheus'
    increase(): a count that drops (the worker restarted, e.g. in a drill) starts again from zero."""
    total: dict[float, float] = defaultdict(float)
    previous: dict[float, float] = {}
    for line in lines:
        buckets = _wait_buckets(line)
        if not buckets:
            continue
        if previous:  # the first read is where the run starts from
            reset = buckets.get(math.inf, 0) < previous.get(math.inf, 0)
            for le, count in buckets.items():
                total[le] += count if reset else count - previous.get(le, 0)
        previous = buckets
    return dict(total)


def histogram_quantile(q: float, buckets: dict[float, float]) -> tuple[float, bool]:
    """The q-quantile of a cumulative histogram, linear within its bucket (Prometheus'
    histogram_quantile); (value, beyond): beyond when it lies in the +Inf bucket, whose value is
    then the last finite bound."""
    bounds = sorted(buckets)
    rank = q * buckets[math.inf]
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank and count > below:
            if math.isinf(le):
                return lower, True
            return lower + (le - lower) * (rank - below) / (count - below), False
        lower, below = (lower if math.isinf(le) else le), count
    return lower, True


def payment_wait(lines: list[dict]) -> WaitLevel | None:
    """The wait's p50 and p99 over the payments stored between the first and the last read of the
    worker's /metrics (the sampler reads once more when k6 is done); None without a histogram or
    a payment in it."""
    buckets = histogram_increase(lines)
    if not buckets.get(math.inf):
        return None
    p50, _ = histogram_quantile(0.50, buckets)
    p99, beyond = histogram_quantile(0.99, buckets)
    return WaitLevel(round(buckets[math.inf]), p50, p99, beyond)


def wait_line(level: WaitLevel | None) -> str:
    """The scorecard's line for the wait."""
    if level is None:
        return "payment wait       n/a (no wait histogram in the worker's /metrics)"
    p99 = f"> {level.p99_s:g}" if level.p99_beyond else f"{level.p99_s:.3f}"
    return (f"payment wait       p50 {level.p50_s:.3f} s, p99 {p99} s   ({level.payments} stored; "
            f"acceptance by the worker to the processor's answer, its histogram)")


def worker_series(lines: list[dict], key: str, t0: float) -> tuple[list[float], list[float]]:
    ts, values = [], []
    for line in lines:
        if key in line:
            ts.append(line["unix"] - t0)
            values.append(line[key])
    return ts, values


# ---------------------------------------------------------------------------------------------
# Charts

COLOURS = {"post": "#1f77b4", "failed": "#d62728", "other": "#7f7f7f", "p50": "#17becf", "p99": "#9467bd",
           "queue": "#8c564b", "default": "#1f77b4", "fallback": "#ff7f0e", "fault": "#d62728",
           "audit": "#2ca02c", "audit-bad": "#000000", "teardown": "#7f7f7f"}
FAULT_ALPHA = {"failing": 0.30, "slow": 0.12}
# Default's windows shade the upper half of each chart, fallback's the lower half (hatched).
BANDS = {"default": (0.5, 1.0, None), "fallback": (0.0, 0.5, "//")}
FIGSIZE = (12.0, 2.9)
# Same margins on every chart, legends in the right margin: the x axes line up down the page.
MARGINS = {"left": 0.07, "right": 0.8, "top": 0.93, "bottom": 0.17}


@dataclass
class Run:
    """Everything the charts need, with times in seconds since the start."""

    t0: float
    duration_s: float
    requests: list[Request]
    rounds: list[AuditRound]
    teardown_at: float | None
    schedule: dict
    windows: list[Window]
    worker: list[dict]
    worker_errors: int
    p99_ms: float | None
    xlim: tuple[float, float]


def _decorate(ax, run: Run, legend_extra: Sequence = ()) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    for w in run.windows:
        low, high, hatch = BANDS[w.processor]
        ax.axvspan(w.start, w.end, ymin=low, ymax=high, facecolor=COLOURS["fault"], alpha=FAULT_ALPHA[w.kind],
                   hatch=hatch, edgecolor=COLOURS["fault"] if hatch else "none", linewidth=0, zorder=0)
    for r in run.rounds:
        bad = bool(r.inconsistencies)
        ax.axvline(r.at, color=COLOURS["audit-bad" if bad else "audit"], linestyle="-" if bad else "--",
                   linewidth=1.6 if bad else 1.0, zorder=3)
        if bad:
            ax.annotate(f"{r.inconsistencies:g} inconsistent", (r.at, 1.0), xycoords=("data", "axes fraction"),
                        xytext=(3, -10), textcoords="offset points", fontsize=8)
    if run.teardown_at is not None:
        ax.axvline(run.teardown_at, color=COLOURS["teardown"], linestyle=":", linewidth=1.2, zorder=3)
    ax.set_xlim(*run.xlim)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_xlabel("seconds since the start (second 0 of the fault schedule)", fontsize=8)
    handles = list(legend_extra)
    kinds = {(w.processor, w.kind) for w in run.windows}
    for processor in PROCESSORS:
        for kind in ("failing", "slow"):
            if (processor, kind) in kinds:
                label = f"{processor} {kind}" + (f" (≥ {SLOW_MS:g} ms)" if kind == "slow" else "")
                hatch = BANDS[processor][2]
                handles.append(Patch(facecolor=COLOURS["fault"], alpha=FAULT_ALPHA[kind], hatch=hatch,
                                     edgecolor=COLOURS["fault"] if hatch else "none", label=label))
    if run.rounds:
        handles.append(Line2D([], [], color=COLOURS["audit"], linestyle="--", label="audit round"))
    if any(r.inconsistencies for r in run.rounds):
        handles.append(Line2D([], [], color=COLOURS["audit-bad"], label="audit: inconsistent"))
    if run.teardown_at is not None:
        handles.append(Line2D([], [], color=COLOURS["teardown"], linestyle=":", label="teardown summary"))
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.07, 1.0), fontsize=7.5, frameon=False)


def _dense(counts: dict[int, int], lo: int, hi: int) -> tuple[list[int], list[int]]:
    seconds = list(range(lo, hi + 1))
    return seconds, [counts.get(s, 0) for s in seconds]


def _requests_chart(ax, run: Run) -> None:
    lo, hi = math.floor(run.xlim[0]), math.ceil(run.xlim[1])
    payments_ok = counts_per_second(r.end_s - run.t0 for r in run.requests if r.is_payment and r.ok)
    payments_failed = counts_per_second(r.end_s - run.t0 for r in run.requests if r.is_payment and not r.ok)
    others = counts_per_second(r.end_s - run.t0 for r in run.requests if not r.is_payment)
    lines = [("POST /payments ok", payments_ok, COLOURS["post"]),
             ("POST /payments failed", payments_failed, COLOURS["failed"]),
             ("every other request", others, COLOURS["other"])]
    handles = []
    for label, counts, colour in lines:
        if counts or colour == COLOURS["post"]:
            seconds, values = _dense(counts, lo, hi)
            handles += ax.step(seconds, values, where="post", color=colour, linewidth=1.3, label=label)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("requests / s (by end)")
    _decorate(ax, run, handles)


def _latency_chart(ax, run: Run) -> None:
    points = ((r.end_s - run.t0, r.duration_ms) for r in run.requests if r.is_payment and r.ok)
    per_second = percentiles_per_second(points, (0.5, 0.99))
    seconds = sorted(per_second)
    handles = []
    if seconds:
        centres = [s + 0.5 for s in seconds]
        handles += ax.plot(centres, [per_second[s][0] for s in seconds], color=COLOURS["p50"], marker=".",
                           markersize=3, linewidth=1.2, label="p50 of the second")
        handles += ax.plot(centres, [per_second[s][1] for s in seconds], color=COLOURS["p99"], marker=".",
                           markersize=3, linewidth=1.2, label="p99 of the second")
        if min(min(v) for v in per_second.values()) > 0:
            from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        _no_data(ax, "no successful POST /payments")
    if run.p99_ms:
        handles.append(ax.axhline(run.p99_ms, color=COLOURS["p99"], linestyle=":", linewidth=1,
                                  label=f"run p99 {run.p99_ms:.2f} ms (scored)"))
    ax.set_ylabel("POST /payments ms")
    _decorate(ax, run, handles)


def _queue_chart(ax, run: Run) -> None:
    ts, queue = worker_series(run.worker, QUEUE, run.t0)
    handles = []
    if ts:
        handles += ax.plot(ts, queue, color=COLOURS["queue"], linewidth=1.4, label="payments queued")
        ax.set_ylim(0, max(1.0, max(queue) * 1.1))
        right = ax.twinx()
        top = 1.0
        for processor in PROCESSORS:
            pts, values = worker_series(run.worker, in_flight(processor), run.t0)
            if pts:
                handles += right.plot(pts, values, color=COLOURS[processor], linestyle="--", linewidth=1,
                                      label=f"in flight to {processor} (right)")
                top = max(top, max(values) * 1.1)
        right.set_ylim(0, top)
        right.set_xlim(*run.xlim)
    else:
        _no_data(ax, "no worker metrics")
    ax.set_ylabel("queued payments")
    _decorate(ax, run, handles)


def _ledger_chart(ax, run: Run) -> None:
    handles = []
    top = 1.0
    for processor in PROCESSORS:
        ts, values = worker_series(run.worker, ledger(processor), run.t0)
        if ts:
            handles += ax.plot(ts, values, color=COLOURS[processor], linewidth=1.5, label=f"stored on {processor}")
            top = max(top, max(values) * 1.1)
    if not handles:
        _no_data(ax, "no worker metrics")
    ax.set_ylim(0, top)
    ax.set_ylabel("payments (cumulative)")
    _decorate(ax, run, handles)


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=13, color="#555555")
    ax.set_yticks([])


CHARTS = (
    ("Requests per second", ("By the second in which k6 got the answer. POST /payments apart from every other "
                             "request (audits, the processors' admin calls, setup and teardown)."), _requests_chart),
    ("Latency of POST /payments", ("p50 and p99 of the successful POSTs answered in each second (as k6 measures "
                                   "them for the score), and the whole run's scored p99 over every successful "
                                   "request."), _latency_chart),
    ("Worker queue", ("Payments waiting in the worker's queue, and calls in flight to each processor, read from "
                      "the worker's /metrics every 0.5 s."), _queue_chart),
    ("Payments per processor", ("Payments in the worker's ledger for each processor (what our summary reports), "
                                "read from the worker's /metrics every 0.5 s."), _ledger_chart),
)


def _render(draw, run: Run) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=100)
    fig.subplots_adjust(**MARGINS)
    draw(fig.add_subplot(), run)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# The page


@dataclass(frozen=True, slots=True)
class Report:
    path: Path
    warnings: list[str]


def load_run(folder: Path) -> Run:
    rinha = json.loads((folder / RESULTS).read_text())["rinha"]
    samples = load_samples(folder / SAMPLES)
    t0 = run_start(rinha, samples)
    duration_s = float(rinha["duration_s"])
    schedule = json.loads((folder / SCHEDULE).read_text())
    worker, worker_errors = load_worker_metrics(folder / WORKER_METRICS)
    teardown = [r for r in samples.requests if not r.scenario and r.name == OUR_SUMMARY]
    times = [r.end_s - t0 for r in samples.requests] + [line["unix"] - t0 for line in worker]
    # Half a second of room on each side keeps the teardown's line off the frame.
    xlim = (min([-1.0, *times]) - 0.5, max([duration_s + 1.0, *times]) + 0.5)
    return Run(t0, duration_s, samples.requests, audit_rounds(samples, t0),
               teardown[-1].start_s - t0 if teardown else None, schedule, fault_windows(schedule, duration_s),
               worker, worker_errors, rinha.get("p99_ms"), xlim)


def write_report(folder: Path) -> Report:
    """Writes folder/run-report.html. A chart that fails to draw leaves a notice in its place and a
    warning in the result; missing input files raise."""
    run = load_run(folder)
    warnings = []
    sections = []
    for title, caption, draw in CHARTS:
        try:
            image = base64.b64encode(_render(draw, run)).decode("ascii")
            body = f'<img alt="{html.escape(title)}" src="data:image/png;base64,{image}">'
        except Exception as exc:  # noqa: BLE001 (one broken chart must not cost the others)
            warnings.append(f"chart {title!r} failed: {type(exc).__name__}: {exc}")
            body = f'<p class="failed">This chart could not be drawn: {html.escape(f"{type(exc).__name__}: {exc}")}</p>'
        sections.append(f"<h2>{html.escape(title)}</h2>\n<p class=\"caption\">{html.escape(caption)}</p>\n{body}")
    if not run.worker:
        warnings.append(f"no worker metrics in {folder / WORKER_METRICS}: the queue and processor charts are empty")
    scorecard_path = folder / SCORECARD
    scorecard = scorecard_path.read_text() if scorecard_path.exists() else "(no scorecard.txt)"
    page = _page(folder, run, scorecard, sections)
    path = folder / REPORT
    path.write_text(page)
    return Report(path, warnings)


def _page(folder: Path, run: Run, scorecard: str, sections: list[str]) -> str:
    started = datetime.datetime.fromtimestamp(run.t0, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    step_rows = "\n".join(
        f"<tr><td>{s['at']:g} s</td>"
        + "".join(f"<td>{s[p]['delay']} ms{' <b>failing</b>' if s[p]['failure'] else ''}</td>" for p in PROCESSORS)
        + f"<td>{'' if s['at'] < run.duration_s else 'after the end: not applied'}</td></tr>"
        for s in sorted(run.schedule["steps"], key=lambda s: s["at"]))
    audits = ", ".join(f"{r.at:.1f} s" + ("" if r.inconsistencies is None else f" ({r.inconsistencies:g} inconsistent)")
                       for r in run.rounds) or "none"
    files = []
    for name in (SAMPLES, WORKER_METRICS, RESULTS, SCHEDULE, SCORECARD, "report.html", "stack.log"):
        if (folder / name).exists():
            files.append(f'<a href="{name}">{name}</a> ({(folder / name).stat().st_size / 1024:,.0f} KiB)')
    worker_note = (f"{len(run.worker)} samples of the worker's /metrics"
                   + (f", {run.worker_errors} failed reads" if run.worker_errors else "")) if run.worker else \
        "<b>no worker metrics</b> (the worker's /metrics never answered or was not sampled)"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>rinha run {html.escape(folder.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1140px; color: #222; }}
pre {{ background: #f6f6f6; padding: 0.8em 1em; border-radius: 4px; font-size: 13px; }}
h2 {{ font-size: 1.05em; margin: 1.4em 0 0.2em; }}
.caption, .note {{ font-size: 0.85em; color: #555; margin: 0.2em 0; }}
.failed {{ color: #b00; }}
img {{ width: 100%; max-width: 1100px; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
td, th {{ border: 1px solid #ddd; padding: 2px 8px; text-align: left; }}
</style></head><body>
<h1>rinha run {html.escape(folder.name)}</h1>
<pre>{html.escape(scorecard.rstrip())}</pre>
<p class="note">Second 0 is when k6's scenarios started ({started}): the payments ramp, the audit rounds and the
fault schedule all count from it; setup comes before it, the teardown summary after the end of the ramp
({run.duration_s:g} s). Shading: the processors' faults per the schedule, <b>default in the upper half</b> of each
chart, <b>fallback in the lower half, hatched</b>; darker when failing, lighter when only slow (delay &ge;
{SLOW_MS:g} ms, where the worker stops sending it new payments). Dashed green lines: audit rounds
(black and solid when a round found inconsistencies); dotted grey: the teardown's summary read.</p>
<table><tr><th>schedule step</th><th>default</th><th>fallback</th><th></th></tr>
{step_rows}
</table>
<p class="note">Data: {len(run.requests):,} HTTP requests from k6, audit rounds at {audits}; {worker_note}.</p>
{chr(10).join(sections)}
<p class="note">Files of this run: {", ".join(files)}.</p>
</body></html>
"""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    report = write_report(Path(args[0]))
    for warning in report.warnings:
        print(f"report: warning: {warning}", file=sys.stderr)
    print(report.path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
