"""Length-prefixed frames: a 4-byte big-endian payload length, a 1-byte kind, an orjson payload.

Kinds and payloads:
  BATCH   api -> worker  {"seq": n, "payments": [[correlationId, cents], ...]}
  ACK     worker -> api  {"seq": n}                  the batch is queued; never resend it
  REQUEST api -> worker  {"id": k, "op": "summary", "from": ms|null, "to": ms|null} | {"id": k, "op": "purge"}
  REPLY   worker -> api  {"id": k, "status": 200, "body": {...}}

Before any of these, the handshake (rinha/link/handshake.py): HELLO worker -> api, PROOF api ->
worker, WELCOME worker -> api. Those three are read one by one by the handshake itself, never by
FrameDecoder, so once a connection is proven a handshake frame on it is a bad frame.
"""

from __future__ import annotations

import struct

import orjson

BATCH = 1
ACK = 2
REQUEST = 3
REPLY = 4
KINDS = frozenset((BATCH, ACK, REQUEST, REPLY))
HELLO = 5
PROOF = 6
WELCOME = 7

HEADER = struct.Struct("!IB")
# A batch of 512 payments is ~30 KB; anything near this limit is a corrupt or hostile stream.
MAX_FRAME = 16 * 1024 * 1024


class FrameError(Exception):
    """The byte stream is not a valid frame sequence: the connection must be dropped."""


def encode(kind: int, payload: object) -> bytes:
    body = orjson.dumps(payload)
    return HEADER.pack(len(body), kind) + body


class FrameDecoder:
    """Turns a TCP byte stream into (kind, payload) pairs, whatever the read boundaries."""

    __slots__ = ("buffer", "max_frame")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.buffer = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes) -> list[tuple[int, object]]:
        buffer = self.buffer
        buffer += data
        frames = []
        offset = 0
        size = len(buffer)
        while size - offset >= HEADER.size:
            length, kind = HEADER.unpack_from(buffer, offset)
            if length > self.max_frame or kind not in KINDS:
                raise FrameError(f"bad frame header: length {length}, kind {kind}")
            end = offset + HEADER.size + length
            if end > size:
                break
            try:
                payload = orjson.loads(memoryview(buffer)[offset + HEADER.size:end])
            except orjson.JSONDecodeError as exc:
                raise FrameError(f"bad frame payload: {exc}") from None
            frames.append((kind, payload))
            offset = end
        if offset:
            del buffer[:offset]
        return frames
