"""The link's first exchange: each end proves it holds RINHA_LINK_SECRET, without sending it.

    worker -> api   HELLO    {"v": 1, "nonce": W}                       W: 32 fresh random bytes, hex
    api -> worker   PROOF    {"nonce": A, "mac": HMAC(secret, API_LABEL + W + A)}
    worker -> api   WELCOME  {"mac": HMAC(secret, WORKER_LABEL + W + A)}

HMAC-SHA256, compared in constant time. The worker acts on no frame of a connection before its
PROOF checks out, and closes a connection that has not given one within HANDSHAKE_TIMEOUT_S; the
API node sends no payment and asks nothing before the WELCOME checks out, so a stranger posing as
the worker gets nothing either. Both nonces are fresh per connection, so a recorded exchange proves
nothing on another one, and the labels bind the direction, so the worker's WELCOME cannot be
played back as a PROOF.

After the handshake frames travel as before, unsigned: the hot path costs nothing more. That keeps
out whoever can reach the port; it does not stop an attacker on the path who can rewrite a TCP
stream, for which the link needs a private network (as in Docker) or an encrypted tunnel.

Handshake frames are read one at a time and strictly: the peer has nothing else to send until the
other side has answered, so any byte beyond the one frame expected is a refusal.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import orjson

from rinha.link import frames

VERSION = 1
NONCE_BYTES = 32
# How long the worker waits for a connection's PROOF (and the API node for the WELCOME, from HELLO).
HANDSHAKE_TIMEOUT_S = 1.0
# A handshake frame is under 150 bytes; a header announcing more is refused before it is read.
MAX_HANDSHAKE_FRAME = 256
API_LABEL = b"rinha-link/1 api->worker\x00"
WORKER_LABEL = b"rinha-link/1 worker->api\x00"


class HandshakeError(Exception):
    """The peer did not prove the secret: the connection must be closed, nothing it sent used."""


def secret_bytes(secret: str) -> bytes:
    if not secret:
        raise ValueError("the link needs a secret (RINHA_LINK_SECRET)")
    return secret.encode()


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


def api_mac(secret: bytes, worker_nonce: bytes, api_nonce: bytes) -> bytes:
    return hmac.new(secret, API_LABEL + worker_nonce + api_nonce, hashlib.sha256).digest()


def worker_mac(secret: bytes, worker_nonce: bytes, api_nonce: bytes) -> bytes:
    return hmac.new(secret, WORKER_LABEL + worker_nonce + api_nonce, hashlib.sha256).digest()


def hello(worker_nonce: bytes) -> bytes:
    return frames.encode(frames.HELLO, {"v": VERSION, "nonce": worker_nonce.hex()})


def proof(secret: bytes, worker_nonce: bytes, api_nonce: bytes) -> bytes:
    return frames.encode(frames.PROOF, {"nonce": api_nonce.hex(), "mac": api_mac(secret, worker_nonce, api_nonce).hex()})


def welcome(secret: bytes, worker_nonce: bytes, api_nonce: bytes) -> bytes:
    return frames.encode(frames.WELCOME, {"mac": worker_mac(secret, worker_nonce, api_nonce).hex()})


def take_frame(buffer: bytearray, data: bytes, kind: int) -> dict | None:
    """Appends `data` and returns the payload of the one frame of `kind` expected, once whole
    (None until then). Raises HandshakeError on another kind, an oversized or malformed frame,
    or any byte behind it."""
    buffer += data
    if len(buffer) < frames.HEADER.size:
        return None
    length, got = frames.HEADER.unpack_from(buffer)
    if got != kind:
        raise HandshakeError(f"expected frame kind {kind}, got {got}")
    if length > MAX_HANDSHAKE_FRAME:
        raise HandshakeError(f"handshake frame of {length} bytes")
    end = frames.HEADER.size + length
    if len(buffer) < end:
        return None
    if len(buffer) > end:
        raise HandshakeError("bytes sent before the handshake was answered")
    try:
        payload = orjson.loads(bytes(buffer[frames.HEADER.size:end]))
    except orjson.JSONDecodeError:
        raise HandshakeError("handshake payload is not JSON") from None
    del buffer[:]
    if type(payload) is not dict:
        raise HandshakeError("handshake payload is not an object")
    return payload


def read_hex(payload: dict, key: str) -> bytes:
    """A 32-byte value sent as 64 hex digits, or HandshakeError."""
    value = payload.get(key)
    if type(value) is not str or len(value) != 2 * NONCE_BYTES:
        raise HandshakeError(f"{key!r} is not {2 * NONCE_BYTES} hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise HandshakeError(f"{key!r} is not hex") from None


def matches(expected: bytes, given: bytes) -> bool:
    return hmac.compare_digest(expected, given)
