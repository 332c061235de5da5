"""The deployment files obey the contest's rules (SPEC.md section 5) and agree with the code."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from rinha import cli, config
from rinha.stack.launcher import render_nginx_conf

REPO = Path(__file__).resolve().parents[1]
CPU_BUDGET = 1.5
MEMORY_BUDGET_MB = 350


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def megabytes(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)\s*([KMG]i?B?|[kmg])", text.strip()).groups()
    scale = {"k": 1 / 1024, "m": 1, "g": 1024}[unit[0].lower()]
    return float(number) * scale


def test_limits_sum_within_the_budget(compose):
    limits = [service["deploy"]["resources"]["limits"] for service in compose["services"].values()]
    assert sum(float(limit["cpus"]) for limit in limits) <= CPU_BUDGET
    assert sum(megabytes(limit["memory"]) for limit in limits) <= MEMORY_BUDGET_MB


def test_every_service_has_limits_and_no_forbidden_mode(compose):
    for name, service in compose["services"].items():
        assert "limits" in service.get("deploy", {}).get("resources", {}), name
        assert "replicas" not in service.get("deploy", {}), name
        assert service.get("network_mode") != "host", name
        assert not service.get("privileged", False), name
        assert service.get("platform", "linux/amd64") == "linux/amd64", name


def test_port_9999_and_two_api_nodes_behind_nginx(compose):
    services = compose["services"]
    assert services["nginx"]["ports"] == ["9999:9999"]
    assert sum(1 for service in services.values() if service.get("ports")) == 1
    api_nodes = [name for name, service in services.items() if service.get("command", [None])[0] == "api"]
    assert len(api_nodes) >= 2
    conf = (REPO / "nginx.conf").read_text()
    for name in api_nodes:
        socket = services[name]["environment"]["RINHA_API_SOCKET"]
        assert f"server unix:{socket};" in conf
        assert "sockets:/run/rinha" in services[name]["volumes"]
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in services["nginx"]["volumes"]
    assert "listen 9999" in conf


def test_networks_are_bridges_and_the_worker_reaches_the_processors(compose):
    networks = compose["networks"]
    assert networks["payment-processor"] == {"external": True}
    for name, network in networks.items():
        assert network.get("external") or network.get("driver", "bridge") == "bridge", name
    worker = compose["services"]["worker"]
    assert "payment-processor" in worker["networks"]
    command = worker["command"]
    assert command[command.index("--default-url") + 1] == "http://payment-processor-default:8080"
    assert command[command.index("--fallback-url") + 1] == "http://payment-processor-fallback:8080"


def test_the_worker_keeps_its_store_on_a_volume(compose):
    worker = compose["services"]["worker"]
    data_dir = worker["environment"]["RINHA_DATA_DIR"]
    assert any(volume.endswith(f":{data_dir}") and volume.split(":")[0] in compose["volumes"]
               for volume in worker["volumes"])


INTERPOLATION = re.compile(r"\$\{(\w+)(:[?-])?([^}]*)\}")


def interpolate(value: str, environ: dict[str, str]) -> str:
    """What `docker compose` makes of ${VAR}, ${VAR:-default} and ${VAR:?message}."""
    def one(match: re.Match) -> str:
        name, operator, rest = match.groups()
        if environ.get(name):
            return environ[name]
        if operator == ":?":
            raise LookupError(f"{name}: {rest}")
        return rest if operator == ":-" else ""
    return INTERPOLATION.sub(one, value)


def test_commands_parse_with_the_cli_and_build_valid_configs(compose):
    parser = cli.parser()
    deployer = {"RINHA_LINK_SECRET": "a" * 64}
    for service in compose["services"].values():
        if "build" not in service:
            continue
        args = parser.parse_args(service["command"])
        environment = {k: interpolate(str(v), deployer) for k, v in service.get("environment", {}).items()}
        settings = config.build(config.ROLES[args.role], args, environ=environment)
        if args.role in ("api", "worker"):
            assert settings.link_secret == "a" * 64
        if args.role == "api":
            host, port = config.split_host_port(settings.worker)
            worker_listen = compose["services"]["worker"]["environment"]["RINHA_WORKER_LISTEN"]
            assert (host, port) == ("worker", config.split_host_port(worker_listen)[1])
            assert settings.socket.startswith("/run/rinha/")


def test_the_dockerfile_builds_one_slim_non_root_image_for_every_role():
    dockerfile = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+\s+)?(\S+)", dockerfile, re.M)
    assert len(stages) >= 2  # wheels built once, then a clean runtime stage
    assert all("--platform=linux/amd64" in line for line in re.findall(r"^FROM.*$", dockerfile, re.M))
    assert all(image.startswith("python:3.11-slim") for _, image in stages)
    assert re.search(r"^USER\s+(?!root)\w+", dockerfile, re.M)
    assert "PYTHONDONTWRITEBYTECODE=1" in dockerfile and "PYTHONUNBUFFERED=1" in dockerfile
    assert re.search(r"^HEALTHCHECK .*rinha\.probe", dockerfile, re.M)
    assert re.search(r'^ENTRYPOINT \["rinha"\]', dockerfile, re.M)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", "bench", "tests"} <= set(ignored)


def test_the_local_rendering_of_nginx_conf_passes_nginx_t():
    if shutil.which("nginx") is None:
        pytest.fail("needs Debian's nginx: apt-get install -y nginx (make deps does it)")
    with tempfile.TemporaryDirectory() as folder:
        rendered = Path(folder) / "nginx.conf"
        rendered.write_text(render_nginx_conf((REPO / "nginx.conf").read_text(), port=19999, socket_dir=folder))
        check = subprocess.run(["nginx", "-t", "-c", str(rendered), "-g", f"pid {folder}/nginx.pid;"],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        text = rendered.read_text()
        assert "/run/rinha" not in text and f"server unix:{folder}/api1.sock;" in text
        assert "listen 127.0.0.1:19999" in text


def test_the_docker_nginx_conf_keeps_what_the_contest_and_latency_need():
    conf = (REPO / "nginx.conf").read_text()
    assert "access_log off;" in conf
    assert re.search(r"upstream api \{[^}]*keepalive \d+;", conf, re.S)
    assert 'proxy_set_header Connection "";' in conf and "proxy_http_version 1.1;" in conf


def test_the_link_secret_comes_from_the_deployer_and_nothing_carries_a_default(compose):
    """Compose refuses to start without RINHA_LINK_SECRET; the image and the code have no value."""
    for name, service in compose["services"].items():
        if "build" not in service:
            continue
        raw = service["environment"]["RINHA_LINK_SECRET"]
        assert raw.startswith("${RINHA_LINK_SECRET:?"), name
        with pytest.raises(LookupError):
            interpolate(raw, {})
        # The admin token is optional: without one, purge answers 403.
        if service["command"][0] == "api":
            assert interpolate(service["environment"]["RINHA_ADMIN_TOKEN"], {}) == ""
    assert "SECRET" not in (REPO / "Dockerfile").read_text()
    assert config.WorkerConfig().link_secret == config.ApiConfig().link_secret == ""
    for role in (config.WorkerConfig, config.ApiConfig):
        with pytest.raises(SystemExit, match="RINHA_LINK_SECRET is not set"):
            config.build(role, None, environ={})
        with pytest.raises(SystemExit, match="at least 16"):
            config.build(role, None, environ={"RINHA_LINK_SECRET": "short"})


def test_the_nginx_conf_does_not_serve_metrics_on_the_public_port():
    conf = (REPO / "nginx.conf").read_text()
    assert re.search(r"location = /metrics \{[^}]*return 404", conf)
