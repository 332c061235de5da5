"""The worker link's framing: whatever the read boundaries, the same frames come out."""

from __future__ import annotations


import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rinha.link.frames import ACK, BATCH, HEADER, KINDS, MAX_FRAME, REPLY, REQUEST, FrameDecoder, FrameError, encode

FRAMES = [
    (BATCH, {"seq": 1, "payments": [["4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3", 1990],
                                    ["5b8a02c9-8e37-4e0e-bb2a-5ed2d8d071c4", 1]]}),
    (ACK, {"seq": 1}),
    (REQUEST, {"id": 7, "op": "summary", "from": 1752582896000, "to": None}),
    (REQUEST, {"id": 8, "op": "purge"}),
    (REPLY, {"id": 7, "status": 200, "body": {"default": {"totalRequests": 2, "totalAmount": 19.91},
                                              "fallback": {"totalRequests": 0, "totalAmount": 0.0}}}),
    (REPLY, {"id": 9, "status": 200, "body": {"note": "non-ASCII: é ✓ \u0000"}}),
]
STREAM = b"".join(encode(kind, payload) for kind, payload in FRAMES)


def test_encode_layout():
    frame = encode(ACK, {"seq": 3})
    assert frame == b"\x00\x00\x00\x09\x02" + b'{"seq":3}'
    assert HEADER.size == 5


@pytest.mark.parametrize("kind, payload", FRAMES, ids=lambda v: str(v)[:20])
def test_round_trip_one_frame(kind, payload):
    decoder = FrameDecoder()
    assert decoder.feed(encode(kind, payload)) == [(kind, payload)]
    assert decoder.buffer == bytearray()


def test_many_frames_in_one_feed():
    decoder = FrameDecoder()
    assert decoder.feed(STREAM) == FRAMES
    assert len(decoder.buffer) == 0


def test_split_at_every_byte_boundary():
    for cut in range(len(STREAM) + 1):
        decoder = FrameDecoder()
        got = decoder.feed(STREAM[:cut])
        got += decoder.feed(STREAM[cut:])
        assert got == FRAMES, cut
        assert len(decoder.buffer) == 0


def test_one_byte_at_a_time():
    decoder = FrameDecoder()
    got = []
    for i in range(len(STREAM)):
        got += decoder.feed(STREAM[i:i + 1])
    assert got == FRAMES
    assert len(decoder.buffer) == 0


def test_partial_header_is_kept_until_the_rest_arrives():
    frame = encode(ACK, {"seq": 42})
    decoder = FrameDecoder()
    assert decoder.feed(frame[:3]) == []
    assert bytes(decoder.buffer) == frame[:3]
    assert decoder.feed(frame[3:HEADER.size]) == []
    assert bytes(decoder.buffer) == frame[:HEADER.size]
    assert decoder.feed(frame[HEADER.size:-1]) == []
    assert decoder.feed(frame[-1:]) == [(ACK, {"seq": 42})]
    assert decoder.buffer == bytearray()


def test_complete_frames_are_returned_and_the_partial_tail_is_kept():
    tail = encode(ACK, {"seq": 99})
    decoder = FrameDecoder()
    assert decoder.feed(STREAM + tail[:7]) == FRAMES
    assert bytes(decoder.buffer) == tail[:7]
    assert decoder.feed(tail[7:]) == [(ACK, {"seq": 99})]
    assert decoder.buffer == bytearray()


def test_empty_feed_returns_nothing():
    decoder = FrameDecoder()
    assert decoder.feed(b"") == []
    assert decoder.buffer == bytearray()


def test_oversize_length_raises_before_the_payload_arrives():
    decoder = FrameDecoder()
    with pytest.raises(FrameError):
        decoder.feed(HEADER.pack(MAX_FRAME + 1, BATCH))


def test_length_at_the_limit_waits_for_the_payload():
    decoder = FrameDecoder()
    assert decoder.feed(HEADER.pack(MAX_FRAME, BATCH)) == []


def test_custom_max_frame():
    frame = encode(BATCH, {"seq": 1, "payments": []})
    assert FrameDecoder(max_frame=len(frame) - HEADER.size).feed(frame) == [(BATCH, {"seq": 1, "payments": []})]
    with pytest.raises(FrameError):
        FrameDecoder(max_frame=len(frame) - HEADER.size - 1).feed(frame)


@pytest.mark.parametrize("kind", [0, 5, 99, 255])
def test_unknown_kind_raises(kind):
    assert kind not in KINDS
    with pytest.raises(FrameError):
        FrameDecoder().feed(HEADER.pack(2, kind) + b"{}")


def test_bad_frame_after_good_ones_raises():
    decoder = FrameDecoder()
    with pytest.raises(FrameError):
        decoder.feed(encode(ACK, {"seq": 1}) + HEADER.pack(2, 77) + b"{}")


@pytest.mark.parametrize("payload", [b"{x}", b"", b"{\"seq\": 1", b"\xff\xfe", b"NaN", b'{"a":1}garbage'], ids=repr)
def test_bad_json_payload_raises(payload):
    with pytest.raises(FrameError):
        FrameDecoder().feed(HEADER.pack(len(payload), REPLY) + payload)


json_payloads = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**63, max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
frames = st.lists(st.tuples(st.sampled_from(sorted(KINDS)), json_payloads), min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(frames, st.data())
def test_any_frames_any_splits(sent, data):
    stream = b"".join(encode(kind, payload) for kind, payload in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder()
    got = []
    start = 0
    for cut in cuts + [len(stream)]:
        got += decoder.feed(stream[start:cut])
        start = cut
    # Compare through orjson: -0.0 == 0.0 and 1 == 1.0 would hide a changed value.
    assert orjson.dumps(got) == orjson.dumps([[kind, payload] for kind, payload in sent])
    assert len(decoder.buffer) == 0
