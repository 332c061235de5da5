"""The run report's pieces: k6 samples, per-second aggregation, fault windows, audit marks, the page,
and official.py's worker-metrics sampler (bench/sampler.py)."""

from __future__ import annotations

import asyncio
import base64
import csv
import gzip
import http.server
import json
import random
import re
import sys
import threading
import time
from pathlib import Path

import numpy
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import official
import report
from prometheus_client.parser import text_string_to_metric_families
from sampler import WorkerSampler, series_key
from conftest import eventually, free_port, new_id

from rinha.metrics import Registry
from rinha.worker.metrics import WAIT_BUCKETS

OFFICIAL = json.loads((REPO / "bench" / "schedules" / "official.json").read_text())
T0 = 1_795_707_238.786  # unix seconds of second 0 in the synthetic runs below


def windows(schedule: dict, duration_s: float, slow_ms: float = 1000.0) -> set[tuple]:
    return {(w.processor, w.kind, w.start, w.end) for w in report.fault_windows(schedule, duration_s, slow_ms)}


def step(at: float, default: tuple[int, bool], fallback: tuple[int, bool]) -> dict:
    return {"at": at, "default": {"delay": default[0], "failure": default[1]},
            "fallback": {"delay": fallback[0], "failure": fallback[1]}}


# ---------------------------------------------------------------------------------------------
# Aggregation against brute force


@pytest.mark.parametrize("seed", range(5))
def test_percentile_matches_numpy_linear_interpolation(seed):
    rng = random.Random(seed)
    values = sorted(rng.lognormvariate(0, 1) for _ in range(rng.randint(1, 300)))
    for q in (0.0, 0.01, 0.5, 0.9, 0.99, 0.999, 1.0):
        assert report.percentile(values, q) == pytest.approx(numpy.percentile(values, 100 * q), rel=1e-12)


def test_percentile_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        report.percentile([], 0.5)


@pytest.mark.parametrize("seed", range(5))
def test_per_second_p50_and_p99_match_a_brute_force_computation(seed):
    rng = random.Random(seed)
    points = [(rng.uniform(-2, 30), rng.lognormvariate(-0.5, 1.2)) for _ in range(3000)]
    points += [(float(s), 7.0) for s in range(0, 30, 3)]  # on a second's edge: counts in that second
    points += [(4.5, 1.0)] * 20  # ties
    got = report.percentiles_per_second(points, (0.5, 0.99))
    for second in range(-2, 30):
        in_second = [v for t, v in points if second <= t < second + 1]
        if not in_second:
            assert second not in got
            continue
        assert got[second] == pytest.approx(list(numpy.percentile(in_second, [50, 99])), rel=1e-12), second
    assert set(got) <= set(range(-2, 30))


def test_counts_per_second_match_a_brute_force_count():
    rng = random.Random(7)
    times = [rng.uniform(-1, 20) for _ in range(5000)] + [3.0, 3.0, -0.0, 19.999999]
    got = report.counts_per_second(times)
    for second in range(-1, 20):
        assert got.get(second, 0) == sum(1 for t in times if second <= t < second + 1)
    assert sum(got.values()) == len(times)


# ---------------------------------------------------------------------------------------------
# Schedule -> fault windows


def test_the_official_schedule_over_the_full_60_s():
    assert windows(OFFICIAL, 60) == {
        ("default", "failing", 20, 40),  # 100 ms failing, then 2,000 ms failing: one failing window
        ("fallback", "failing", 30, 40),  # 1,000 ms and failing: failing wins over slow
        ("fallback", "slow", 50, 60),  # 5,000 ms, until the end of the run
    }


def test_a_short_run_sees_only_the_steps_before_its_end():
    assert windows(OFFICIAL, 25) == {("default", "failing", 20, 25)}
    assert windows(OFFICIAL, 15) == set()  # 100 ms from 10 s is a delay, not a slow processor
    assert windows(OFFICIAL, 20) == set()  # the step at 20 s never fires in a 20 s run


