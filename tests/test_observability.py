"""Metrics and logs of a real stack: they move with the payments, the faults and the link.

The API nodes' `/metrics` is read over their metrics sockets, the worker's over HTTP; every page
goes through conftest.MetricsPage (prometheus_client's parser). Log lines are read from the stack's output.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson
from conftest import (LINK_SECRET, MetricsPage, StackClient, answers_200, eventually, free_port, new_id, node_env,
                      running_stack)

from rinha.config import WorkerConfig
from rinha.worker.server import serve as serve_worker

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
PAID = {"route": "/payments", "status": "202"}


async def scrape(session: aiohttp.ClientSession, url: str) -> MetricsPage:
    async with session.get(url) as response:
        assert response.status == 200, await response.text()
        assert response.headers["content-type"] == CONTENT_TYPE
        return MetricsPage(await response.text())


async def api_metrics(stack, n: int) -> MetricsPage:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=stack.metrics_socket_path(n))) as session:
        return await scrape(session, "http://api/metrics")


async def both_nodes(stack) -> list[MetricsPage]:
    return [await api_metrics(stack, 1), await api_metrics(stack, 2)]


def events(lines: list[str], process: str) -> list[dict]:
    """The JSON log lines of one process of the stack; any line of ours that is not JSON fails."""
    out = []
    for line in lines:
        if line.startswith(f"[{process}] "):
            doc = orjson.loads(line[len(process) + 3:])
            assert {"ts", "level", "logger", "msg"} <= doc.keys(), line
            assert ISO_MS.fullmatch(doc["ts"]), line
            out.append(doc)
    return out


def named(lines: list[str], process: str, event: str, **fields) -> list[dict]:
    return [doc for doc in events(lines, process)
            if doc.get("event") == event and all(doc.get(k) == v for k, v in fields.items())]


# The shared stack: counters equal what was posted


async def test_counters_gauges_and_histograms_equal_what_was_posted_through_nginx(client: StackClient):
    stack, session = client.stack, client.session
    api_before = await both_nodes(stack)
    worker_before = await scrape(session, stack.worker_metrics_url)
    ids = [new_id() for _ in range(40)]
    assert set(await asyncio.gather(*(client.pay(cid) for cid in ids))) == {202}
    assert await client.pay(ids[0]) == 202  # a repeat: the node accepts it, the worker ignores it

    async def all_recorded():
        return await client.recorded() == 40

    await eventually(all_recorded, timeout=20)

    async def duplicate_seen():
        now = await scrape(session, stack.worker_metrics_url)
        return now if now.value("rinha_worker_duplicates_total") > worker_before.value("rinha_worker_duplicates_total") else None

    worker = await eventually(duplicate_seen)
    api_after = await both_nodes(stack)

    def delta(name: str, **labels) -> float:
        return sum(after.value(name, **labels) - before.value(name, **labels)
                   for before, after in zip(api_before, api_after))

    assert delta("rinha_api_requests_total", **PAID) == 41
    assert delta("rinha_api_payment_seconds_count") == 41
    assert delta("rinha_api_payment_seconds_bucket", le="+Inf") == 41
    assert 0 < delta("rinha_api_payment_seconds_sum") < 41 * 0.1
    assert all(node.value("rinha_api_link_up") == 1 for node in api_after)
    summaries = {(("route", "/payments-summary"), ("status", "200"))}
    assert sum(v for node in api_after for k, v in node.values("rinha_api_requests_total").items() if k in summaries) >= 1

    def worker_delta(name: str, **labels) -> float:
        return worker.value(name, **labels) - worker_before.value(name, **labels)

    assert worker_delta("rinha_worker_calls_total", processor="default", outcome="stored") == 40
    assert worker_delta("rinha_worker_call_seconds_count", processor="default") == 40
    assert worker_delta("rinha_worker_accepted_total") == 40
    assert worker_delta("rinha_worker_duplicates_total") == 1
    assert worker_delta("rinha_worker_fallback_decisions_total") == 0
    # The ledger was purged by the `client` fixture: the gauges hold this test's payments only.
    assert worker.value("rinha_worker_ledger_payments", processor="default") == 40
    assert worker.value("rinha_worker_ledger_payments", processor="fallback") == 0
    assert worker.value("rinha_worker_queue_payments") == 0
    assert worker.value("rinha_worker_in_flight_calls", processor="default") == 0
    assert worker.value("rinha_worker_circuit_state", processor="default") == 0

    async def all_acknowledged():
        return sum(node.value("rinha_api_buffer_payments") for node in await both_nodes(stack)) == 0

    await eventually(all_acknowledged)


async def test_metrics_are_served_on_the_nodes_own_listeners_only_on_get_metrics(client: StackClient):
    stack, session = client.stack, client.session
    page = await api_metrics(stack, 1)
    assert page.types["rinha_api_payment_seconds"] == "histogram"
    assert page.types["rinha_api_requests"] == "counter"
    assert set(page.help) == set(page.types)
    worker_base = stack.worker_metrics_url.removesuffix("/metrics")
    async with session.get(f"{worker_base}/nowhere") as response:
        assert response.status == 404
    async with session.post(stack.worker_metrics_url) as response:
        assert response.status == 405
    async with (aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=stack.metrics_socket_path(2))) as own,
                own.post("http://api/metrics") as response):
        assert response.status == 405


def proc_of(pid: int) -> dict[str, float]:
    """What the kernel says of a process, read by the test itself: /proc/<pid>/status, stat, fd, limits."""
    proc = Path(f"/proc/{pid}")
    status = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines())
    stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
    max_open = next(line.split()[3] for line in (proc / "limits").read_text().splitlines()
                    if line.startswith("Max open files"))
    return {"rss_bytes": int(status["VmRSS"].split()[0]) * 1024,
            "cpu_s": (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK"),
            "open_fds": len(os.listdir(proc / "fd")), "max_fds": float(max_open)}


async def test_every_node_serves_the_standard_process_metrics_and_they_agree_with_proc(client: StackClient):
    stack, session = client.stack, client.session
    assert set(await asyncio.gather(*(client.pay(new_id()) for _ in range(20)))) == {202}  # some work to count
    pages = {"api1": lambda: api_metrics(stack, 1), "api2": lambda: api_metrics(stack, 2),
             "worker": lambda: scrape(session, stack.worker_metrics_url)}
    for name, read in pages.items():
        page = await read()
        kernel = proc_of(stack.pids()[name])
        rss = page.value("process_resident_memory_bytes")
        assert abs(rss - kernel["rss_bytes"]) <= 0.10 * kernel["rss_bytes"], (name, rss, kernel)
        cpu = page.value("process_cpu_seconds_total")
        assert 0 < cpu <= kernel["cpu_s"] < cpu + 0.5, (name, cpu, kernel)
        assert abs(page.value("process_open_fds") - kernel["open_fds"]) <= 5, (name, kernel)
        assert page.value("process_max_fds") == kernel["max_fds"], name
        assert page.value("process_virtual_memory_bytes") > rss
        assert time.time() - 3600 < page.value("process_start_time_seconds") < time.time(), name
        assert page.types["python_gc_collections"] == "counter"
        assert {labels for labels in page.values("python_gc_objects_collected_total")} == {
            (("generation", str(g)),) for g in range(3)}
        assert sum(page.values("python_info").values()) == 1


# Stacks of their own: these break things


async def test_a_failing_default_moves_the_circuit_and_fallback_metrics_and_each_change_is_logged():
    lines: list[str] = []
    # Fallback after 0.5 s out rather than 25 s, so the policy's switch happens within the test.
    with running_stack(log_level="INFO", extra_env={"RINHA_WORKER_FALLBACK_AFTER_S": "0.5"}, lines=lines) as stack:
        async with aiohttp.ClientSession() as session:
            client = StackClient(stack, session)
            await client.purge()
            assert (await scrape(session, stack.worker_metrics_url)).value(
                "rinha_worker_circuit_state", processor="default") == 0
            await client.processor_admin("default", "failure", True)
            ids = [new_id() for _ in range(20)]
            assert set(await asyncio.gather(*(client.pay(cid) for cid in ids))) == {202}

            async def all_recorded(count: int):
                return await client.recorded() == count

            await eventually(lambda: all_recorded(20), timeout=20)
            worker = await scrape(session, stack.worker_metrics_url)
            assert worker.value("rinha_worker_circuit_state", processor="default") in (1, 2)
            assert worker.value("rinha_worker_calls_total", processor="default", outcome="failed") >= 3
            assert worker.value("rinha_worker_calls_total", processor="default", outcome="stored") == 0
            assert worker.value("rinha_worker_calls_total", processor="fallback", outcome="stored") == 20
            assert worker.value("rinha_worker_fallback_decisions_total") == 20
            assert worker.value("rinha_worker_ledger_payments", processor="fallback") == 20
            assert worker.value("rinha_worker_ledger_payments", processor="default") == 0

            async def health_says_failing():
                page = await scrape(session, stack.worker_metrics_url)
                return page.value("rinha_worker_processor_failing", processor="default") == 1

            await eventually(health_says_failing, timeout=15)  # the first poll comes 5.1 s after start

            await client.processor_admin("default", "failure", False)
            assert set(await asyncio.gather(*(client.pay(new_id()) for _ in range(5)))) == {202}
            await eventually(lambda: all_recorded(25), timeout=20)

            async def circuit_closed():
                page = await scrape(session, stack.worker_metrics_url)
                return page.value("rinha_worker_circuit_state", processor="default") == 0

            await eventually(circuit_closed)
            # Closed: the next payments are the policy's return to default.
            assert set(await asyncio.gather(*(client.pay(new_id()) for _ in range(5)))) == {202}
            await eventually(lambda: all_recorded(30), timeout=20)
            assert (await scrape(session, stack.worker_metrics_url)).value(
                "rinha_worker_calls_total", processor="default", outcome="stored") >= 5

    for event in ("circuit_opened", "circuit_half_open", "processor_down", "circuit_closed"):
        assert len(named(lines, "worker", event, processor="default")) == 1, event
    assert not named(lines, "worker", "circuit_opened", processor="fallback")
    # One line when the policy turned to fallback and one when it came back, not one per payment.
    assert len(named(lines, "worker", "fallback_in_use")) == 1
    assert len(named(lines, "worker", "fallback_ended")) == 1
    opened = named(lines, "worker", "circuit_opened")[0]
    assert opened["level"] == "WARNING" and opened["logger"] == "rinha.worker.router"
    # Quiet: 30 payments, and no line for any of them.
    for process in ("api1", "api2", "worker"):
        assert len(events(lines, process)) < 30, process


async def ask_both_nodes(stack) -> None:
    """A summary through each node's own socket: each sends a frame on its link."""
    for n in (1, 2):
        async with (aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=stack.socket_path(n))) as session,
                    session.get("http://api/payments-summary") as response):
            assert response.status == 200


