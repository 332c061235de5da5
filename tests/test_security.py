"""Who may do what (SPEC.md section 6): purge needs the admin token, /metrics is not public, and
the worker's link serves only peers that prove the link secret.

Everything runs against a real stack (real NGINX on its port, real API nodes, the real worker
process, real emulators); the link is attacked with raw TCP clients on the worker's port, and
the state that must not change is read back the way users and scrapers read it.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import sys
import tempfile

import aiohttp
import orjson
from conftest import LINK_SECRET, MetricsPage, StackClient, answers_200, eventually, free_port, new_id, node_env
from fakes import FakeTransport
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rinha.api.buffer import PaymentBuffer
from rinha.api.routes import PURGE_DISABLED, UNAUTHORIZED, ApiApp
from rinha.http.protocol import HttpProtocol, Limits, ServerState
from rinha.link import frames, handshake
from rinha.link.client import LinkClient, LinkDown
from rinha.link.handshake import HANDSHAKE_TIMEOUT_S
from rinha.link.server import LinkServer

# The worker must close a connection that has not proven the secret within a second; allow for a
# loaded machine on top of that.
CLOSE_DEADLINE_S = HANDSHAKE_TIMEOUT_S + 1.5


# Helpers: the state that must not change


async def worker_state(client: StackClient) -> tuple[dict, float, float]:
    """The summary (through NGINX), payments accepted and waiting (the worker's /metrics)."""
    async with client.session.get(client.stack.worker_metrics_url) as response:
        page = MetricsPage(await response.text())
    return (await client.summary(), page.value("rinha_worker_accepted_total"),
            page.value("rinha_worker_queue_payments"))


async def one_payment_recorded(client: StackClient) -> None:
    assert await client.pay(new_id()) == 202

    async def recorded():
        return await client.recorded() >= 1

    await eventually(recorded, timeout=20)


async def purge(client: StackClient, headers: dict[str, str] | None, base: str | None = None) -> int:
    async with client.session.post(f"{base or client.base}/purge-payments", headers=headers or {}) as response:
        await response.read()
        return response.status


# The admin token, through NGINX


async def test_purge_without_the_token_or_with_a_wrong_one_is_401_and_changes_nothing(client: StackClient):
    await one_payment_recorded(client)
    before = await worker_state(client)
    token = client.stack.admin_token
    wrong = [None, {"Authorization": "Bearer"}, {"Authorization": "Bearer "}, {"Authorization": f"Bearer {token}x"},
             {"Authorization": f"Bearer {token[:-1]}"}, {"Authorization": f"Basic {token}"},
             {"Authorization": token}, {"X-Admin-Token": token}, {"Authorization": "Bearer " + "a" * 4000}]
    for headers in wrong:
        async with client.session.post(f"{client.base}/purge-payments", headers=headers or {}) as response:
            assert response.status == 401, headers
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert "Authorization" in (await response.json())["error"]
    assert await worker_state(client) == before


async def test_purge_with_the_token_empties_the_ledger(client: StackClient):
    await one_payment_recorded(client)
    # The scheme is case-insensitive (RFC 9110 11.1).
    assert await purge(client, {"Authorization": f"bearer {client.stack.admin_token}"}) == 200
    summary = await client.summary()
    assert summary["default"]["totalRequests"] == summary["fallback"]["totalRequests"] == 0


async def test_a_token_does_not_carry_over_to_the_next_request_on_a_kept_alive_connection():
    """NGINX shares its upstream connections between clients: the token of one request must not
    authorise the next one on the same connection."""
    buffer = PaymentBuffer(flush_interval_s=60.0, batch_max=512, capacity=1024)
    app = ApiApp(buffer, _DownLink(), summary_timeout_s=0.1, admin_token="t" * 20)
    transport = FakeTransport()
    protocol = HttpProtocol(app, Limits(), ServerState())
    protocol.connection_made(transport)
    with_token = b"POST /purge-payments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"t" * 20 + b"\r\n\r\n"
    without = b"POST /purge-payments HTTP/1.1\r\nHost: x\r\n\r\n"
    protocol.data_received(with_token + without)
    await transport.until(lambda: len(transport.writes) == 2)
    protocol.connection_lost(None)
    buffer.flush()
    # Authorised, the purge went to the (absent) worker: 503; the next one, with no token: 401.
    assert transport.writes[0].startswith(b"HTTP/1.1 503 ")
    assert transport.writes[1] == UNAUTHORIZED


class _DownLink:
    connected = False

    async def request(self, payload: dict, timeout_s: float) -> dict:
        raise LinkDown("no worker in this test")


async def test_an_api_node_without_a_token_has_purge_disabled_403():
    folder = tempfile.mkdtemp(prefix="rinha-test-")
    port = free_port()
    env = node_env()
    env.pop("RINHA_ADMIN_TOKEN", None)
    node = subprocess.Popen([sys.executable, "-m", "rinha", "api", "--socket", f"{folder}/a.sock", "--port", str(port),
                             "--worker", f"127.0.0.1:{free_port()}", "--metrics-listen", ""],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as session:
            await eventually(lambda: answers_200(session, f"http://127.0.0.1:{port}/healthcheck"))
            for headers in ({}, {"Authorization": "Bearer " + "x" * 20}):
                async with session.post(f"http://127.0.0.1:{port}/purge-payments", headers=headers) as response:
                    assert response.status == 403
                    assert await response.read() == PURGE_DISABLED.partition(b"\r\n\r\n")[2]
    finally:
        node.terminate()
        node.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


# /metrics is not on the public port


async def test_metrics_answer_404_through_nginx_in_every_spelling(client: StackClient):
    for path in ("/metrics", "/metrics?x=1", "//metrics", "/%6detrics", "/./metrics", "/a/../metrics", "/metrics/"):
        for method in ("GET", "POST", "HEAD"):
            async with client.session.request(method, f"{client.base}{path}") as response:
                body = await response.read()
                assert response.status == 404, (method, path)
                assert b"rinha_" not in body, (method, path)
    # The nodes' public sockets do not serve it either; their own metrics listeners do.
    for n in (1, 2):
        async with (aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=client.stack.socket_path(n))) as own,
                    own.get("http://api/metrics") as response):
            assert response.status == 404
        async with (aiohttp.ClientSession(connector=aiohttp.UnixConnector(
                    path=client.stack.metrics_socket_path(n))) as own, own.get("http://api/metrics") as response):
            assert response.status == 200 and "rinha_api_requests_total" in await response.text()


