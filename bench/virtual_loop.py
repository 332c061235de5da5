"""A minimal asyncio event loop on a virtual clock, for the evaluator (bench/evaluate.py).

Nothing is ever ready on a socket in a simulation, so the selector machinery of asyncio's own
loops is pure cost: `VirtualLoop` keeps only a ready queue and a timer heap. When nothing is
ready, the clock jumps to the earliest timer instead of sleeping. Its step follows
`BaseEventLoop._run_once`: due timers join the ready queue after what is already there, then
exactly the callbacks ready at the start of the step run, each in its context. Real
asyncio Tasks and Futures (the C ones) run on it unchanged: `asyncio.sleep`, `wait`,
`wait_for`, `gather`, `Event` and cancellation all go through `call_soon` / `call_at`.

Against a `SelectorEventLoop` whose selector advances the clock, a step costs about a third:
no `Handle` object per callback, timers ordered by tuples in C, no debug checks.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
from asyncio import events
from collections import deque

# Timers this close to the clock are due (asyncio's loops use their clock's resolution).
RESOLUTION_S = 1e-9


class Timer:
    """What `call_at` returns: enough of `asyncio.TimerHandle` to be cancelled and read."""

    __slots__ = ("when_s", "callback", "args", "context", "_cancelled")

    def __init__(self, when_s: float, callback, args: tuple, context) -> None:
        self.when_s = when_s
        self.callback = callback
        self.args = args
        self.context = context
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True
        self.callback = self.args = self.context = None  # let what it held go at once

    def cancelled(self) -> bool:
        return self._cancelled

    def when(self) -> float:
        return self.when_s


class VirtualLoop(asyncio.AbstractEventLoop):
    """Runs real coroutines, tasks and futures; its `time()` moves only when nothing is ready."""

    def __init__(self) -> None:
        self.now = 0.0
        self._ready: deque = deque()          # (callback, args, context) ready to run
        self._timers: list = []               # heap of (when, sequence, Timer)
        self._sequence = itertools.count()    # equal times run in the order they were set
        self._running = False
        self._closed = False
        self.steps = 0                        # loop steps run, for whoever measures the loop
        # The three calls made most often (by the dispatcher and by every C Future's __init__),
        # as C callables: no Python frame each. They stand for the methods below.
        self.time = functools.partial(getattr, self, "now")
        self.get_debug = False.__bool__
        self.create_future = functools.partial(asyncio.Future, loop=self)

    # Time and scheduling

    def time(self) -> float:
        return self.now

    def call_soon(self, callback, *args, context=None):
        self._ready.append((callback, args, context))
        return None  # asyncio's own callers (Futures, Tasks) ignore it; nothing here cancels one

    def call_soon_threadsafe(self, callback, *args, context=None):
        return self.call_soon(callback, *args, context=context)

    def call_at(self, when, callback, *args, context=None) -> Timer:
        timer = Timer(when, callback, args, context)
        heapq.heappush(self._timers, (when, next(self._sequence), timer))
        return timer

    def call_later(self, delay, callback, *args, context=None) -> Timer:
        return self.call_at(self.now + delay, callback, *args, context=context)

    def create_future(self) -> asyncio.Future:
        return asyncio.Future(loop=self)

    def create_task(self, coro, *, name=None, context=None) -> asyncio.Task:
        if context is None:
            return asyncio.Task(coro, loop=self, name=name)
        return asyncio.Task(coro, loop=self, name=name, context=context)

    # Running

    def run_until_complete(self, future):
        if self._closed:
            raise RuntimeError("Event loop is closed")
        future = asyncio.ensure_future(future, loop=self)
        ready = self._ready
        timers = self._timers
        heappop = heapq.heappop
        self._running = True
        events._set_running_loop(self)
        try:
            while not future.done():
                if not ready:
                    while timers and timers[0][2]._cancelled:
                        heappop(timers)
                    if not timers:
                        raise RuntimeError("simulation deadlock: nothing ready and no timer set")
                    if timers[0][0] > self.now:
                        self.now = timers[0][0]
                due = self.now + RESOLUTION_S
                while timers and timers[0][0] <= due:
                    timer = heappop(timers)[2]
                    if not timer._cancelled:
                        ready.append((timer.callback, timer.args, timer.context))
                for _ in range(len(ready)):
                    callback, args, context = ready.popleft()
                    if context is None:
                        callback(*args)
                    else:
                        context.run(callback, *args)
                self.steps += 1
        finally:
            self._running = False
            events._set_running_loop(None)
        return future.result()

    def is_running(self) -> bool:
        return self._running

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._ready.clear()
        self._timers.clear()
        del self.time, self.create_future  # they hold the loop: no cycle left behind

    async def shutdown_asyncgens(self) -> None:
        return None

    def get_debug(self) -> bool:
        return False

    def set_debug(self, enabled: bool) -> None:
        if enabled:
            raise ValueError("VirtualLoop has no debug mode")

    def default_exception_handler(self, context: dict) -> None:
        # A simulation that lost an exception is a simulation that is wrong: say it loudly.
        raise RuntimeError(f"unhandled in the simulation: {context.get('message')}") from context.get("exception")

    def call_exception_handler(self, context: dict) -> None:
        message = context.get("message", "")
        if "exception was never retrieved" in message or "Task was destroyed" in message:
            return  # garbage of cancelled work at teardown, as asyncio's own loop only logs it
        self.default_exception_handler(context)