async def test_the_link_going_down_and_back_shows_in_metrics_and_logs():
    lines: list[str] = []
    with running_stack(log_level="INFO", lines=lines) as stack:
        async with aiohttp.ClientSession() as session:
            client = StackClient(stack, session)
            await ask_both_nodes(stack)
            stack.stop_child("worker")

            async def both_links(up: int):
                return all(node.value("rinha_api_link_up") == up for node in await both_nodes(stack))

            await eventually(lambda: both_links(0))
            ids = [new_id() for _ in range(10)]
            assert set(await asyncio.gather(*(client.pay(cid) for cid in ids))) == {202}
            held = sum(node.value("rinha_api_buffer_payments") for node in await both_nodes(stack))
            assert held == 10

            stack.restart("worker")
            await eventually(lambda: both_links(1))

            async def delivered():
                nodes = await both_nodes(stack)
                return sum(node.value("rinha_api_buffer_payments") for node in nodes) == 0

            await eventually(delivered)
            for node in await both_nodes(stack):
                assert node.value("rinha_api_link_reconnects_total") == 1
            worker = await scrape(session, stack.worker_metrics_url)
            assert worker.value("rinha_worker_accepted_total") == 10  # counted since its restart
            await ask_both_nodes(stack)
            stack.stop_child("api1")

            async def api1_gone():
                return named(lines, "worker", "node_disconnected")

            await eventually(api1_gone)

    for node in ("api1", "api2"):
        assert len(named(lines, node, "link_up")) == 1, node
        assert len(named(lines, node, "link_lost")) == 1, node
        assert len(named(lines, node, "link_restored")) == 1, node
        assert events(lines, node)[0]["node"] == node
    assert len(named(lines, "worker", "worker_started")) == 2
    restored = named(lines, "worker", "worker_restored")
    assert [doc["owed"] for doc in restored] == [0, 0]  # a graceful stop owed nothing
    # A node is logged once it speaks (health probes connect too, and say nothing): both did before
    # the worker stopped, and both again after its restart.
    assert len(named(lines, "worker", "node_connected")) == 4