# The link's handshake without sockets first: any bytes, any splits


class LinkTransport(FakeTransport):
    def abort(self) -> None:
        self.close()


class Recorder:
    """A worker that notes whatever reaches it: in these tests, nothing may."""

    def __init__(self) -> None:
        self.accepted: list = []
        self.asked: list = []

    def accept(self, payments):
        self.accepted.append(payments)

    async def answer(self, request):
        self.asked.append(request)
        return 200, {}


SECRET = b"s" * 32
FUZZ = settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=70),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                               st.sampled_from(["seq", "payments", "id", "op", "nonce", "mac", "v"]), inner, max_size=4),
                           max_leaves=8)
any_frame = st.builds(frames.encode, st.sampled_from([*sorted(frames.KINDS), frames.HELLO, frames.PROOF,
                                                      frames.WELCOME, 0, 200]), json_values)
proof_shaped = st.builds(lambda n, m: frames.encode(frames.PROOF, {"nonce": n.hex(), "mac": m.hex()}),
                         st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
streams = st.one_of(st.binary(max_size=600), st.lists(any_frame, min_size=1, max_size=4).map(b"".join),
                    st.tuples(proof_shaped, st.lists(any_frame, max_size=2).map(b"".join)).map(b"".join))


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(set(c for c in cuts if 0 < c < len(stream))), len(stream)]
    return [stream[a:b] for a, b in zip(points, points[1:])]


async def serve_link(pieces: list[bytes]) -> tuple[LinkTransport, Recorder, object]:
    worker = Recorder()
    protocol = LinkServer(worker, SECRET.decode()).protocol()
    transport = LinkTransport()
    protocol.connection_made(transport)
    for piece in pieces:
        if transport.closed:
            break
        protocol.data_received(piece)
    await asyncio.sleep(0)
    protocol.connection_lost(None)
    return transport, worker, protocol


