"""The metrics module, the HTTP protocol's `answered` hook and the JSON log lines, without a stack.

The exposition is read back with prometheus_client's parser (conftest.MetricsPage).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import re
import sys
import time
from pathlib import Path

import orjson
import pytest
from conftest import MetricsPage
from fakes import FakeTransport

from rinha.api.metrics import PAYMENT_BUCKETS, ApiMetrics
from rinha.api.routes import ACCEPTED, ROUTES
from rinha.http import responses
from rinha.http.protocol import HttpProtocol, Limits, ServerState
from rinha.logs import JsonFormatter
from rinha.metrics import Registry

ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def render(registry: Registry) -> MetricsPage:
    return MetricsPage(registry.render().decode())


def own(page: MetricsPage) -> dict[str, str]:
    """The families a test registered: every registry also holds the process's (runtime_metrics)."""
    return {name: kind for name, kind in page.types.items() if not name.startswith(("process_", "python_"))}


# The exposition


def test_counters_gauges_and_help_type_lines_render_and_parse_back():
    registry = Registry()
    plain = registry.counter("jobs_total", "Jobs done.")
    by_kind = registry.counter("errors_total", "Errors by kind.", ("kind", "where"))
    held = {"n": 3}
    registry.gauge("held", "Held now.", fn=lambda: held["n"])
    level = registry.gauge("level", "A level.", ("tank",))
    plain.labels().value += 2
    timeout = by_kind.labels("timeout", "db")
    timeout.value += 1
    timeout.value += 1
    level.labels("a").value = 1.5
    level.labels("b").fn = lambda: math.nan
    held["n"] = 7  # read at scrape time, not at registration
    out = render(registry)
    assert own(out) == {"jobs": "counter", "errors": "counter", "held": "gauge", "level": "gauge"}
    assert out.help["errors"] == "Errors by kind."
    assert out.value("jobs_total") == 2
    assert out.value("errors_total", kind="timeout", where="db") == 2
    assert out.value("held") == 7
    assert out.value("level", tank="a") == 1.5
    assert math.isnan(out.value("level", tank="b"))


def test_an_unlabelled_metric_shows_zero_and_a_labelled_one_only_its_children():
    registry = Registry()
    registry.counter("a_total", "A.")
    registry.counter("b_total", "B.", ("x",))
    text = registry.render().decode()
    assert "a_total 0\n" in text
    assert "# TYPE b_total counter\n" in text and "b_total{" not in text
    assert MetricsPage(text).value("a_total") == 0


def test_a_histogram_is_cumulative_with_inf_sum_and_count_and_a_bound_is_inclusive():
    registry = Registry()
    family = registry.histogram("wait_seconds", "Waits.", (0.01, 0.001, 0.1, math.inf), ("queue",))
    fast = family.labels("fast")
    for value in (0.0005, 0.001, 0.002, 0.01, 0.05, 7.0):
        fast.observe(value)
    family.labels("idle")
    out = render(registry)
    buckets, total, count = out.histogram("wait_seconds", queue="fast")
    # 0.001 falls in le=0.001 (less or equal), and 7 only in +Inf.
    assert buckets == {0.001: 2, 0.01: 4, 0.1: 5, math.inf: 6}
    assert count == 6 and total == pytest.approx(7.0635)
    assert out.histogram("wait_seconds", queue="idle") == ({0.001: 0, 0.01: 0, 0.1: 0, math.inf: 0}, 0, 0)


def test_label_values_and_help_text_are_escaped():
    registry = Registry()
    family = registry.counter("odd_total", 'Help with a \\ backslash\nand a newline.', ("path",))
    family.labels('a "quoted" \\ path\nwith newline').value += 1
    text = registry.render().decode()
    assert "# HELP odd_total Help with a \\\\ backslash\\nand a newline.\n" in text
    out = MetricsPage(text)
    assert out.value("odd_total", path='a "quoted" \\ path\nwith newline') == 1


def test_misuse_is_refused():
    registry = Registry()
    family = registry.counter("x_total", "X.", ("a",))
    with pytest.raises(ValueError):
        family.labels("1", "2")
    with pytest.raises(ValueError):
        registry.gauge("x_total", "again")


@pytest.mark.parametrize("text", [
    "# TYPE x_total counter\nx_total 1",                             # no final newline
    "x_total 1\n",                                                   # no TYPE
    "# TYPE x gauge\nx 1\nx 2\n",                                    # a series twice
    "# TYPE x gauge\nx 1\n# TYPE y gauge\ny 1\n# TYPE x gauge\nx 2\n",  # a family twice
    "# TYPE x gauge\nx{a=1} 1\n",                                    # malformed (the parser's own check)
])
def test_the_page_reader_refuses_what_the_tests_must_not_misread(text):
    with pytest.raises((AssertionError, ValueError)):
        MetricsPage(text)


def test_every_registry_serves_the_standard_process_and_python_metrics():
    out = render(Registry())
    assert {name for name in out.types if name.startswith(("process_", "python_"))} == {
        "process_cpu_seconds", "process_virtual_memory_bytes", "process_resident_memory_bytes",
        "process_start_time_seconds", "process_open_fds", "process_max_fds", "python_gc_objects_collected",
        "python_gc_objects_uncollectable", "python_gc_collections", "python_info"}
    assert out.types["process_cpu_seconds"] == "counter" and out.types["process_resident_memory_bytes"] == "gauge"
    assert 0 < out.value("process_open_fds") <= out.value("process_max_fds")
    assert time.time() - 24 * 3600 < out.value("process_start_time_seconds") <= time.time()  # this test run's
    version = sys.version_info
    assert out.value("python_info", implementation="CPython", major=str(version.major), minor=str(version.minor),
                     patchlevel=str(version.micro), version=".".join(map(str, version[:3]))) == 1
    before = out.value("python_gc_collections_total", generation="0")
    gc.collect(0)
    assert render(Registry()).value("python_gc_collections_total", generation="0") > before  # read at scrape time


