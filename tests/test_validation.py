"""What the API accepts as a payment and as a summary query, and the status of each refusal."""

from __future__ import annotations

import uuid

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rinha import clock
from rinha.api.validation import MAX_AMOUNT, InvalidInput, amount_to_cents, parse_payment, parse_summary_query

CID = "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3"
T0 = "2025-07-15T12:34:56.000Z"
T0_MS = 1752582896000
T1 = "2025-07-15T12:35:10.500Z"
T1_MS = 1752582910500


def body(cid: object = CID, amount: object = 19.9, **extra) -> bytes:
    return orjson.dumps({"correlationId": cid, "amount": amount, **extra})


def refused(call, *args) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        call(*args)
    assert info.value.message and str(info.value) == info.value.message
    return info.value


# parse_payment: accepted


def test_valid_payment():
    assert parse_payment(body()) == (CID, 1990)


@pytest.mark.parametrize("text, cents", [
    (b"19.90", 1990), (b"19.9", 1990), (b"0.01", 1), (b"0.1", 10), (b"1", 100), (b"20", 2000),
    (b"1.10", 110), (b"0.29", 29), (b"0.57", 57), (b"1.15", 115), (b"4.35", 435), (b"1005.35", 100535),
    (b"999999999.99", 99999999999), (b"1000000000", 100000000000), (b"1e2", 10000), (b"19.900", 1990),
], ids=lambda v: v.decode() if isinstance(v, bytes) else str(v))
def test_amount_text_to_cents(text, cents):
    raw = b'{"correlationId":"%s","amount":%s}' % (CID.encode(), text)
    assert parse_payment(raw) == (CID, cents)


def test_integer_amount_is_accepted():
    cid, cents = parse_payment(body(amount=20))
    assert (cid, cents) == (CID, 2000)
    assert type(cents) is int


def test_upper_case_uuid_is_accepted_in_its_lower_case_spelling():
    # One spelling per UUID: the processors treat upper and lower case as the same payment.
    assert parse_payment(body(CID.upper(), 5)) == (CID, 500)
    assert parse_payment(body("4A7901b8-7D26-4d9d-AA19-4dc1c7cf60B3", 5)) == (CID, 500)


def test_extra_fields_are_ignored():
    assert parse_payment(body(CID, 5, requestedAt="x", other=[1])) == (CID, 500)


def test_amount_at_max_is_accepted_and_just_over_is_not():
    assert parse_payment(body(amount=MAX_AMOUNT)) == (CID, MAX_AMOUNT * 100)
    assert refused(parse_payment, body(amount=MAX_AMOUNT + 0.01)).status == 422


# parse_payment: refused


@pytest.mark.parametrize("raw", [
    b"", b"{", b"not json", b"{'correlationId': 'x'}", b'{"amount": 1,}', b"\xff\xfe", b'{"a":NaN}',
    b'{"correlationId":"%s","amount":NaN}' % CID.encode(),
    b'{"correlationId":"%s","amount":Infinity}' % CID.encode(),
    b'{"correlationId":"%s","amount":-Infinity}' % CID.encode(),
], ids=repr)
def test_not_json_is_400(raw):
    assert refused(parse_payment, raw).status == 400


@pytest.mark.parametrize("raw", [b"[]", b'[{"amount": 1}]', b'"a string"', b"19.9", b"null", b"true"], ids=repr)
def test_json_that_is_not_an_object_is_422(raw):
    assert refused(parse_payment, raw).status == 422


@pytest.mark.parametrize("doc", [
    {"amount": 19.9}, {"correlationId": CID}, {}, {"correlationid": CID, "amount": 1},
    {"correlationId": CID, "Amount": 1},
], ids=repr)
def test_missing_field_is_422(doc):
    assert refused(parse_payment, orjson.dumps(doc)).status == 422


@pytest.mark.parametrize("cid", [
    None, 42, 4.2, True, [CID], {"id": CID}, "", "not-a-uuid",
    "{" + CID + "}",                       # braces: 38 characters
    CID[:-1],                              # 35 characters
    CID + "0",                             # 37 characters
    CID.replace("-", ""),                  # 32 hex digits, no hyphens
    "urn:uuid:" + CID,
    CID[:8] + "_" + CID[9:],               # wrong separator
    "g" + CID[1:],                         # not hex
    " " + CID[1:],
    CID[:-1] + "\n",
    "٤a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3",  # a non-ASCII digit
    "4a7901b87-d26-4d9d-aa19-4dc1c7cf60b3",  # right length, hyphen misplaced
], ids=repr)
def test_bad_correlation_id_is_422(cid):
    assert refused(parse_payment, body(cid=cid)).status == 422


