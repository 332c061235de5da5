"""A fake transport for driving the HTTP protocol without sockets (shared by the protocol tests)."""

from __future__ import annotations

import asyncio


class FakeTransport:
    """Records what the protocol does to its transport; never touches a socket.

    With `high_water` set it also plays a client that does not read: written bytes pile up in
    `buffered`, pause_writing is called past the high-water mark, and `drain` plays the client
    reading, with resume_writing below the low-water mark, as asyncio's transports do.
    """

    def __init__(self, high_water: int | None = None) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.reading_paused = False
        self.pause_calls = 0
        self.resume_calls = 0
        self.writes_after_close = 0
        self.changed = asyncio.Event()
        self.protocol = None  # set by tests that play a client which stops reading
        self.high_water = high_water
        self.buffered = 0
        self.writing_paused = False

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)

    def write(self, data: bytes) -> None:
        if self.closed:
            # asyncio and uvloop both drop a write made after close(); count it, keep it out.
            self.writes_after_close += 1
            return
        self.writes.append(bytes(data))
        self.changed.set()
        if self.high_water is not None:
            self.buffered += len(data)
            if not self.writing_paused and self.buffered > self.high_water:
                self.writing_paused = True
                self.protocol.pause_writing()

    def drain(self) -> None:
        self.buffered = 0
        if self.writing_paused:
            self.writing_paused = False
            self.protocol.resume_writing()

    def close(self) -> None:
        self.closed = True
        self.changed.set()

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        assert not self.reading_paused, "pause_reading called twice in a row"
        self.reading_paused = True
        self.pause_calls += 1
        self.changed.set()

    def resume_reading(self) -> None:
        assert self.reading_paused, "resume_reading called while reading was not paused"
        self.reading_paused = False
        self.resume_calls += 1
        self.changed.set()

    def get_extra_info(self, name, default=None):
        return default

    async def until(self, predicate, timeout: float = 2.0) -> None:
        """Waits (on transport activity, not on a clock) until `predicate()` holds."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()
