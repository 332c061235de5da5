"""Milliseconds since the epoch and their ISO-8601 form."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rinha import clock

T0_MS = 1752582896789
T0 = "2025-07-15T12:34:56.789Z"
LAST_MS = 253402300799999  # 9999-12-31T23:59:59.999Z


def test_format_known_values():
    assert clock.format_ms(0) == "1970-01-01T00:00:00.000Z"
    assert clock.format_ms(T0_MS) == T0
    assert clock.format_ms(1) == "1970-01-01T00:00:00.001Z"
    assert clock.format_ms(951782400000) == "2000-02-29T00:00:00.000Z"
    assert clock.format_ms(LAST_MS) == "9999-12-31T23:59:59.999Z"


def test_parse_known_values():
    assert clock.parse_ms(T0) == T0_MS
    assert clock.parse_ms("1970-01-01T00:00:00.000Z") == 0
    assert clock.parse_ms("2000-02-29T00:00:00Z") == 951782400000


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=LAST_MS))
def test_format_then_parse_round_trips(ms):
    text = clock.format_ms(ms)
    assert len(text) == 24 and text.endswith("Z")
    assert clock.parse_ms(text) == ms
    assert clock.parse_ms(text, round_up=True) == ms


@pytest.mark.parametrize("text", [
    "2025-07-15T12:34:56.789Z",
    "2025-07-15T12:34:56.789+00:00",
    "2025-07-15T12:34:56.789-00:00",
    "2025-07-15T12:34:56.789",
    "2025-07-15 12:34:56.789",
    "  2025-07-15T12:34:56.789Z\n",
    "2025-07-15T12:34:56.789000Z",
])
def test_utc_spellings_agree(text):
    assert clock.parse_ms(text) == T0_MS


@pytest.mark.parametrize("text", [
    "2025-07-15T14:34:56.789+02:00",
    "2025-07-15T09:34:56.789-03:00",
    "2025-07-16T00:04:56.789+11:30",
    "2025-07-14T23:34:56.789-13:00",
])
def test_other_offsets_are_converted_to_utc(text):
    assert clock.parse_ms(text) == T0_MS


def test_offset_crossing_a_year():
    assert clock.parse_ms("2026-01-01T01:00:00.000+02:00") == clock.parse_ms("2025-12-31T23:00:00.000Z")


def test_sub_millisecond_input_rounds_inward():
    text = "2025-07-15T12:34:56.789001Z"
    assert clock.parse_ms(text) == T0_MS                    # a `to` rounds down
    assert clock.parse_ms(text, round_up=True) == T0_MS + 1  # a `from` rounds up
    almost = "2025-07-15T12:34:56.789999Z"
    assert clock.parse_ms(almost) == T0_MS
    assert clock.parse_ms(almost, round_up=True) == T0_MS + 1


def test_sub_millisecond_rounding_up_carries_into_the_next_second():
    assert clock.parse_ms("2025-07-15T12:34:56.999500Z", round_up=True) == clock.parse_ms("2025-07-15T12:34:57Z")


def test_whole_milliseconds_are_not_rounded():
    assert clock.parse_ms(T0, round_up=True) == T0_MS


def test_rounding_inward_before_the_epoch():
    assert clock.parse_ms("1969-12-31T23:59:59.9995Z") == -1
    assert clock.parse_ms("1969-12-31T23:59:59.9995Z", round_up=True) == 0


@pytest.mark.parametrize("text", ["", "yesterday", "2025-07-15T12:34:56.789ZZ", "2025-02-30T00:00:00Z",
                                  "2025-07-15T24:00:01Z", "1752582896789", "2025-07-15T12:34:56+25:00"])
def test_garbage_raises_value_error(text):
    with pytest.raises(ValueError):
        clock.parse_ms(text)


def test_now_ms_is_wall_clock_milliseconds():
    before = time.time_ns() // 1_000_000
    now = clock.now_ms()
    after = time.time_ns() // 1_000_000
    assert type(now) is int
    assert before <= now <= after
