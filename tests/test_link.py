"""The API node's link client against real worker-side sockets: reconnects, waits, backoff."""

from __future__ import annotations

import asyncio

from conftest import LINK_SECRET, eventually, free_port
from rinha.link import frames
from rinha.link.client import LinkClient, LinkDown
from rinha.link.server import LinkServer


class Answering:
    """A worker stand-in: ACKs batches and answers every request with its own id."""

    def __init__(self) -> None:
        self.accepted: list = []

    def accept(self, payments):
        self.accepted.extend(payments)
        return None

    async def answer(self, request):
        return 200, {"echo": request["op"]}


def client_for(port: int, acks: list[int] | None = None) -> LinkClient:
    return LinkClient("127.0.0.1", port, secret=LINK_SECRET, on_connected=lambda: None,
                      on_ack=(acks.append if acks is not None else lambda seq: None), max_backoff_s=0.2)


async def test_a_request_waits_for_a_link_that_comes_back_within_its_timeout():
    port = free_port()
    client = client_for(port)
    client.start()
    try:
        asking = asyncio.ensure_future(client.request({"op": "summary"}, timeout_s=3.0))
        await asyncio.sleep(0.3)  # the worker is not there yet: the request must wait, not fail
        assert not asking.done()
        server = await asyncio.get_running_loop().create_server(LinkServer(Answering(), LINK_SECRET).protocol,
                                                                "127.0.0.1", port)
        try:
            reply = await asking
        finally:
            server.close()
        assert reply["status"] == 200 and reply["body"] == {"echo": "summary"}
    finally:
        await client.close()


async def test_a_request_fails_plainly_when_the_link_stays_down():
    client = client_for(free_port())
    client.start()
    try:
        started = asyncio.get_running_loop().time()
        try:
            await client.request({"op": "summary"}, timeout_s=0.3)
        except LinkDown:
            pass
        else:
            raise AssertionError("a request over a dead link must raise LinkDown")
        assert asyncio.get_running_loop().time() - started < 1.0
    finally:
        await client.close()


async def test_a_peer_that_accepts_and_drops_does_not_cause_a_reconnect_storm():
    dropped = 0

    class Dropper(asyncio.Protocol):
        def connection_made(self, transport):
            nonlocal dropped
            dropped += 1
            transport.close()

    server = await asyncio.get_running_loop().create_server(Dropper, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = client_for(port)
    client.start()
    try:
        await asyncio.sleep(1.0)
    finally:
        await client.close()
        server.close()
    # Backoff from 20 ms doubling to the 200 ms ceiling: about 8 tries in a second, not thousands.
    assert 2 <= dropped <= 15


async def test_batches_are_acknowledged_over_a_real_connection():
    worker = Answering()
    server = await asyncio.get_running_loop().create_server(LinkServer(worker, LINK_SECRET).protocol, "127.0.0.1", 0)
    acks: list[int] = []
    client = client_for(server.sockets[0].getsockname()[1], acks)
    client.start()
    try:
        await eventually(lambda: _true(client.connected))
        client.send(frames.encode(frames.BATCH, {"seq": 7, "payments": [["a", 1], ["b", 2]]}))
        await eventually(lambda: _true(acks == [7]))
        assert worker.accepted == [["a", 1], ["b", 2]]
    finally:
        await client.close()
        server.close()


async def _true(value: bool) -> bool:
    return value
