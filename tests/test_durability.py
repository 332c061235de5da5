"""Crashes of real processes: nothing accepted is lost, nothing is charged twice."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import urllib.request

import aiohttp
import pytest

from conftest import StackClient, eventually, free_port, new_id, node_env, running_stack


def stored_ids(url: str) -> set[str]:
    request = urllib.request.Request(f"{url}/admin/payments", headers={"X-Rinha-Token": "123"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return set(json.load(response)["correlationIds"])


@pytest.fixture
def own_stack():
    """A stack of its own: these tests kill its processes."""
    with running_stack() as running:
        yield running


async def test_a_worker_killed_mid_load_loses_nothing_and_charges_nothing_twice(own_stack):
    async with aiohttp.ClientSession() as session:
        client = StackClient(own_stack, session)
        await client.purge()
        await client.processor_admin("default", "delay", 30)  # payments queue up in the worker
        ids = [new_id() for _ in range(400)]
        limit = asyncio.Semaphore(40)

        async def post(correlation_id: str) -> int:
            async with limit:
                return await client.pay(correlation_id)

        first = await asyncio.gather(*(post(cid) for cid in ids[:200]))
        own_stack.stop_child("worker", signal.SIGKILL)
        second = await asyncio.gather(*(post(cid) for cid in ids[200:300]))  # while it is dead
        own_stack.restart("worker")
        third = await asyncio.gather(*(post(cid) for cid in ids[300:]))
        assert set(first + second + third) == {202}

        async def all_recorded():
            try:
                return await client.recorded() == 400
            except AssertionError:
                return False  # 503 until the links are back

        await eventually(all_recorded, timeout=30)
        default, fallback = stored_ids(own_stack.default_url), stored_ids(own_stack.fallback_url)
        assert default | fallback == set(ids)   # nothing lost
        assert not default & fallback           # nothing charged twice
        assert (await client.processor_summary("default"))["totalRequests"] == len(default)


async def test_a_call_in_flight_at_the_crash_is_resent_with_the_same_requested_at(own_stack):
    async with aiohttp.ClientSession() as session:
        client = StackClient(own_stack, session)
        await client.purge()
        await client.processor_admin("default", "delay", 1500)
        correlation_id = new_id()
        assert await client.pay(correlation_id) == 202
        database = own_stack.worker_data_dir / "rinha.sqlite3"

        async def intent_written():  # read as another process would, beside the running worker
            if not database.exists():
                return False
            with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
                return db.execute("SELECT count(*) FROM payments WHERE processor IS NOT NULL").fetchone()[0] == 1

        await eventually(intent_written)
        own_stack.stop_child("worker", signal.SIGKILL)  # the processor will store it anyway

        async def stored_by_processor():
            async with session.get(f"{own_stack.default_url}/payments/{correlation_id}") as response:
                return await response.json() if response.status == 200 else None

        held = await eventually(stored_by_processor, timeout=5)
        own_stack.restart("worker")

        async def recorded():
            try:
                return await client.recorded() == 1
            except AssertionError:
                return False

        await eventually(recorded, timeout=15)  # resent, answered 422 after the delay: recorded
        at = held["requestedAt"]
        ours = await client.summary(**{"from": at, "to": at})
        assert ours["default"]["totalRequests"] == 1  # recorded with the processor's requestedAt
        assert (await client.processor_summary("default"))["totalRequests"] == 1
        assert not stored_ids(own_stack.fallback_url)


async def test_ack_mode_answers_only_what_the_worker_has(tmp_path):
    processor, worker_port, api_port = free_port(), free_port(), free_port()
    rinha = [sys.executable, "-m", "rinha"]
    started: list[subprocess.Popen] = []

    def spawn(*argv: str) -> subprocess.Popen:
        process = subprocess.Popen(rinha + list(argv), env=node_env(), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        started.append(process)
        return process

    try:
        spawn("emulator", "--port", str(processor))
        spawn("worker", "--listen", f"127.0.0.1:{worker_port}", "--default-url", f"http://127.0.0.1:{processor}",
              "--fallback-url", f"http://127.0.0.1:{processor}", "--data-dir", str(tmp_path / "data"),
              "--metrics-listen", "")
        api = spawn("api", "--socket", str(tmp_path / "a.sock"), "--port", str(api_port),
                    "--worker", f"127.0.0.1:{worker_port}", "--ack-mode", "on", "--metrics-listen", "")
        base = f"http://127.0.0.1:{api_port}"
        async with aiohttp.ClientSession() as session:
            async def linked():
                try:
                    async with session.get(f"{base}/healthcheck") as response:
                        return b'"link":"up"' in await response.read()
                except aiohttp.ClientError:
                    return False

            await eventually(linked)
            ids = [new_id() for _ in range(100)]
            for correlation_id in ids:
                async with session.post(f"{base}/payments", json={"correlationId": correlation_id, "amount": 1}) as r:
                    assert r.status == 202
            api.send_signal(signal.SIGKILL)  # right after the last 202: the worker must have them all

            async def all_stored():
                return stored_ids(f"http://127.0.0.1:{processor}") == set(ids)

            await eventually(all_stored, timeout=15)
    finally:
        for process in reversed(started):
            if process.poll() is None:
                process.terminate()
            process.wait(10)
