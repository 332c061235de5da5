"""The payment path end to end over real sockets: NGINX, two API nodes, the worker, emulators."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import aiohttp
import pytest

from conftest import StackClient, answers_200, eventually, free_port, new_id, node_env


async def test_thousand_payments_across_both_nodes_are_stored_exactly_once(client: StackClient):
    stack = client.stack
    ids = [new_id() for _ in range(1000)]
    sockets = [stack.socket_path(1), stack.socket_path(2)]
    sessions = [aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path)) for path in sockets]
    limit = asyncio.Semaphore(50)

    async def post(n: int, correlation_id: str) -> int:
        async with limit:
            session = sessions[n % 2]
            async with session.post("http://api/payments", json={"correlationId": correlation_id, "amount": 19.90}) as r:
                return r.status

    try:
        statuses = await asyncio.gather(*(post(n, cid) for n, cid in enumerate(ids)))
    finally:
        for session in sessions:
            await session.close()
    assert set(statuses) == {202}

    async def all_recorded():
        return await client.recorded() == 1000

    await eventually(all_recorded, timeout=20)
    ours = await client.summary()
    default = await client.processor_summary("default")
    fallback = await client.processor_summary("fallback")
    assert ours["default"]["totalRequests"] + ours["fallback"]["totalRequests"] == 1000
    assert ours["default"]["totalRequests"] == default["totalRequests"]
    assert ours["fallback"]["totalRequests"] == fallback["totalRequests"]
    assert ours["default"]["totalAmount"] == pytest.approx(default["totalAmount"], abs=0.001)
    assert ours["fallback"]["totalAmount"] == pytest.approx(fallback["totalAmount"], abs=0.001)
    assert ours["default"]["totalAmount"] + ours["fallback"]["totalAmount"] == pytest.approx(19_900, abs=0.001)


async def test_duplicate_posts_through_both_nodes_are_charged_once(client: StackClient):
    stack = client.stack
    correlation_id = new_id()
    for path in (stack.socket_path(1), stack.socket_path(2), stack.socket_path(1)):
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path)) as session:
            async with session.post("http://api/payments", json={"correlationId": correlation_id, "amount": 5}) as r:
                assert r.status == 202
    marker = new_id()
    assert await client.pay(marker) == 202

    async def marker_recorded():
        return await client.recorded() >= 2

    await eventually(marker_recorded)
    # The duplicates were queued before the marker on at least one link, so they are settled now.
    assert await client.recorded() == 2
    default = await client.processor_summary("default")
    assert default["totalRequests"] == 2
    assert default["totalAmount"] == pytest.approx(24.90)


BAD_INPUTS = [
    (b"not json", 400),
    (b'["a list"]', 422),
    (b'{"amount": 19.90}', 422),
    (b'{"correlationId": "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3"}', 422),
    (b'{"correlationId": "not-a-uuid", "amount": 19.90}', 422),
    (b'{"correlationId": 12, "amount": 19.90}', 422),
    (b'{"correlationId": "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3", "amount": "19.90"}', 422),
    (b'{"correlationId": "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3", "amount": -1}', 422),
    (b'{"correlationId": "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3", "amount": 0}', 422),
    (b'{"correlationId": "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3", "amount": 1.001}', 422),
    (b'{"correlationId": "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3", "amount": true}', 422),
    (b'{"correlationId": "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3", "amount": 1e400}', 400),
    (b'{"correlationId": "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3", "amount": 19.90, "pad": "' + b"x" * 5000 + b'"}', 413),
]


async def test_bad_input_gets_its_status_and_changes_no_total(client: StackClient):
    for body, status in BAD_INPUTS:
        async with client.session.post(f"{client.base}/payments", data=body,
                                       headers={"content-type": "application/json"}) as response:
            assert response.status == status, body[:80]
            if status != 413 or response.content_type == "application/json":
                assert "error" in await response.json()
    for query, status in [({"from": "yesterday"}, 400), ({"to": "2025-13-45T00:00:00Z"}, 400),
                          ({"from": "2025-07-15T12:00:00Z", "to": "2025-07-15T11:00:00Z"}, 400)]:
        async with client.session.get(f"{client.base}/payments-summary", params=query) as response:
            assert response.status == status
    async with client.session.get(f"{client.base}/payments") as response:
        assert response.status == 405
    async with client.session.get(f"{client.base}/nowhere") as response:
        assert response.status == 404

    marker = new_id()
    assert await client.pay(marker) == 202

    async def marker_recorded():
        return await client.recorded() >= 1

    await eventually(marker_recorded)
    assert await client.recorded() == 1
    assert (await client.processor_summary("default"))["totalRequests"] == 1


async def test_malformed_http_gets_400_and_the_connection_closed(stack):
    reader, writer = await asyncio.open_unix_connection(stack.socket_path(1))
    writer.write(b"POST /payments HTTP/1.1\r\nContent-Length: nope\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in answer


async def test_summary_windows_are_inclusive_and_match_the_processor(client: StackClient):
    ids = [new_id() for _ in range(20)]
    for correlation_id in ids:
        assert await client.pay(correlation_id) == 202

    async def all_recorded():
        return await client.recorded() == 20

    await eventually(all_recorded)
    stamps = []
    for correlation_id in ids:  # senders run concurrently: stamps need not follow posting order
        async with client.session.get(f"{client.stack.default_url}/payments/{correlation_id}") as response:
            stamps.append((await response.json())["requestedAt"])
    first, last, middle = min(stamps), max(stamps), sorted(stamps)[10]
    for bounds in ({"from": first, "to": last}, {"from": first}, {"to": first}, {"to": last},
                   {"from": middle}, {"to": middle}, {"from": middle, "to": middle}):
        ours = await client.summary(**bounds)
        async with client.session.get(f"{client.stack.default_url}/admin/payments-summary", params=bounds,
                                      headers={"X-Rinha-Token": "123"}) as response:
            theirs = await response.json()
        assert ours["default"]["totalRequests"] == theirs["totalRequests"], bounds
        assert ours["default"]["totalAmount"] == pytest.approx(theirs["totalAmount"]), bounds
    assert (await client.summary(**{"from": first, "to": last}))["default"]["totalRequests"] == 20


async def test_payments_accepted_while_the_worker_is_stopped_are_delivered_once_it_is_back(client: StackClient):
    stack = client.stack
    stack.stop_child("worker")
    try:
        ids = [new_id() for _ in range(200)]
        statuses = [await client.pay(correlation_id) for correlation_id in ids]
        assert set(statuses) == {202}
    finally:
        stack.restart("worker")

    async def all_recorded():
        try:
            return await client.recorded() == 200
        except AssertionError:  # the summary is 503 until the links are back
            return False

    await eventually(all_recorded, timeout=20)
    assert (await client.processor_summary("default"))["totalRequests"] == 200


async def test_payments_accepted_before_the_worker_ever_started_are_delivered(tmp_path):
    processor_port, worker_port, api_port = free_port(), free_port(), free_port()
    rinha = [sys.executable, "-m", "rinha"]
    env = node_env(RINHA_API_LOG_LEVEL="WARNING")
    started = []

    def spawn(*argv: str) -> subprocess.Popen:
        process = subprocess.Popen(rinha + list(argv), env=env, stdout=subprocess.DEVNULL)
        started.append(process)
        return process

    try:
        spawn("emulator", "--port", str(processor_port))
        spawn("api", "--socket", str(tmp_path / "a.sock"), "--port", str(api_port),
              "--worker", f"127.0.0.1:{worker_port}", "--metrics-listen", "")
        async with aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{api_port}"

            await eventually(lambda: answers_200(session, f"{base}/healthcheck"))
            for _ in range(50):
                async with session.post(f"{base}/payments", json={"correlationId": new_id(), "amount": 1.5}) as r:
                    assert r.status == 202
            async with session.get(f"{base}/payments-summary") as response:
                assert response.status == 503  # no worker yet: said plainly, not invented
            spawn("worker", "--listen", f"127.0.0.1:{worker_port}",
                  "--default-url", f"http://127.0.0.1:{processor_port}",
                  "--fallback-url", f"http://127.0.0.1:{processor_port}", "--metrics-listen", "")

            async def delivered():
                try:
                    async with session.get(f"{base}/payments-summary") as response:
                        if response.status != 200:
                            return False
                        return (await response.json())["default"]["totalRequests"] == 50
                except aiohttp.ClientError:
                    return False

            await eventually(delivered, timeout=20)
            async with session.get(f"http://127.0.0.1:{processor_port}/admin/payments-summary",
                                   headers={"X-Rinha-Token": "123"}) as response:
                assert (await response.json())["totalRequests"] == 50
    finally:
        for process in reversed(started):
            process.terminate()
            process.wait(10)