def test_slow_starts_at_the_threshold_and_steps_may_come_unsorted():
    schedule = {"steps": [
        step(30, (0, False), (999, False)),
        step(10, (1000, False), (0, True)),
        step(20, (999, False), (5000, False)),
        step(40, (0, True), (0, True)),
    ]}
    assert windows(schedule, 50) == {
        ("default", "slow", 10, 20), ("default", "failing", 40, 50),
        ("fallback", "failing", 10, 20), ("fallback", "slow", 20, 30), ("fallback", "failing", 40, 50),
    }
    # One millisecond lower, 999 ms is slow too: the neighbouring slow steps merge into one window.
    assert windows(schedule, 50, slow_ms=999) == {
        ("default", "slow", 10, 30), ("default", "failing", 40, 50),
        ("fallback", "failing", 10, 20), ("fallback", "slow", 20, 40), ("fallback", "failing", 40, 50),
    }


def test_calm_schedules_have_no_windows():
    assert report.fault_windows(json.loads((REPO / "bench/schedules/quiet.json").read_text()), 60) == []
    assert report.fault_windows({"steps": []}, 60) == []


# ---------------------------------------------------------------------------------------------
# k6 samples

K6_HEADER = ("metric_name,timestamp,metric_value,check,error,error_code,expected_response,group,method,name,"
             "proto,scenario,service,status,subproto,tls_version,url,extra_tags,metadata")
# As k6 1.1.0 writes them with K6_CSV_TIME_FORMAT=unix_micro (from a real run).
K6_ROWS = """\
http_reqs,1795707238782936,1.000000,,,,true,::setup,PUT,default PUT token,HTTP/1.1,,,204,,,default PUT token,,
http_req_duration,1795707238782936,0.352523,,,,true,::setup,PUT,default PUT token,HTTP/1.1,,,204,,,default PUT token,,
http_req_blocked,1795707238782936,0.010000,,,,true,::setup,PUT,default PUT token,HTTP/1.1,,,204,,,default PUT token,,
run_started_at_ms,1795707238787056,1795707238786.000000,,,,,,,,,audit,,,,,,,
http_req_duration,1795707238788867,0.928692,,,,true,,GET,GET /payments-summary,HTTP/1.1,audit,,200,,,GET /payments-summary,,
http_req_duration,1795707238788984,1.077723,,,,true,,GET,default GET summary,HTTP/1.1,audit,,200,,,default GET summary,,
audit_rounds,1795707238789232,1.000000,,,,,,,,,audit,,,,,,,
audit_inconsistencies,1795707238789235,0.000000,,,,,,,,,audit,,,,,,,
http_req_duration,1795707239790001,0.512000,,,,true,,POST,POST /payments,HTTP/1.1,payments,,202,,,POST /payments,,
http_req_duration,1795707240290001,1500.000000,,,,false,,POST,POST /payments,HTTP/1.1,payments,,0,request timeout,1050,POST /payments,,
data_sent,1795707240290001,210.000000,,,,,,,,,payments,,,,,,,
http_req_duration,1795707259784323,1.636377,,,,true,::teardown,GET,GET /payments-summary,HTTP/1.1,,,200,,,GET /payments-summary,,
"""


def write_raw(path: Path, rows: str = K6_ROWS) -> None:
    with gzip.open(path, "wt") as out:
        out.write(K6_HEADER + "\n" + rows)


def test_compacting_keeps_one_row_per_request_and_the_audit_verdicts(tmp_path):
    write_raw(tmp_path / "raw.csv.gz")
    assert report.compact_k6_csv(tmp_path / "raw.csv.gz", tmp_path / report.SAMPLES) == 7
    samples = report.load_samples(tmp_path / report.SAMPLES)
    assert [(r.scenario, r.name, r.status) for r in samples.requests] == [
        ("", "default PUT token", 204), ("audit", "GET /payments-summary", 200), ("audit", "default GET summary", 200),
        ("payments", "POST /payments", 202), ("payments", "POST /payments", 0), ("", "GET /payments-summary", 200)]
    timeout = samples.requests[4]
    assert timeout.end_s == pytest.approx(1795707240.290001) and timeout.duration_ms == 1500.0
    assert timeout.start_s == pytest.approx(1795707238.790001) and not timeout.ok and timeout.is_payment
    assert samples.requests[3].ok and not samples.requests[1].is_payment
    assert samples.audit_checks == [(pytest.approx(1795707238.789235), 0.0)]


