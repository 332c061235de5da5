"""Whole HTTP responses as bytes, built once: a response is always one `transport.write`."""

from __future__ import annotations

from http import HTTPStatus

import orjson

JSON = b"application/json"

STATUS_LINE = {
    status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode("latin-1"))
    for status in HTTPStatus
}


def build(status: int, body: bytes = b"", *, content_type: bytes = JSON, close: bool = False,
          extra_headers: bytes = b"") -> bytes:
    """A complete response. `extra_headers` is raw `name: value\\r\\n` lines."""
    head = [STATUS_LINE[status]]
    if body:
        head.append(b"content-type: " + content_type + b"\r\n")
    head.append(b"content-length: %d\r\n" % len(body))
    if close:
        head.append(b"connection: close\r\n")
    head.append(extra_headers)
    head.append(b"\r\n")
    return b"".join(head) + body


def json(status: int, payload: object, *, close: bool = False, extra_headers: bytes = b"") -> bytes:
    return build(status, orjson.dumps(payload), close=close, extra_headers=extra_headers)


def error(status: int, message: str, *, close: bool = False) -> bytes:
    """An error answer with a JSON body that says what was wrong: `{"error": "..."}`."""
    return json(status, {"error": message}, close=close)


# Answers the protocol itself gives, before any route runs.
BAD_REQUEST_CLOSE = error(400, "malformed HTTP request", close=True)
BODY_TOO_LARGE_CLOSE = error(413, "request body too large", close=True)
HEAD_TOO_LARGE_CLOSE = error(431, "request head too large", close=True)
INTERNAL_ERROR_CLOSE = error(500, "internal error", close=True)
REQUEST_TIMEOUT_CLOSE = error(408, "request not received in time", close=True)
TOO_MANY_CONNECTIONS_CLOSE = json(503, {"error": "too many connections; retry shortly"}, close=True,
                                  extra_headers=b"retry-after: 1\r\n")