@pytest.mark.parametrize("amount", [
    "19.90", "", True, False, None, [19.9], {"v": 19.9}, 0, 0.0, -0.0, -1, -19.9, -0.01,
    MAX_AMOUNT + 1, MAX_AMOUNT * 10.0, 1e300, 1.001, 0.001, 0.005, 19.999, 1.0001, 0.009,
], ids=repr)
def test_bad_amount_is_422(amount):
    assert refused(parse_payment, body(amount=amount)).status == 422


@pytest.mark.parametrize("amount", [0.000001, 1e-9, 5e-324, 0.00499], ids=repr)
def test_tiny_positive_amount_is_not_turned_into_zero_cents(amount):
    """A positive amount that rounds to 0 cents must be refused, never accepted as a 0-cent payment."""
    assert refused(parse_payment, body(amount=amount)).status == 422


@pytest.mark.parametrize("amount", [19.900001, 1.000001, 0.010000001], ids=repr)
def test_more_than_two_decimals_is_422_even_when_close_to_a_cent(amount):
    assert refused(parse_payment, body(amount=amount)).status == 422


@pytest.mark.parametrize("number", [
    b"1" * 400, b"-" + b"1" * 400, b"1e400", b"-1e400", b"1e-400", b"0.1e999999999",
    b"123456789012345678901234567890", b"18446744073709551616", b"9223372036854775808",
    b"1" + b"0" * 5000, b"0." + b"0" * 5000 + b"1",
], ids=lambda n: repr(n[:24]))
def test_huge_or_tiny_numbers_are_refused_cleanly(number):
    raw = b'{"correlationId":"%s","amount":%s}' % (CID.encode(), number)
    assert refused(parse_payment, raw).status in (400, 422)


def test_amount_to_cents_rejects_non_finite_numbers():
    for value in (float("nan"), float("inf"), float("-inf")):
        assert refused(amount_to_cents, value).status == 422


# parse_payment: properties

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**63, max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)
amounts = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-2**63, max_value=2**64 - 1),  # orjson.dumps' range; larger ones via text below
    st.decimals(min_value=-10**10, max_value=10**10, places=2).map(float),
    json_values,
)
correlation_ids = st.one_of(st.uuids().map(str), st.text(max_size=40), json_values)
payment_docs = st.fixed_dictionaries({"correlationId": correlation_ids, "amount": amounts})
bodies = st.one_of(
    st.binary(max_size=200),
    payment_docs.map(orjson.dumps),
    json_values.map(orjson.dumps),
    st.builds(lambda cid, number: b'{"correlationId":"%s","amount":%s}' % (cid.encode(), number.encode()),
              st.uuids().map(str), st.from_regex(r"-?[0-9]{1,30}(\.[0-9]{0,30})?([eE][-+]?[0-9]{1,4})?",
                                                  fullmatch=True)),
)


@settings(max_examples=400, deadline=None)
@given(bodies)
def test_any_body_is_accepted_as_positive_cents_or_refused_with_400_or_422(raw):
    try:
        result = parse_payment(raw)
    except InvalidInput as bad:
        assert bad.status in (400, 422)
        return
    cid, cents = result
    assert type(cid) is str and uuid.UUID(cid)
    assert type(cents) is int and 0 < cents <= MAX_AMOUNT * 100


@settings(max_examples=300, deadline=None)
@given(st.uuids(), st.integers(min_value=1, max_value=MAX_AMOUNT * 100))
def test_two_decimal_amounts_round_trip(cid, cents):
    written = b"%d.%02d" % divmod(cents, 100)
    assert written == b"%.2f" % (cents / 100)
    raw = b'{"correlationId":"%s","amount":%s}' % (str(cid).encode(), written)
    assert parse_payment(raw) == (str(cid), cents)


# parse_summary_query


def test_both_bounds():
    assert parse_summary_query(f"from={T0}&to={T1}".encode()) == (T0_MS, T1_MS)


