"""What a valid payment and a valid summary query are. Everything else is rejected here,
before anything is buffered, with a status and a message that say what was wrong."""

from __future__ import annotations

import math
import re
from urllib.parse import unquote

import orjson

from rinha import clock

UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

# A billion per payment keeps amount x 100 well inside a double's exact integers.
MAX_AMOUNT = 1_000_000_000


class InvalidInput(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_payment(body: bytes) -> tuple[str, int]:
    """`{"correlationId": uuid, "amount": number}` -> (correlationId, amount in cents)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidInput(400, "body is not valid JSON") from None
    if type(doc) is not dict:
        raise InvalidInput(422, "body must be a JSON object")
    cid = doc.get("correlationId")
    if type(cid) is not str or len(cid) != 36 or UUID.fullmatch(cid) is None:
        raise InvalidInput(422, "correlationId must be a UUID string")
    # One spelling per UUID: the processors treat 'ABC…' and 'abc…' as the same payment, so we must too.
    return cid.lower(), amount_to_cents(doc.get("amount"))


def amount_to_cents(amount: object) -> int:
    kind = type(amount)
    if kind is not float and kind is not int:  # bool is a subclass of int; `type` excludes it
        raise InvalidInput(422, "amount must be a number")
    if not math.isfinite(amount) or amount <= 0:
        raise InvalidInput(422, "amount must be a positive finite number")
    if amount > MAX_AMOUNT:
        raise InvalidInput(422, f"amount must be at most {MAX_AMOUNT}")
    cents = round(amount * 100)
    # Exact: for a 2-decimal amount, cents / 100 is the same nearest double the JSON text gave.
    if cents <= 0 or cents / 100 != amount:
        raise InvalidInput(422, "amount must have at most 2 decimal places")
    return cents


def parse_summary_query(query: bytes) -> tuple[int | None, int | None]:
    """`from`/`to` ISO-8601 bounds (each optional, inclusive) -> epoch ms or None."""
    bounds: dict[str, str] = {}
    try:
        text = query.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidInput(400, "query string must be ASCII") from None
    for part in text.split("&"):
        name, _, value = part.partition("=")
        if name in ("from", "to") and value:
            # unquote, not unquote_plus: a literal '+' is a UTC offset, not a space.
            bounds[name] = unquote(value)
    try:
        start = clock.parse_ms(bounds["from"], round_up=True) if "from" in bounds else None
        end = clock.parse_ms(bounds["to"]) if "to" in bounds else None
    except ValueError:
        raise InvalidInput(400, "from and to must be ISO-8601 timestamps, e.g. 2025-07-15T12:34:56.000Z") from None
    if start is not None and end is not None and start > end:
        raise InvalidInput(400, "from must not be after to")
    return start, end
