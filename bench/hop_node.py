"""A stand-in API node for the hop floor (`official.py --floor hop`): our HTTP layer, constant answers.

    python bench/hop_node.py SOCKET

It serves HTTP on a Unix socket exactly as an API node does (uvloop, httptools, the same
`HttpProtocol`) but answers every request with a prebuilt constant: no validation, no buffer, no
link, and nothing behind it. NGINX proxying to two of these is the cost of the hop the
architecture fixes (NGINX -> a Python process on a Unix socket -> NGINX) with none of our work
in it: stack p99 against this floor is what our code adds, this floor against NGINX's own is
what the hop costs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvloop  # noqa: E402

import floor  # noqa: E402
from rinha.http import responses  # noqa: E402
from rinha.http.protocol import HttpProtocol, Limits, ServerState  # noqa: E402

# The NGINX floor's answers (bench/floor.py), so both floors answer alike.
ACCEPTED = responses.build(202)
EMPTY_SUMMARY = responses.build(200, floor.EMPTY_SUMMARY.encode())
OK = responses.json(200, {"status": "ok"})


class ConstantApp:
    """202 to /payments, an empty summary to /payments-summary, 200 to the rest; any method."""

    def handle(self, method, path, query, body, headers):
        if path == b"/payments":
            return ACCEPTED
        if path == b"/payments-summary":
            return EMPTY_SUMMARY
        return OK


async def serve(socket_path: str) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if os.path.exists(socket_path):
        os.unlink(socket_path)
    app, limits, state = ConstantApp(), Limits(), ServerState()
    server = await loop.create_unix_server(lambda: HttpProtocol(app, limits, state), socket_path, backlog=4096)
    os.chmod(socket_path, 0o666)  # as an API node: NGINX may run as another user
    await stop.wait()
    server.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    uvloop.run(serve(sys.argv[1]))