def test_timestamps_in_k6s_default_whole_seconds_or_in_nanoseconds_are_read_as_such(tmp_path):
    rows = ("http_req_duration,1795707239,0.5,,,,true,,POST,POST /payments,HTTP/1.1,payments,,202,,,x,,\n"
            "http_req_duration,1795707239500000000,0.5,,,,true,,POST,POST /payments,HTTP/1.1,payments,,202,,,x,,\n")
    write_raw(tmp_path / "raw.csv.gz", rows)
    report.compact_k6_csv(tmp_path / "raw.csv.gz", tmp_path / report.SAMPLES)
    ends = [r.end_s for r in report.load_samples(tmp_path / report.SAMPLES).requests]
    assert ends == [1795707239.0, 1795707239.5]


def request(t: float, name: str = "POST /payments", scenario: str = "payments", status: int = 202,
            duration_ms: float = 1.0) -> report.Request:
    method = next((m for m in ("POST", "PUT") if m in name), "GET")
    return report.Request(T0 + t, duration_ms, scenario, method, name, status)


def test_audit_rounds_are_the_audit_scenarios_reads_of_our_summary_with_their_verdicts():
    samples = report.Samples(
        requests=[request(0.002, "GET /payments-summary", "audit", duration_ms=2.0),
                  request(0.003, "default GET summary", "audit"),
                  request(10.001, "GET /payments-summary", "audit"),
                  request(20.5, "GET /payments-summary", "audit", status=0, duration_ms=1500.0),
                  request(3.0),
                  request(61.0, "GET /payments-summary", "")],  # teardown: not an audit round
        audit_checks=[(T0 + 0.004, 0.0), (T0 + 10.002, 3.0)])  # the third round's verdict is missing
    rounds = report.audit_rounds(samples, T0)
    assert [round(r.at, 6) for r in rounds] == [0.0, 10.0, 19.0]
    assert [r.inconsistencies for r in rounds] == [0.0, 3.0, None]


def test_second_zero_comes_from_rinha_js_else_from_the_first_scenario_request():
    samples = report.Samples([request(-0.8, "default PUT token", ""), request(0.0015, duration_ms=1.0),
                              request(0.5, "GET /payments-summary", "audit", duration_ms=0.4)], [])
    assert report.run_start({"started_at_ms": 1_795_707_238_786}, samples) == T0
    assert report.run_start({}, samples) == pytest.approx(T0 + 0.0005)
    with pytest.raises(ValueError):
        report.run_start({}, report.Samples([request(-0.8, "default PUT token", "")], []))


# ---------------------------------------------------------------------------------------------
# The page


