"""How a node process lives: its `serve(config, stop)` on uvloop until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal
from typing import Any, Awaitable, Callable

import uvloop


def run_until_signalled(serve: Callable[[Any, asyncio.Event], Awaitable[None]], config: Any) -> int:
    """Runs `serve(config, stop)`; SIGTERM or SIGINT sets `stop`, and `serve` shuts down gracefully."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop)

    uvloop.run(main())
    return 0