# Settings


async def test_an_api_node_with_metrics_off_answers_404_on_metrics_and_still_takes_payments():
    folder = tempfile.mkdtemp(prefix="rinha-test-")
    port = free_port()
    node = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rinha", "api", "--socket", f"{folder}/a.sock", "--port", str(port),
        "--worker", f"127.0.0.1:{free_port()}", "--metrics", "off", "--metrics-listen", f"{folder}/m.sock",
        env=node_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as session:
            await eventually(lambda: answers_200(session, f"http://127.0.0.1:{port}/healthcheck"))
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert response.status == 404
            assert not os.path.exists(f"{folder}/m.sock")  # nothing counted, so nothing served
            async with session.post(f"http://127.0.0.1:{port}/payments",
                                    json={"correlationId": new_id(), "amount": 1}) as response:
                assert response.status == 202
    finally:
        node.terminate()
        await asyncio.wait_for(node.wait(), 10)
        shutil.rmtree(folder, ignore_errors=True)
    bad = await asyncio.create_subprocess_exec(sys.executable, "-m", "rinha", "api", "--metrics", "maybe",
                                               env=node_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, stderr = await bad.communicate()
    assert bad.returncode != 0 and b"metrics must be on or off" in stderr


async def test_a_worker_whose_metrics_port_is_taken_logs_it_and_serves_the_link_anyway(caplog):
    caplog.set_level(logging.INFO, logger="rinha")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        link_port = free_port()
        nowhere = f"http://127.0.0.1:{free_port()}"
        config = WorkerConfig(listen=f"127.0.0.1:{link_port}", metrics_listen=f"127.0.0.1:{taken.getsockname()[1]}",
                              default_url=nowhere, fallback_url=nowhere, link_secret=LINK_SECRET)
        stop = asyncio.Event()
        task = asyncio.create_task(serve_worker(config, stop))

        async def link_open():
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", link_port)
            except OSError:
                return False
            writer.close()
            await writer.wait_closed()
            return True

        await eventually(link_open)
        stop.set()
        await asyncio.wait_for(task, 10)
    unavailable = [r for r in caplog.records if getattr(r, "event", None) == "metrics_unavailable"]
    assert len(unavailable) == 1 and unavailable[0].levelno == logging.ERROR
    started = [r for r in caplog.records if getattr(r, "event", None) == "worker_started"]
    assert len(started) == 1 and started[0].metrics_listen is None

