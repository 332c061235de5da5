"""The deployment files obey the contest's rules (SPEC.md section 5) and agree with the code."""

from __future__ import annotations

import re
import socket
import urllib.parse
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


# docker-compose.cluster.yml: the topology of `rinha stack --cluster`, for Docker.

CLUSTER_DEPLOYER = {"RINHA_LINK_SECRET": "a" * 64, "RINHA_NATS_PASSWORD": "n" * 32, "RINHA_PG_PASSWORD": "p" * 32}


@pytest.fixture(scope="module")
def cluster_compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.cluster.yml").read_text())


def services_running(compose: dict, role: str) -> list[str]:
    return [name for name, service in compose["services"].items() if service.get("command", [None])[0] == role]


def test_the_cluster_compose_keeps_the_deployment_rules(cluster_compose):
    services = cluster_compose["services"]
    for name, service in services.items():
        assert "limits" in service.get("deploy", {}).get("resources", {}), name
        assert "replicas" not in service.get("deploy", {}), name
        assert service.get("network_mode") != "host" and not service.get("privileged", False), name
        assert service.get("platform") == "linux/amd64", name
    assert [name for name, service in services.items() if service.get("ports")] == ["nginx"]
    assert services["nginx"]["ports"] == ["9999:9999"]
    for name, network in cluster_compose["networks"].items():
        assert network.get("external") or network.get("driver", "bridge") == "bridge", name


def test_the_cluster_compose_is_the_topology_of_rinha_stack_cluster(cluster_compose):
    services = cluster_compose["services"]
    parser = cli.parser()
    workers = services_running(cluster_compose, "worker")
    apis = services_running(cluster_compose, "api")
    nats = [name for name, service in services.items() if str(service.get("image", "")).startswith("nats:")]
    assert len(workers) == config.StackConfig().workers and len(apis) == 2 and len(nats) == 3
    assert str(services["postgres"]["image"]).startswith("postgres:15")
    conf = (REPO / "nginx.conf").read_text()
    worker_port = config.split_host_port(services[workers[0]]["environment"]["RINHA_WORKER_LISTEN"])[1]
    firsts = set()
    for name in apis:
        settings = config.build(config.ApiConfig, parser.parse_args(services[name]["command"]),
                                environ={k: interpolate(str(v), CLUSTER_DEPLOYER)
                                         for k, v in services[name]["environment"].items()})
        assert f"server unix:{settings.socket};" in conf
        addresses = [config.split_host_port(a) for a in settings.worker.split(",")]
        assert sorted(addresses) == sorted((w, worker_port) for w in workers)  # fails over to every worker
        firsts.add(addresses[0])
    assert len(firsts) == 2  # each API node starts on a different worker
    for name in workers:
        assert "payment-processor" in services[name]["networks"]
        settings = config.build(config.WorkerConfig, parser.parse_args(services[name]["command"]),
                                environ={k: interpolate(str(v), CLUSTER_DEPLOYER)
                                         for k, v in services[name]["environment"].items()})
        assert settings.link_secret == "a" * 64
        urls = [urllib.parse.urlsplit(url) for url in settings.nats_url.split(",")]
        assert sorted(u.hostname for u in urls) == sorted(nats) and {u.port for u in urls} == {4222}
        assert {u.password for u in urls} == {"n" * 32}
        dsn = urllib.parse.urlsplit(settings.pg_dsn)
        assert (dsn.hostname, dsn.port, dsn.password) == ("postgres", 5432, "p" * 32)
        assert dsn.username == services["postgres"]["environment"]["POSTGRES_USER"]
        assert dsn.path == "/" + services["postgres"]["environment"]["POSTGRES_DB"]
    for name in nats:
        assert "./nats-cluster.conf:/etc/nats/nats-cluster.conf:ro" in services[name]["volumes"]


def test_the_cluster_compose_takes_every_secret_from_the_deployer(cluster_compose):
    for name, service in cluster_compose["services"].items():
        for key, raw in service.get("environment", {}).items():
            for secret in ("RINHA_LINK_SECRET", "RINHA_NATS_PASSWORD", "RINHA_PG_PASSWORD"):
                if secret in str(raw):
                    assert f"${{{secret}:?" in str(raw), (name, key)  # no default: refused when unset
                    with pytest.raises(LookupError):
                        interpolate(str(raw), {k: v for k, v in CLUSTER_DEPLOYER.items() if k != secret})
    worker_env = cluster_compose["services"]["worker1"]["environment"]
    assert "RINHA_NATS_URL" in worker_env and "RINHA_PG_DSN" in worker_env


def test_the_nats_config_of_the_cluster_compose_forms_a_jetstream_cluster(cluster_compose, tmp_path):
    """nats-cluster.conf as the compose runs it (its environment, deployer's password), with the
    service names and ports mapped to loopback: three real nats-server make one JetStream cluster
    with an R3 stream, and a wrong password is refused."""
    from rinha.cluster.servers import NATS_SERVER
    if not Path(NATS_SERVER).exists():
        pytest.skip("nats-server is not installed (.ci/run installs it)")
    import asyncio
    import nats as nats_client
    from nats.js.api import StreamConfig

    from conftest import free_port
    services = cluster_compose["services"]
    names = ["nats1", "nats2", "nats3"]
    client_ports = {n: free_port() for n in names}
    route_ports = {n: free_port() for n in names}
    template = (REPO / "nats-cluster.conf").read_text()
    processes = []
    try:
        for name in names:
            env = {k: interpolate(str(v), CLUSTER_DEPLOYER) for k, v in services[name]["environment"].items()}
            for other in names:  # the routes' service names -> loopback ports
                for key in list(env):
                    env[key] = env[key].replace(f"@{other}:6222", f"@127.0.0.1:{route_ports[other]}")
            conf = tmp_path / f"{name}.conf"
            conf.write_text(template.replace("0.0.0.0:4222", f"127.0.0.1:{client_ports[name]}")
                            .replace("0.0.0.0:6222", f"127.0.0.1:{route_ports[name]}")
                            .replace("store_dir: /data", f"store_dir: {tmp_path / name}"))
            processes.append(subprocess.Popen([NATS_SERVER, "-c", str(conf)], env=env,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        async def check() -> None:
            urls = [f"nats://rinha:{'n' * 32}@127.0.0.1:{client_ports[n]}" for n in names]
            nc = await nats_client.connect(servers=urls, connect_timeout=2, max_reconnect_attempts=-1)
            try:
                js = nc.jetstream(timeout=2)
                for _ in range(100):  # the cluster forms and elects a metadata leader within seconds
                    try:
                        info = await js.add_stream(StreamConfig(name="CHECK", subjects=["check"], num_replicas=3))
                        break
                    except Exception:  # noqa: BLE001 (no meta leader yet)
                        await asyncio.sleep(0.2)
                else:
                    raise AssertionError("no JetStream cluster formed")
                assert info.config.num_replicas == 3
                assert (await js.publish("check", b"x")).seq == 1
            finally:
                await nc.close()

        asyncio.run(check())
        # A wrong password, in NATS' own text protocol: INFO, then CONNECT is answered -ERR.
        with socket.create_connection(("127.0.0.1", client_ports["nats1"]), timeout=5) as sock:
            reader = sock.makefile("rb")
            assert reader.readline().startswith(b"INFO ")
            sock.sendall(b'CONNECT {"user":"rinha","pass":"wrong","verbose":false}\r\nPING\r\n')
            assert b"Authorization Violation" in reader.readline()
            reader.close()
    finally:
        for process in processes:
            process.kill()
            process.wait()
