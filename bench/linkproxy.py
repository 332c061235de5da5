"""A TCP proxy between the API nodes and the worker that can cut the link on demand.

Runs its own event loop in a thread. `cut(seconds)` drops every proxied connection and refuses
new ones for that long, as a network partition between the API nodes and the worker would.
"""

from __future__ import annotations

import asyncio
import threading


class LinkProxy:
    def __init__(self, listen_port: int, target_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.listen_port = listen_port
        self.target_port = target_port
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.AbstractServer | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.cuts = 0
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="link-proxy")

    def start(self) -> "LinkProxy":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(5)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._drop_all(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    def cut(self, seconds: float) -> None:
        """Blocks for `seconds` while the link is down, then lets connections in again."""
        asyncio.run_coroutine_threadsafe(self._drop_all(), self.loop).result(5)
        self.cuts += 1
        threading.Event().wait(seconds)
        asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(5)

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(self._pipe_client, self.host, self.listen_port)

    async def _drop_all(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    async def _pipe_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.writers.update((writer, upstream_writer))
        await asyncio.gather(self._pump(reader, upstream_writer), self._pump(upstream_reader, writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.writers.discard(writer)
            writer.transport.abort()
