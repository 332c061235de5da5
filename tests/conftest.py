"""Shared test helpers: free ports, polling with a deadline, real processes, a real stack, and a
reader of /metrics pages."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import tempfile
import socket
import time
import uuid
from dataclasses import replace
from typing import Awaitable, Callable

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rinha.config import StackConfig
from rinha.stack.launcher import Stack

TOKEN = {"X-Rinha-Token": "123"}
# For nodes a test starts itself (a Stack makes its own): one random secret per test session.
LINK_SECRET = secrets.token_urlsafe(32)


def node_env(**extra: str) -> dict[str, str]:
    """The environment of a node a test starts by hand: this session's link secret included."""
    return {**os.environ, "RINHA_LINK_SECRET": LINK_SECRET, **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def eventually(probe: Callable[[], Awaitable[object]], *, timeout: float = 10.0, interval: float = 0.05):
    """Polls `probe` until it returns something truthy; fails the test at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s; last value {last!r}")


async def answers_200(session: aiohttp.ClientSession, url: str) -> bool:
    """For `eventually`: whether `url` answers 200 yet (a refused connection is a no)."""
    try:
        async with session.get(url) as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


def new_id() -> str:
    return str(uuid.uuid4())


class StackClient:
    """Talks to a running stack the way its users and the auditor do."""

    def __init__(self, stack: Stack, session: aiohttp.ClientSession) -> None:
        self.stack = stack
        self.session = session
        self.base = f"http://127.0.0.1:{stack.config.port}"

    async def pay(self, correlation_id: str, amount: float = 19.90, base: str | None = None) -> int:
        async with self.session.post(f"{base or self.base}/payments",
                                     json={"correlationId": correlation_id, "amount": amount}) as response:
            await response.read()
            return response.status

    async def summary(self, **bounds: str) -> dict:
        async with self.session.get(f"{self.base}/payments-summary", params=bounds) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def processor_summary(self, name: str) -> dict:
        url = self.stack.default_url if name == "default" else self.stack.fallback_url
        async with self.session.get(f"{url}/admin/payments-summary", headers=TOKEN) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def processor_admin(self, name: str, setting: str, value: object) -> None:
        url = self.stack.default_url if name == "default" else self.stack.fallback_url
        async with self.session.put(f"{url}/admin/configurations/{setting}", json={setting: value},
                                    headers=TOKEN) as response:
            assert response.status == 200, await response.text()

    async def purge(self) -> None:
        for url in (self.stack.default_url, self.stack.fallback_url):
            async with self.session.post(f"{url}/admin/purge-payments", headers=TOKEN) as response:
                assert response.status == 200
        async with self.session.post(f"{self.base}/purge-payments", headers=self.stack.admin_headers) as response:
            assert response.status == 200

    async def recorded(self) -> int:
        body = await self.summary()
        return body["default"]["totalRequests"] + body["fallback"]["totalRequests"]


Labels = tuple[tuple[str, str], ...]


class MetricsPage:
    """A /metrics page read by prometheus_client's parser, which refuses a malformed line, label
    set or value. On top of it, what the parser lets through and these tests rely on: the page
    ends with a newline, every sample belongs to a family with a TYPE (the parser makes an
    `unknown` family of anything else), and no family or series appears twice (a lookup here
    would silently take one of the two).

    Families are named as the parser names them: a counter without its `_total` suffix."""

    def __init__(self, text: str) -> None:
        assert text.endswith("\n"), "the page must end with a newline"
        self.types: dict[str, str] = {}
        self.help: dict[str, str] = {}
        self.samples: dict[tuple[str, Labels], float] = {}
        for family in text_string_to_metric_families(text):
            assert family.type != "unknown", f"samples without a TYPE: {family.samples[:3]}"
            assert family.name not in self.types, f"family {family.name} given twice"
            self.types[family.name] = family.type
            self.help[family.name] = family.documentation
            for sample in family.samples:
                key = (sample.name, _key(sample.labels))
                assert key not in self.samples, f"series given twice: {key}"
                self.samples[key] = sample.value

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, _key(labels))]

    def values(self, name: str) -> dict[Labels, float]:
        return {labels: value for (sample, labels), value in self.samples.items() if sample == name}

    def histogram(self, name: str, **labels: str) -> tuple[dict[float, float], float, float]:
        """({le: cumulative count}, sum, count) of one histogram child."""
        buckets = {}
        for (sample, key), value in self.samples.items():
            rest = dict(key)
            le = rest.pop("le", None)
            if sample == f"{name}_bucket" and rest == labels:
                buckets[float(le)] = value
        return buckets, self.value(f"{name}_sum", **labels), self.value(f"{name}_count", **labels)


def _key(labels: dict[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


def stack_config(run_dir) -> StackConfig:
    return replace(StackConfig(), port=free_port(), worker_port=free_port(), worker_metrics_port=free_port(),
                   default_port=free_port(), fallback_port=free_port(), run_dir=str(run_dir), log_level="WARNING")


@contextlib.contextmanager
def running_stack(*, log_level: str = "WARNING", extra_env: dict[str, str] | None = None,
                  lines: list[str] | None = None):
    """A whole stack on free ports. Its folder is not under pytest's tmp_path: that one is private
    to root, and NGINX's workers are not root. Every process's output goes to `lines`."""
    run_dir = tempfile.mkdtemp(prefix="rinha-test-")
    lines = [] if lines is None else lines
    try:
        config = replace(stack_config(run_dir), log_level=log_level)
        with Stack(config, log=lines.append, extra_env=extra_env or {}) as running:
            yield running
        assert not running.died, "\n".join(lines[-50:])
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def stack():
    with running_stack() as running:
        yield running


@pytest.fixture
async def client(stack):
    async with aiohttp.ClientSession() as session:
        stack_client = StackClient(stack, session)
        await stack_client.purge()
        yield stack_client
