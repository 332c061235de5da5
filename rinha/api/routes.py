"""The API node's routes. `handle` is called by the HTTP protocol for every complete request."""

from __future__ import annotations

import asyncio
import hmac
import logging

from rinha.api.buffer import PaymentBuffer
from rinha.api.metrics import ApiMetrics
from rinha.api.validation import InvalidInput, parse_payment, parse_summary_query
from rinha.http import responses
from rinha.link.client import LinkClient, LinkDown

log = logging.getLogger(__name__)

ACCEPTED = responses.build(202)
BUFFER_FULL = responses.json(503, {"error": "payment buffer full; retry shortly"}, extra_headers=b"retry-after: 1\r\n")
# The node is healthy either way (it keeps accepting while the worker is away); the link's state
# is there for readiness checks.
HEALTHY_LINKED = responses.json(200, {"status": "ok", "link": "up"})
HEALTHY_UNLINKED = responses.json(200, {"status": "ok", "link": "down"})
NOT_FOUND = responses.error(404, "no such route")
# Purge: 401 for a missing or wrong token (the client may retry with one), 403 when this node has
# none configured (no token would do).
UNAUTHORIZED = responses.json(401, {"error": "purge needs Authorization: Bearer <admin token>"},
                              extra_headers=b'www-authenticate: Bearer realm="rinha"\r\n')
PURGE_DISABLED = responses.error(403, "purge is disabled: this node has no admin token (RINHA_ADMIN_TOKEN)")
WORKER_DOWN = responses.json(503, {"error": "worker unreachable; retry shortly"}, extra_headers=b"retry-after: 1\r\n")
WORKER_TIMEOUT = responses.error(504, "worker did not answer in time")

ROUTES = {
    b"/payments": b"POST",
    b"/payments-summary": b"GET",
    b"/purge-payments": b"POST",
    b"/healthcheck": b"GET",
}
METHOD_NOT_ALLOWED = {
    path: responses.json(405, {"error": f"use {method.decode()}"}, extra_headers=b"allow: " + method + b"\r\n")
    for path, method in ROUTES.items()
}


class ApiApp:
    """The public routes. `/metrics` is not one of them: it is served on --metrics-listen."""

    __slots__ = ("buffer", "link", "summary_timeout_s", "ack_mode", "metrics", "answered", "admin_token")

    def __init__(self, buffer: PaymentBuffer, link: LinkClient, summary_timeout_s: float, ack_mode: bool = False,
                 metrics: ApiMetrics | None = None, admin_token: str = "") -> None:
        self.buffer = buffer
        self.link = link
        self.summary_timeout_s = summary_timeout_s
        self.ack_mode = ack_mode
        self.admin_token = admin_token.encode() or None
        # Without metrics the protocol finds no `answered` hook and counts nothing.
        self.metrics = metrics
        self.answered = metrics.answered if metrics is not None else None

    def handle(self, method, path, query, body, headers):
        if path == b"/payments":
            if method != b"POST":
                return METHOD_NOT_ALLOWED[path]
            try:
                correlation_id, cents = parse_payment(body)
            except InvalidInput as bad:
                return responses.error(bad.status, bad.message)
            if self.ack_mode:
                waiter = self.buffer.add_acknowledged(correlation_id, cents)
                return BUFFER_FULL if waiter is None else _accepted_once(waiter)
            return ACCEPTED if self.buffer.add(correlation_id, cents) else BUFFER_FULL
        expected = ROUTES.get(path)
        if expected is None:
            return NOT_FOUND
        if method != expected:
            return METHOD_NOT_ALLOWED[path]
        if path == b"/payments-summary":
            try:
                start, end = parse_summary_query(query)
            except InvalidInput as bad:
                return responses.error(bad.status, bad.message)
            return self._ask_worker({"op": "summary", "from": start, "to": end})
        if path == b"/purge-payments":
            refusal = self._refuse_admin(headers)
            return refusal if refusal is not None else self._ask_worker({"op": "purge"})
        return HEALTHY_LINKED if self.link.connected else HEALTHY_UNLINKED

    def _refuse_admin(self, headers: dict[bytes, bytes] | None) -> bytes | None:
        """None when the request carries this node's admin token; else the answer refusing it."""
        if self.admin_token is None:
            return PURGE_DISABLED
        given = headers.get(b"authorization") if headers else None
        if given is None:
            return UNAUTHORIZED
        scheme, _, credentials = given.strip().partition(b" ")
        # compare_digest: the time taken says nothing about how much of the token was right.
        if scheme.lower() != b"bearer" or not hmac.compare_digest(credentials.strip(), self.admin_token):
            return UNAUTHORIZED
        return None

    async def _ask_worker(self, request: dict) -> bytes:
        if request["op"] == "summary":
            # Payments this node accepted just before the question must be in the answer:
            # send them first (the link is ordered, so the worker sees them before the request).
            self.buffer.flush()
        try:
            reply = await self.link.request(request, self.summary_timeout_s)
        except LinkDown:
            return WORKER_DOWN
        except asyncio.TimeoutError:
            return WORKER_TIMEOUT
        return responses.json(reply["status"], reply["body"])


async def _accepted_once(acknowledged: asyncio.Future) -> bytes:
    """Ack mode: 202 once the worker has the payment. There is no deadline of our own: a payment
    held here is delivered whatever the client does, so answering 5xx for it would be a lie; a
    client that gives up should post it again, and the repeat is charged once."""
    await acknowledged
    return ACCEPTED