def test_bounds_in_any_order_and_with_other_parameters():
    assert parse_summary_query(f"x=1&to={T1}&y=&from={T0}".encode()) == (T0_MS, T1_MS)


def test_one_bound_only():
    assert parse_summary_query(f"from={T0}".encode()) == (T0_MS, None)
    assert parse_summary_query(f"to={T1}".encode()) == (None, T1_MS)


@pytest.mark.parametrize("query", [b"", b"from=", b"to=", b"from=&to=", b"other=1", b"&&", b"from", b"to"],
                         ids=repr)
def test_missing_or_empty_bounds_are_unbounded(query):
    assert parse_summary_query(query) == (None, None)


def test_equal_bounds_are_allowed():
    assert parse_summary_query(f"from={T0}&to={T0}".encode()) == (T0_MS, T0_MS)


def test_literal_plus_offset_is_an_offset_not_a_space():
    query = b"from=2025-07-15T12:34:56.000+00:00&to=2025-07-15T14:35:10.500+02:00"
    assert parse_summary_query(query) == (T0_MS, T1_MS)


def test_percent_encoded_offset():
    query = b"from=2025-07-15T12%3A34%3A56.000%2B00%3A00&to=2025-07-15T12:35:10.500%2B00:00"
    assert parse_summary_query(query) == (T0_MS, T1_MS)


def test_percent_encoded_z_and_naive_timestamps():
    assert parse_summary_query(b"from=2025-07-15T12:34:56.000%5A") == (T0_MS, None)
    assert parse_summary_query(b"from=2025-07-15T12:34:56.000") == (T0_MS, None)


def test_negative_offset_is_converted_to_utc():
    assert parse_summary_query(b"to=2025-07-15T09:35:10.500-03:00") == (None, T1_MS)


@pytest.mark.parametrize("query", [
    b"from=yesterday", b"from=2025-13-01T00:00:00Z", b"to=2025-07-15T25:00:00Z", b"from=2025-07-15T12:34:56.000ZZ",
    b"from=1752582896000", b"to=%ZZ", b"to=%C3%A9",
    b"from=2025-07-15T12:34:56 00:00", b"from=2025-07-15T12:34:56.000%2B99:00",
    b"from=" + T0.encode() + b"&to=nope",
], ids=repr)
def test_garbage_bound_is_400(query):
    assert refused(parse_summary_query, query).status == 400


def test_from_after_to_is_400():
    assert refused(parse_summary_query, f"from={T1}&to={T0}".encode()).status == 400


def test_from_after_to_by_one_ms_is_400():
    query = b"from=2025-07-15T12:34:56.001Z&to=2025-07-15T12:34:56.000Z"
    assert refused(parse_summary_query, query).status == 400


@pytest.mark.parametrize("query", [b"from=\xff", b"from=2025-07-15T12:34:56.000Z&to=\xc3\xa9", b"x=\x80"],
                         ids=repr)
def test_non_ascii_query_is_400(query):
    assert refused(parse_summary_query, query).status == 400


def test_sub_millisecond_bounds_round_inward():
    query = b"from=2025-07-15T12:34:56.000001Z&to=2025-07-15T12:35:10.500999Z"
    assert parse_summary_query(query) == (T0_MS + 1, T1_MS)


def test_sub_millisecond_bounds_inside_one_ms_give_an_empty_window_error():
    # [.0001, .0009] of the same ms contains no whole millisecond: from rounds up past to.
    query = b"from=2025-07-15T12:34:56.0001Z&to=2025-07-15T12:34:56.0009Z"
    assert refused(parse_summary_query, query).status == 400


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=253402300799999), st.integers(min_value=0, max_value=253402300799999))
def test_formatted_bounds_parse_back(a, b):
    start, end = min(a, b), max(a, b)
    query = f"from={clock.format_ms(start)}&to={clock.format_ms(end)}".encode()
    assert parse_summary_query(query) == (start, end)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80) | st.text(max_size=60).map(lambda t: t.encode("utf-8")))
def test_any_query_gives_bounds_or_400(query):
    try:
        start, end = parse_summary_query(query)
    except InvalidInput as bad:
        assert bad.status == 400
        return
    assert start is None or type(start) is int
    assert end is None or type(end) is int
    if start is not None and end is not None:
        assert start <= end