@FUZZ
@given(streams, st.lists(st.integers(0, 700), max_size=6))
def test_no_byte_stream_without_the_secret_reaches_the_worker(stream, cuts):
    async def case():
        transport, worker, protocol = await serve_link(split(stream, cuts))
        assert worker.accepted == [] and worker.asked == []
        assert transport.writes == [handshake.hello(protocol.nonce)]  # no WELCOME, ACK or REPLY
        if not transport.closed:  # still waiting: only ever for the rest of one small PROOF frame
            assert len(protocol.decoder.buffer) <= frames.HEADER.size + handshake.MAX_HANDSHAKE_FRAME
            assert len(stream) < frames.HEADER.size or stream[4] == frames.PROOF
    asyncio.run(case())


@settings(max_examples=100, deadline=None, database=None)
@given(st.integers(0, 200), st.data())
def test_a_valid_proof_in_any_pieces_opens_the_link(cut, data):
    async def case():
        worker = Recorder()
        protocol = LinkServer(worker, SECRET.decode()).protocol()
        transport = LinkTransport()
        protocol.connection_made(transport)
        api_nonce = handshake.new_nonce()
        proof = handshake.proof(SECRET, protocol.nonce, api_nonce)
        for piece in split(proof, data.draw(st.lists(st.integers(0, len(proof)), max_size=5))):
            protocol.data_received(piece)
        assert not transport.closed and protocol.proven
        assert transport.writes[1] == handshake.welcome(SECRET, protocol.nonce, api_nonce)
        protocol.data_received(frames.encode(frames.BATCH, {"seq": 1, "payments": [["a", 1]]}))
        assert worker.accepted == [[["a", 1]]]
        protocol.connection_lost(None)
    asyncio.run(case())


# The link: raw TCP clients on the worker's port


async def read_hello(reader: asyncio.StreamReader) -> bytes:
    header = await reader.readexactly(frames.HEADER.size)
    length, kind = frames.HEADER.unpack(header)
    assert kind == frames.HELLO and length <= handshake.MAX_HANDSHAKE_FRAME
    payload = orjson.loads(await reader.readexactly(length))
    assert payload["v"] == handshake.VERSION
    return bytes.fromhex(payload["nonce"])


def batch(n: int) -> bytes:
    return frames.encode(frames.BATCH, {"seq": n, "payments": [[new_id(), 1990] for _ in range(3)]})


PURGE = frames.encode(frames.REQUEST, {"id": 1, "op": "purge"})
SUMMARY = frames.encode(frames.REQUEST, {"id": 2, "op": "summary", "from": None, "to": None})


