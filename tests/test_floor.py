"""The latency floors: real NGINX with the repo's settings answering by itself (bench/floor.py), or
proxying to stand-ins that answer constants (the hop floor, bench/hop_node.py)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import aiohttp
import pytest

from conftest import stack_config
from rinha.stack.launcher import REPO_NGINX_CONF, Stack

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import official  # noqa: E402
from floor import render_floor_conf  # noqa: E402
from pyspy import top  # noqa: E402


def test_the_floor_keeps_every_setting_of_nginx_conf_but_the_proxying():
    stack_conf = render_floor_conf(REPO_NGINX_CONF.read_text(), port=12345, socket_dir="/tmp/x")
    for line in REPO_NGINX_CONF.read_text().splitlines():
        setting = line.strip()
        if setting.startswith(("proxy_", "location /")) or setting == "}" or not setting or setting.startswith("#"):
            continue
        assert setting.replace("listen 9999", "listen 127.0.0.1:12345").replace("/run/rinha", "/tmp/x") in stack_conf
    assert "proxy_pass" not in stack_conf
    assert "return 202;" in stack_conf


def test_the_floor_refuses_a_conf_it_cannot_read():
    conf = REPO_NGINX_CONF.read_text()
    with pytest.raises(ValueError):
        render_floor_conf(conf.replace("location / {", "location /api/ {"), port=1, socket_dir="/tmp/x")
    with pytest.raises(ValueError):
        render_floor_conf(conf.replace("        location / {", "        location / { }\n        location / {"),
                          port=1, socket_dir="/tmp/x")


async def test_the_floor_answers_every_route_itself_with_nothing_behind_it():
    run_dir = tempfile.mkdtemp(prefix="rinha-test-")
    try:
        with Stack(stack_config(run_dir), log=lambda line: None, with_nodes=False,
                   render_conf=render_floor_conf) as floor:
            assert set(floor.pids()) == {"default", "fallback", "nginx"}
            base = f"http://127.0.0.1:{floor.config.port}"
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{base}/payments", json={"correlationId": "x", "amount": 1}) as response:
                    assert response.status == 202
                    assert await response.read() == b""
                async with session.get(f"{base}/payments-summary?from=2020-01-01T00:00:00Z") as response:
                    assert response.status == 200
                    body = await response.json()
                    assert body["default"]["totalRequests"] == body["fallback"]["totalRequests"] == 0
                async with session.post(f"{base}/purge-payments") as response:
                    assert response.status == 200
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


async def test_the_hop_floor_proxies_to_stand_ins_that_answer_constants():
    run_dir = tempfile.mkdtemp(prefix="rinha-test-")
    try:
        with Stack(stack_config(run_dir), log=lambda line: None, with_nodes=False,
                   stand_in=[sys.executable, str(BENCH / "hop_node.py")]) as hop:
            assert set(hop.pids()) == {"default", "fallback", "nginx", "api1", "api2"}
            base = f"http://127.0.0.1:{hop.config.port}"
            async with aiohttp.ClientSession() as session:
                for _ in range(4):  # NGINX's round robin: both stand-ins answer
                    async with session.post(f"{base}/payments", data=b"not even JSON") as response:
                        assert response.status == 202
                async with session.get(f"{base}/payments-summary") as response:
                    assert response.status == 200
                    body = await response.json()
                    assert body["default"]["totalRequests"] == body["fallback"]["totalRequests"] == 0
            hop.stop_child("api1")
            async with aiohttp.ClientSession() as session:  # proof that NGINX went through the sockets
                for _ in range(4):
                    async with session.post(f"{base}/payments", data=b"{}") as response:
                        assert response.status == 202
            hop.stop_child("api2")
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{base}/payments", data=b"{}") as response:
                    assert response.status == 502
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def test_official_floor_flag_names_the_floor():
    assert official.parse_args([]).floor is None
    assert official.parse_args(["--floor"]).floor == "nginx"
    assert official.parse_args(["--floor", "hop"]).floor == "hop"
    for refused in (["--floor", "hop", "--ack-mode"], ["--floor", "--profile"], ["--floor", "other"]):
        with pytest.raises(SystemExit):
            official.parse_args(refused)


def test_profile_top_counts_own_and_total_samples(tmp_path):
    collapsed = tmp_path / "profile.collapsed.txt"
    collapsed.write_text("run (loop.py:1);handle (routes.py:5);parse (validation.py:9) 6\n"
                         "run (loop.py:1);handle (routes.py:5) 3\n"
                         "run (loop.py:1);write (protocol.py:7) 1\n")
    rows = {line[18:]: line.split()[:2] for line in top(collapsed).splitlines()[2:]}
    assert rows["parse (validation.py:9)"] == ["60.0", "60.0"]
    assert rows["handle (routes.py:5)"] == ["30.0", "90.0"]
    assert rows["write (protocol.py:7)"] == ["10.0", "10.0"]
    assert "run (loop.py:1)" not in rows  # never a leaf: no samples of its own