# The HTTP protocol's hook


class CountingApp:
    """Answers /payments with ACCEPTED, /later with a future; records every `answered` call
    together with what the transport had been given at that moment."""

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, bytes, float, int]] = []
        self.transport: FakeTransport | None = None
        self.later: asyncio.Future | None = None

    def handle(self, method, path, query, body, headers):
        if path == b"/later":
            self.later = asyncio.get_running_loop().create_future()
            return self.later
        return ACCEPTED if path == b"/payments" else responses.error(404, "no")

    def answered(self, path: bytes, answer: bytes, began: float) -> None:
        self.seen.append((path, answer, began, len(self.transport.writes)))


def connected(app) -> tuple[HttpProtocol, FakeTransport]:
    protocol = HttpProtocol(app, Limits(max_body_bytes=64), ServerState())
    transport = FakeTransport()
    app.transport = transport
    protocol.connection_made(transport)
    return protocol, transport


def post(path: bytes, body: bytes = b"{}") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (path, len(body), body)


async def test_the_hook_sees_each_answer_after_it_is_written_with_the_time_its_request_began():
    app = CountingApp()
    protocol, transport = connected(app)
    before = time.perf_counter()
    protocol.data_received(post(b"/payments?x=1"))
    protocol.data_received(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [(path, answer, writes) for path, answer, _, writes in app.seen] == [
        (b"/payments", ACCEPTED, 1), (b"/nowhere", transport.writes[1], 2)]
    assert all(began >= before for _, _, began, _ in app.seen)
    protocol.connection_lost(None)


async def test_the_hook_sees_an_answer_that_waited_once_it_is_ready_and_a_refusal_too():
    app = CountingApp()
    protocol, transport = connected(app)
    protocol.data_received(b"GET /later HTTP/1.1\r\nHost: x\r\n\r\n")
    assert app.seen == []
    app.later.set_result(ACCEPTED)
    await transport.until(lambda: transport.writes)
    assert [(path, answer) for path, answer, _, _ in app.seen] == [(b"/later", ACCEPTED)]
    protocol.data_received(post(b"/payments", b"x" * 100))  # over max_body_bytes: 413 and close
    assert app.seen[-1][:2] == (b"/payments", responses.BODY_TOO_LARGE_CLOSE)
    assert transport.closed


async def test_an_app_without_the_hook_takes_no_clock_reading():
    class Plain:
        def handle(self, method, path, query, body, headers):
            return ACCEPTED

    protocol, transport = connected(Plain())
    protocol.data_received(post(b"/payments"))
    assert transport.writes == [ACCEPTED]
    assert protocol.answered is None and protocol.began == 0.0
    protocol.connection_lost(None)


class _Link:
    connected = True
    reconnects = 4


class _Buffer:
    held = 12


def test_api_metrics_count_the_hot_answer_by_identity_and_others_by_label():
    metrics = ApiMetrics(_Buffer(), _Link(), routes=ROUTES, accepted=ACCEPTED)
    began = time.perf_counter()
    metrics.answered(b"/payments", ACCEPTED, began)
    metrics.answered(b"/payments", ACCEPTED, began)
    metrics.answered(b"/payments", responses.error(422, "bad"), began)
    metrics.answered(b"/payments-summary", responses.json(200, {}), began)
    metrics.answered(b"/wp-admin", responses.error(404, "no"), began)
    metrics.answered(b"", responses.BAD_REQUEST_CLOSE, began)
    page = metrics.page()
    assert page.startswith(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\n")
    out = MetricsPage(page.split(b"\r\n\r\n", 1)[1].decode())
    assert out.values("rinha_api_requests_total") == {
        (("route", "/payments"), ("status", "202")): 2, (("route", "/payments"), ("status", "422")): 1,
        (("route", "/payments-summary"), ("status", "200")): 1, (("route", "other"), ("status", "404")): 1,
        (("route", "other"), ("status", "400")): 1}
    buckets, _, count = out.histogram("rinha_api_payment_seconds")
    assert count == 3 and sorted(buckets) == [*PAYMENT_BUCKETS, math.inf]
    assert out.value("rinha_api_buffer_payments") == 12
    assert out.value("rinha_api_link_up") == 1
    assert out.value("rinha_api_link_reconnects_total") == 4


# Log lines


def test_a_log_record_is_one_json_line_with_the_standard_keys_and_its_event_fields():
    formatter = JsonFormatter({"role": "worker"})
    record = logging.LogRecord("rinha.worker.router", logging.WARNING, __file__, 1, "circuit %s", ("opened",), None)
    record.__dict__.update({"event": "circuit_opened", "processor": "default", "path": Path("/x")})
    line = formatter.format(record)
    assert "\n" not in line
    doc = orjson.loads(line)
    assert ISO_MS.fullmatch(doc.pop("ts"))
    assert doc == {"level": "WARNING", "logger": "rinha.worker.router", "msg": "circuit opened", "role": "worker",
                   "event": "circuit_opened", "processor": "default", "path": "/x"}


def test_a_traceback_goes_into_one_line_too():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    doc = orjson.loads(JsonFormatter().format(record))
    assert doc["msg"] == "failed" and "RuntimeError: boom" in doc["exc"]