def hostile_cases(rng: random.Random, secret: bytes) -> list[tuple[str, object]]:
    """(name, what to send): bytes sent at once, or a callable(nonce) -> bytes once HELLO is read,
    or a list of (delay_s, bytes) sent over time. `secret` is the worker's: some cases hold it and
    still break the rules (too slow, too eager, a nonce from elsewhere)."""
    wrong = b"w" * 32

    def valid_proof(nonce: bytes) -> bytes:
        return handshake.proof(secret, nonce, handshake.new_nonce())

    cases: list[tuple[str, object]] = [
        ("silent", b""),
        ("batch-without-handshake", batch(1)),
        ("purge-without-handshake", PURGE),
        ("summary-without-handshake", SUMMARY),
        ("http", b"POST /purge-payments HTTP/1.1\r\nHost: worker\r\n\r\n"),
        ("wrong-secret", lambda nonce: handshake.proof(wrong, nonce, handshake.new_nonce()) + PURGE),
        ("wrong-secret-then-waits", lambda nonce: handshake.proof(wrong, nonce, handshake.new_nonce())),
        ("mac-for-another-nonce", lambda nonce: valid_proof(handshake.new_nonce()) + batch(2)),
        ("worker-label-instead", lambda nonce: frames.encode(frames.PROOF, {
            "nonce": (a := handshake.new_nonce()).hex(),
            "mac": handshake.worker_mac(secret, nonce, a).hex()}) + PURGE),
        ("welcome-instead-of-proof", lambda nonce: handshake.welcome(secret, nonce, nonce) + PURGE),
        ("hello-back", lambda nonce: handshake.hello(nonce) + PURGE),
        ("valid-proof-with-frames-glued", lambda nonce: valid_proof(nonce) + batch(3)),
        ("oversized-header", frames.HEADER.pack(2**31, frames.PROOF)),
        ("oversized-proof", frames.HEADER.pack(handshake.MAX_HANDSHAKE_FRAME + 1, frames.PROOF) + b"{" * 300),
        ("huge-batch-unproven", frames.HEADER.pack(frames.MAX_FRAME, frames.BATCH) + b"[" * 60_000),
        ("truncated-header", frames.HEADER.pack(100, frames.PROOF)[:3]),
        ("truncated-proof", lambda nonce: valid_proof(nonce)[:-5]),
        ("proof-not-json", frames.HEADER.pack(4, frames.PROOF) + b"{x}}"),
        ("proof-a-list", frames.encode(frames.PROOF, ["nonce", "mac"])),
        ("proof-fields-wrong-type", frames.encode(frames.PROOF, {"nonce": 1, "mac": None})),
        ("proof-not-hex", frames.encode(frames.PROOF, {"nonce": "zz" * 32, "mac": "zz" * 32})),
        ("proof-short-mac", lambda nonce: frames.encode(frames.PROOF, {"nonce": nonce.hex(), "mac": "00" * 16})),
        ("slow-valid-proof", lambda nonce: [(HANDSHAKE_TIMEOUT_S + 0.3, valid_proof(nonce) + batch(4))]),
        ("trickled-proof", lambda nonce: [(0.1, bytes([b])) for b in valid_proof(nonce)]),
    ]
    for i in range(60):
        cases.append((f"garbage-{i}", rng.randbytes(rng.choice([1, 4, 5, 6, 64, 1000, 70_000]))))
    for i in range(40):
        kind = rng.choice([*sorted(frames.KINDS), frames.HELLO, frames.PROOF, frames.WELCOME, 0, 99])
        payload = rng.choice([{}, [], None, {"seq": i, "payments": [[new_id(), 1]]}, {"id": i, "op": "purge"},
                              {"nonce": rng.randbytes(32).hex(), "mac": rng.randbytes(32).hex()}])
        cases.append((f"random-frames-{i}", b"".join(frames.encode(kind, payload) for _ in range(rng.randint(1, 3)))))
    for i in range(30):
        def flipped(nonce: bytes, i=i) -> bytes:
            proof = bytearray(valid_proof(nonce))
            spot = rng.randrange(frames.HEADER.size, len(proof))
            proof[spot] ^= 1 << rng.randrange(8)
            return bytes(proof) + PURGE
        cases.append((f"bit-flipped-proof-{i}", flipped))
    return cases


