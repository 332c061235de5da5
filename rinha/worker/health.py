"""The one health poller per processor in the whole system (only the worker runs it).

The processors allow one `GET /payments/service-health` per fixed 5 s window. Calls spaced more
than a window apart can never share one, so the poller never sees a 429 from its own pace (the
first call also waits an interval, for the case of a restarted worker); if something else spends
the window, it obeys `Retry-After`. It runs beside the payment flow: a
slow or refused answer only delays the next poll.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import aiohttp
import orjson

log = logging.getLogger(__name__)


class HealthPoller:
    def __init__(self, name: str, base_url: str, session_factory: Callable[[], aiohttp.ClientSession], *,
                 interval_s: float, timeout_s: float, on_report: Callable[[bool, int], None]) -> None:
        self.name = name
        self.url = base_url.rstrip("/") + "/payments/service-health"
        self.session_factory = session_factory
        self.interval_s = interval_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.on_report = on_report
        self.polls = 0
        self.refusals = 0  # 429s seen: should stay 0
        self.reachable: bool | None = None  # as of the last poll; a change is logged, not every poll
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        # A worker restarted after a crash cannot know when its predecessor last polled: waiting
        # one interval first keeps even that pair of calls in different windows.
        await asyncio.sleep(self.interval_s)
        while True:
            started = loop.time()
            wait_s = self.interval_s
            try:
                wait_s = max(wait_s, await self.poll_once())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let the poller die: the router just keeps its last view
                log.warning("health poll failed", extra={"processor": self.name, "error": repr(exc)})
            await asyncio.sleep(max(0.0, started + wait_s - loop.time()))

    async def poll_once(self) -> float:
        """One call; reports the answer and returns the least time before the next call may go."""
        self.polls += 1
        try:
            async with self.session_factory().get(self.url, timeout=self.timeout) as response:
                body = await response.read()
                if response.status == 429:
                    self.refusals += 1
                    retry_after = response.headers.get("Retry-After", "")
                    log.warning("health check answered 429", extra={"event": "health_refused", "processor": self.name,
                                                                    "retry_after": retry_after or None})
                    return float(retry_after) + 0.05 if retry_after.replace(".", "", 1).isdigit() else self.interval_s
                if response.status != 200:
                    log.warning("health check answered an error", extra={"processor": self.name,
                                                                         "status": response.status})
                    return 0.0
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            if self.reachable is not False:
                log.warning("health check unreachable", extra={"event": "health_unreachable",
                                                               "processor": self.name, "error": repr(exc)})
            self.reachable = False
            return 0.0
        if self.reachable is False:
            log.info("health check reachable again", extra={"event": "health_reachable", "processor": self.name})
        self.reachable = True
        report = orjson.loads(body)
        self.on_report(bool(report["failing"]), int(report["minResponseTime"]))
        return 0.0