def write_run(folder: Path, *, worker: bool = True, duration_s: int = 25) -> dict:
    """A small synthetic run folder: what official.py leaves behind, with known numbers."""
    rng = random.Random(3)
    rows = []
    posts = 0
    for tenth in range(-5, duration_s * 10):
        t = tenth / 10
        if t >= 0:
            status = 0 if 21 <= t < 22 else 202
            rows.append(("http_req_duration", round((T0 + t) * 1e6), 1500.0 if status == 0 else rng.uniform(0.3, 4),
                         "payments", "POST", "POST /payments", status))
            posts += 1
        else:
            rows.append(("http_req_duration", round((T0 + t) * 1e6), 0.4, "", "PUT", "default PUT delay", 200))
    for at in (0, 10, 20):
        rows.append(("http_req_duration", round((T0 + at + 0.001) * 1e6), 1.0, "audit", "GET", "GET /payments-summary", 200))
        rows.append(("audit_inconsistencies", round((T0 + at + 0.002) * 1e6), 2 if at == 20 else 0, "audit", "", "", ""))
    rows.append(("http_req_duration", round((T0 + duration_s + 0.2) * 1e6), 1.0, "", "GET", "GET /payments-summary", 200))
    with gzip.open(folder / report.SAMPLES, "wt", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(report.SAMPLE_COLUMNS)
        writer.writerows(rows)
    rinha = {"started_at_ms": T0 * 1000, "duration_s": duration_s, "p99_ms": 3.9, "http_requests": len(rows) - 3}
    (folder / report.RESULTS).write_text(json.dumps({"rinha": rinha}))
    (folder / report.SCHEDULE).write_text(json.dumps(OFFICIAL))
    (folder / report.SCORECARD).write_text("== rinha scorecard: synthetic ==\nfinal score    1,234.56\n")
    if worker:
        with (folder / report.WORKER_METRICS).open("w") as out:
            for i in range(-2, duration_s * 2 + 2):
                line = {"t": i / 2 + 1, "unix": T0 + i / 2, series_key("rinha_worker_queue_payments"): max(0, 40 - abs(i - 44)),
                        report.in_flight("default"): i % 5, report.in_flight("fallback"): 0,
                        report.ledger("default"): 5 * max(i, 0), report.ledger("fallback"): 0}
                out.write(json.dumps(line) + "\n")
            out.write(json.dumps({"t": 30.0, "unix": T0 + 29.0, "error": "URLError: refused"}) + "\n")
    return {"posts": posts}


def images(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', page)]


def test_the_page_is_one_self_contained_file_with_the_scorecard_and_four_charts(tmp_path):
    write_run(tmp_path)
    made = report.write_report(tmp_path)
    assert made.warnings == []
    assert made.path == tmp_path / report.REPORT
    page = made.path.read_text()
    pngs = images(page)
    assert len(pngs) == 4 and all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in pngs)
    # Nothing to fetch: every src is inline, no stylesheet or script from elsewhere.
    assert re.findall(r'src="(?!data:)', page) == [] and "<link" not in page and "<script" not in page
    assert page.index("final score    1,234.56") < page.index("<img")
    assert "audit rounds at 0.0 s (0 inconsistent), 10.0 s (0 inconsistent), 20.0 s (2 inconsistent)" in page
    assert "1 failed reads" in page and "no worker metrics" not in page
    assert "20 s</td><td>100 ms <b>failing</b>" in page and "after the end: not applied" in page


def test_without_worker_metrics_the_worker_charts_say_so_and_nothing_is_made_up(tmp_path):
    write_run(tmp_path, worker=False)
    made = report.write_report(tmp_path)
    assert [w for w in made.warnings if "no worker metrics" in w]
    page = made.path.read_text()
    assert len(images(page)) == 4
    assert "<b>no worker metrics</b>" in page


def test_a_chart_that_fails_leaves_a_notice_and_a_warning_not_a_failed_report(tmp_path, monkeypatch):
    write_run(tmp_path)

    def broken(ax, run):
        raise RuntimeError("boom")

    monkeypatch.setattr(report, "CHARTS", (*report.CHARTS[:2], ("Worker queue", "", broken), report.CHARTS[3]))
    made = report.write_report(tmp_path)
    assert made.warnings == ["chart 'Worker queue' failed: RuntimeError: boom"]
    page = made.path.read_text()
    assert len(images(page)) == 3 and "This chart could not be drawn: RuntimeError: boom" in page


def test_the_run_model_puts_every_source_on_one_clock(tmp_path):
    facts = write_run(tmp_path)
    run = report.load_run(tmp_path)
    assert run.t0 == pytest.approx(T0)
    assert sum(1 for r in run.requests if r.is_payment) == facts["posts"]
    assert [round(r.at, 3) for r in run.rounds] == [0.0, 10.0, 20.0]
    assert run.teardown_at == pytest.approx(25.199, abs=1e-3)
    assert {(w.processor, w.kind, w.start, w.end) for w in run.windows} == {("default", "failing", 20, 25)}
    ts, queue = report.worker_series(run.worker, report.QUEUE, run.t0)
    assert ts[0] == pytest.approx(-1.0) and max(queue) == 40 and ts[queue.index(40)] == pytest.approx(22.0)
    assert run.worker_errors == 1
    assert run.xlim[0] == pytest.approx(-1.5) and run.xlim[1] > run.teardown_at + 0.4


def test_the_command_line_regenerates_the_report(tmp_path, capsys):
    write_run(tmp_path)
    assert report.main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / report.REPORT)
    assert report.main([]) == 2


def test_official_py_turns_a_broken_folder_into_a_warning_not_an_exception(tmp_path, capsys):
    assert official.write_run_report(tmp_path) is None
    assert "WARNING: no run report" in capsys.readouterr().err


def test_official_py_compacts_k6s_output_then_writes_the_report(tmp_path):
    write_run(tmp_path)
    (tmp_path / report.SAMPLES).unlink()
    write_raw(tmp_path / official.K6_RAW)
    (tmp_path / report.RESULTS).write_text(json.dumps({"rinha": {"started_at_ms": 1795707238786, "duration_s": 20}}))
    assert official.write_run_report(tmp_path) == tmp_path / report.REPORT
    assert not (tmp_path / official.K6_RAW).exists()
    assert len(report.load_samples(tmp_path / report.SAMPLES).requests) == 6