async def attack(port: int, name: str, what) -> tuple[str, bytes, float, str]:
    """One hostile connection: what the worker sent beyond its HELLO, how long until it closed."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = loop.time()
    received = b""
    ended = "open"
    try:
        nonce = await asyncio.wait_for(read_hello(reader), CLOSE_DEADLINE_S)
        sends = what(nonce) if callable(what) else what
        steps = sends if isinstance(sends, list) else [(0.0, sends)]
        for delay, data in steps:
            if delay:
                await asyncio.sleep(delay)
            if reader.at_eof() or reader.exception() is not None or loop.time() - started > CLOSE_DEADLINE_S:
                break  # closed on us: a client would stop here too
            if data:
                writer.write(data)
        async with asyncio.timeout(started + CLOSE_DEADLINE_S - loop.time() + 0.5):
            while chunk := await reader.read(65536):
                received += chunk
        ended = "eof"
    except (ConnectionError, asyncio.IncompleteReadError):
        ended = "reset"
    except TimeoutError:
        ended = "still open"
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass
    return name, received, loop.time() - started, ended


async def test_hostile_link_clients_are_closed_and_change_nothing(client: StackClient):
    stack = client.stack
    await one_payment_recorded(client)
    before = await worker_state(client)
    worker_pid = stack.pids()["worker"]
    seed = random.randrange(1 << 30)
    secret = stack.link_secret.encode()
    cases = hostile_cases(random.Random(seed), secret)
    # A recorded handshake: a legitimate PROOF (made with the secret, as if sniffed off the wire)
    # played back on new connections, whose fresh nonces it does not match.
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.config.worker_port)
    recorded = handshake.proof(secret, await read_hello(reader), handshake.new_nonce())
    writer.write(recorded)
    welcome = await reader.readexactly(frames.HEADER.size)
    assert frames.HEADER.unpack(welcome)[1] == frames.WELCOME  # the original connection was accepted
    writer.close()
    await writer.wait_closed()
    cases += [(f"replayed-proof-{i}", recorded + PURGE + batch(5)) for i in range(3)]

    results = await asyncio.gather(*(attack(stack.config.worker_port, name, what) for name, what in cases))
    for name, received, elapsed, ended in results:
        assert ended in ("eof", "reset"), (seed, name, ended)
        assert elapsed < CLOSE_DEADLINE_S + 0.5, (seed, name, elapsed)
        assert received == b"", (seed, name, received[:80])  # no ACK, no REPLY, no WELCOME
    assert await worker_state(client) == before, seed
    assert stack.pids()["worker"] == worker_pid and not stack.died
    # The API nodes' own links were never disturbed: a payment still goes all the way.
    assert await client.pay(new_id()) == 202

    async def both():
        return await client.recorded() == before[0]["default"]["totalRequests"] + before[0]["fallback"][
            "totalRequests"] + 1

    await eventually(both, timeout=20)


async def test_an_api_node_with_a_wrong_secret_never_links_and_is_refused(client: StackClient):
    before = await worker_state(client)
    acked = []
    stranger = LinkClient("127.0.0.1", client.stack.config.worker_port, secret="not-the-secret-" + "x" * 20,
                          on_connected=lambda: None, on_ack=acked.append, max_backoff_s=0.1)
    stranger.start()
    try:
        await asyncio.sleep(1.0)  # several attempts at 20 ms, 40 ms, ... 100 ms apart
        assert not stranger.connected and stranger.refusals >= 3
        try:
            await stranger.request({"op": "purge"}, timeout_s=0.2)
        except LinkDown:
            pass
        else:
            raise AssertionError("a purge went through a link that never proved the secret")
    finally:
        await stranger.close()
    assert acked == [] and await worker_state(client) == before


async def test_the_api_node_sends_nothing_to_a_fake_worker_that_cannot_prove_the_secret():
    """Mutual: a stranger listening where the worker should be gets a PROOF (useless without the
    secret, being bound to its nonce) and nothing else: no payment, no request."""
    got = bytearray()
    welcomed = asyncio.Event()
    accepted: list[asyncio.Transport] = []

    class FakeWorker(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            accepted.append(transport)
            transport.write(handshake.hello(handshake.new_nonce()))

        def data_received(self, data):
            got.extend(data)
            if not welcomed.is_set():
                welcomed.set()
                self.transport.write(handshake.welcome(b"guessed-secret-" * 2, b"n" * 32, b"n" * 32))

    server = await asyncio.get_running_loop().create_server(FakeWorker, "127.0.0.1", 0)
    linked = []
    node = LinkClient("127.0.0.1", server.sockets[0].getsockname()[1], secret=LINK_SECRET,
                      on_connected=lambda: linked.append(1), on_ack=lambda seq: None, max_backoff_s=0.1)
    node.start()
    try:
        await asyncio.wait_for(welcomed.wait(), 5)
        await asyncio.sleep(0.3)
        assert not node.connected and linked == []
        assert not node.send(batch(9))
    finally:
        await node.close()
        server.close()
        for transport in accepted:
            transport.close()
        await server.wait_closed()
    # Only PROOF frames went out (one per attempt), nothing else.
    offset = 0
    while offset < len(got):
        length, kind = frames.HEADER.unpack_from(got, offset)
        assert kind == frames.PROOF
        offset += frames.HEADER.size + length


async def test_a_worker_without_a_link_secret_refuses_to_start():
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rinha", "worker", "--listen", f"127.0.0.1:{free_port()}", "--metrics-listen", "",
        env={k: v for k, v in node_env().items() if k != "RINHA_LINK_SECRET"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode != 0 and b"RINHA_LINK_SECRET is not set" in stderr