# ---------------------------------------------------------------------------------------------
# official.py's sampler of the worker's /metrics


# What a worker's /metrics looks like mid-run (format 0.0.4), with the usual HELP/TYPE lines.
WORKER_SCRAPE = """\
# HELP rinha_worker_queue_payments Payments waiting in the worker's queue.
# TYPE rinha_worker_queue_payments gauge
rinha_worker_queue_payments 1834
# HELP rinha_worker_in_flight_calls Calls to a processor not yet answered.
# TYPE rinha_worker_in_flight_calls gauge
rinha_worker_in_flight_calls{processor="default"} 8
rinha_worker_in_flight_calls{processor="fallback"} 0
# HELP rinha_worker_ledger_payments Payments recorded in the ledger.
# TYPE rinha_worker_ledger_payments gauge
rinha_worker_ledger_payments{processor="default"} 10423
rinha_worker_ledger_payments{processor="fallback"} 12
# HELP rinha_worker_calls_total Calls to the processors by outcome.
# TYPE rinha_worker_calls_total counter
rinha_worker_calls_total{processor="default",outcome="ok"} 10423
rinha_worker_calls_total{processor="default",outcome="failed"} 2.0e+03
rinha_worker_calls_total{outcome="timeout",processor="fallback"} 3

"""


def test_a_series_key_is_the_same_whatever_the_label_order_and_escapes_like_prometheus():
    assert series_key("m", {"b": "2", "a": "1"}) == series_key("m", {"a": "1", "b": "2"}) == 'm{a="1",b="2"}'
    assert series_key("m", {"q": 'say "hi"\\\n'}) == 'm{q="say \\"hi\\"\\\\\\n"}'
    assert series_key("m") == series_key("m", {}) == "m"


class Metrics(http.server.BaseHTTPRequestHandler):
    body = WORKER_SCRAPE + 'process_open_fds 12\nrinha_worker_call_seconds_bucket{le="0.005",processor="default"} 9\n'

    def do_GET(self):
        payload = self.body.encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain; version=0.0.4")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def metrics_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def url_of(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/metrics"


def test_a_sample_holds_every_rinha_series_and_both_clocks(metrics_server, tmp_path):
    sampler = WorkerSampler(url_of(metrics_server), tmp_path / "m.jsonl", started=time.monotonic())
    line = sampler.sample()
    assert 0 <= line["t"] < 5 and abs(line["unix"] - time.time()) < 5
    assert line[report.QUEUE] == 1834
    assert line[report.ledger("default")] == 10423 and line[report.in_flight("default")] == 8
    assert line['rinha_worker_calls_total{outcome="failed",processor="default"}'] == 2000
    assert "error" not in line and not [key for key in line if "process_open_fds" in key or "_bucket" in key]


def test_a_failed_read_is_a_line_with_the_error(metrics_server, tmp_path, monkeypatch):
    sampler = WorkerSampler(url_of(metrics_server), tmp_path / "m.jsonl", started=0.0)
    monkeypatch.setattr(Metrics, "body", "rinha_worker_queue_payments twelve\n")
    assert "ValueError" in sampler.sample()["error"]
    closed = WorkerSampler(f"http://127.0.0.1:{free_port()}/metrics", tmp_path / "m.jsonl", 0.0)
    line = closed.sample()
    assert set(line) == {"t", "unix", "error"} and "refused" in line["error"].lower()


def test_the_sampler_thread_writes_json_lines_until_stopped(metrics_server, tmp_path):
    path = tmp_path / "m.jsonl"
    sampler = WorkerSampler(url_of(metrics_server), path, started=time.monotonic(), interval_s=60)
    sampler.start()
    sampler.stop()  # the first read happens at once; stop() cuts the 60 s wait short for a last one
    assert not sampler.is_alive()
    lines = [json.loads(text) for text in path.read_text().splitlines()]
    assert len(lines) == 2 and all(line[report.QUEUE] == 1834 for line in lines)
    assert lines[0]["t"] <= lines[1]["t"] < 60


# ---------------------------------------------------------------------------------------------
# The payment wait in the scorecard: the worker's histogram, read by the sampler


def wait_page(observations) -> str:
    """The worker's own /metrics rendering of a wait histogram that saw `observations`."""
    registry = Registry()
    child = registry.histogram(report.WAIT, "wait", WAIT_BUCKETS).labels()
    for seconds in observations:
        child.observe(seconds)
    return registry.render().decode()


def test_the_wait_quantiles_come_from_the_histogram_the_worker_renders(metrics_server, tmp_path, monkeypatch):
    rng = random.Random(14)
    waits = [rng.expovariate(1 / 0.2) for _ in range(5000)] + [rng.uniform(12, 18) for _ in range(100)]
    monkeypatch.setattr(Metrics, "body", wait_page([]))
    sampler = WorkerSampler(url_of(metrics_server), tmp_path / "m.jsonl", started=time.monotonic())
    empty = sampler.sample()
    assert report.payment_wait([empty]) is None
    monkeypatch.setattr(Metrics, "body", wait_page(waits))
    full = sampler.sample()
    level = report.payment_wait([empty, full])
    exact = sorted(waits)
    bounds = (0, *WAIT_BUCKETS)

    def bucket_of(seconds):
        return next((lo, hi) for lo, hi in zip(bounds, bounds[1:]) if lo < seconds <= hi)

    assert level.payments == len(waits) and not level.p99_beyond
    # Interpolated within the bucket that holds the exact quantile (k6-style on the raw waits).
    for estimate, q in ((level.p50_s, 0.5), (level.p99_s, 0.99)):
        lo, hi = bucket_of(report.percentile(exact, q))
        assert lo <= estimate <= hi, (q, estimate, lo, hi)
    assert 10 <= level.p99_s <= 20 and 0.1 <= level.p50_s <= 0.25
    assert "p50 0.1" in report.wait_line(level) or "p50 0.2" in report.wait_line(level)


def test_the_wait_counts_only_what_the_run_added_and_survives_a_worker_restart():
    def line(observations):  # a sampler line, as it is written and read back
        families = text_string_to_metric_families(wait_page(observations))
        return json.loads(json.dumps({"t": 0, "unix": 0, **{
            series_key(s.name, s.labels): s.value for family in families for s in family.samples}}))
    before = line([30.0] * 50)           # 50 slow payments before the run: not this run's
    mid = line([30.0] * 50 + [0.02] * 100)
    restarted = line([0.02] * 10)        # the worker restarted: its histogram began again
    end = line([0.02] * 10 + [70.0] * 5)
    level = report.payment_wait([before, mid, restarted, end])
    assert level.payments == 115
    assert 0.01 < level.p50_s <= 0.025
    assert level.p99_beyond and level.p99_s == 60  # 5 of 115 beyond the last bound: at least 60 s
    assert "p99 > 60 s" in report.wait_line(level)
    assert report.payment_wait([before, before]) is None  # nothing stored during the run


async def test_the_scorecards_wait_moves_with_a_real_processors_delay(client, tmp_path):
    """A real stack: the wait a slow default imposes shows in the quantiles read from the worker."""
    sampler = WorkerSampler(client.stack.worker_metrics_url, tmp_path / "m.jsonl", started=time.monotonic())
    loop = asyncio.get_running_loop()
    first = await loop.run_in_executor(None, sampler.sample)
    await client.processor_admin("default", "delay", 300)
    try:
        ids = [new_id() for _ in range(30)]
        assert set(await asyncio.gather(*(client.pay(cid) for cid in ids))) == {202}
        await eventually(lambda: _recorded(client, 30), timeout=20)
    finally:
        await client.processor_admin("default", "delay", 0)
    slow = await loop.run_in_executor(None, sampler.sample)
    level = report.payment_wait([first, slow])
    assert level.payments == 30
    assert 0.3 <= level.p50_s <= 0.5 and level.p99_s <= 1.0 and not level.p99_beyond
    ids = [new_id() for _ in range(30)]
    assert set(await asyncio.gather(*(client.pay(cid) for cid in ids))) == {202}
    await eventually(lambda: _recorded(client, 60), timeout=20)
    fast = await loop.run_in_executor(None, sampler.sample)
    level = report.payment_wait([slow, fast])
    assert level.payments == 30 and level.p99_s < 0.25


async def _recorded(client, n: int) -> bool:
    return await client.recorded() == n
