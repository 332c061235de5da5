"""`rinha stack`: NGINX, two API nodes, the worker and (unless URLs are given) two emulators.

Usable from the command line (runs until Ctrl-C or SIGTERM) and from Python (`Stack` is a context
manager, used by the tests and the load-test runner). It stops exactly the processes it started.

Each stack has its own secrets, given to its nodes through the environment (never argv, which
`ps` shows): the link secret, and the admin token that `POST /purge-payments` needs. Both are
random per Stack unless the config names them; Python users read `stack.admin_token` (and
`stack.admin_headers`), the command line prints the token.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable

from rinha.config import StackConfig
from rinha.probe import answers_http

REPO_NGINX_CONF = Path(__file__).resolve().parents[2] / "nginx.conf"
DOCKER_SOCKET_DIR = "/run/rinha"
DOCKER_PORT = "listen 9999"
STOP_TIMEOUT_S = 10.0
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes on Linux, with the terminating NUL


class StackError(Exception):
    pass


def render_nginx_conf(template: str, *, port: int, socket_dir: str) -> str:
    """The repo's nginx.conf with this machine's port and socket directory substituted."""
    if DOCKER_PORT not in template or DOCKER_SOCKET_DIR not in template:
        raise StackError(f"nginx.conf must contain '{DOCKER_PORT}' and '{DOCKER_SOCKET_DIR}' to be rendered")
    return template.replace(DOCKER_PORT, f"listen 127.0.0.1:{port}").replace(DOCKER_SOCKET_DIR, socket_dir)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    expected_exit: bool = False
    pump: threading.Thread | None = None


@dataclass
class Stack:
    """The processes of one local deployment. `start()` returns once every one answers."""

    config: StackConfig
    python: str = sys.executable
    log: Callable[[str], None] = field(default=lambda line: print(line, flush=True))
    node_log_level: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    # Off for the latency floor (bench/floor.py): emulators and NGINX only, NGINX answering itself
    # through the configuration `render_conf` makes of the repo's nginx.conf.
    with_nodes: bool = True
    render_conf: Callable[..., str] = render_nginx_conf
    # With the nodes off: a stand-in started on each API socket (its path appended to this argv)
    # for NGINX to proxy to, such as the hop floor's bench/hop_node.py.
    stand_in: list[str] | None = None
    children: list[Child] = field(default_factory=list)
    died: list[str] = field(default_factory=list)
    admin_token: str = field(init=False, repr=False)
    link_secret: str = field(init=False, repr=False)
    nats: object = None       # cluster mode: rinha.cluster.servers.NatsCluster
    postgres: object = None   # cluster mode: rinha.cluster.servers.Postgres

    def __post_init__(self) -> None:
        self.admin_token = self.config.admin_token or secrets.token_urlsafe(32)
        self.link_secret = self.config.link_secret or secrets.token_urlsafe(32)

    @property
    def admin_headers(self) -> dict[str, str]:
        """The header that authorises `POST /purge-payments` on this stack."""
        return {"Authorization": f"Bearer {self.admin_token}"}

    @property
    def run_dir(self) -> Path:
        return Path(self.config.run_dir)

    @property
    def default_url(self) -> str:
        return self.config.default_url or f"http://127.0.0.1:{self.config.default_port}"

    @property
    def fallback_url(self) -> str:
        return self.config.fallback_url or f"http://127.0.0.1:{self.config.fallback_port}"

    @property
    def worker_metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.config.worker_metrics_port}/metrics"

    @property
    def worker_data_dir(self) -> Path:
        return self.run_dir / "worker-data"

    def socket_path(self, n: int) -> str:
        return str(self.run_dir / f"api{n}.sock")

    def metrics_socket_path(self, n: int) -> str:
        """API node n's GET /metrics (--metrics-listen): a socket of its own, which NGINX never proxies."""
        return str(self.run_dir / f"api{n}-metrics.sock")

    def by_name(self, name: str) -> Child:
        return next(child for child in self.children if child.name == name)

    def pids(self) -> dict[str, int]:
        pids = {c.name: c.process.pid for c in self.children if c.process and c.process.poll() is None}
        if self.nats is not None:
            pids.update({f"nats{i + 1}": p.pid for i, p in enumerate(self.nats.processes) if p and p.poll() is None})
        if self.postgres is not None and self.postgres.process and self.postgres.process.poll() is None:
            pids["postgres"] = self.postgres.process.pid
        return pids

    @property
    def worker_names(self) -> list[str]:
        return [f"worker{i + 1}" for i in range(self.config.workers)] if self.config.cluster else ["worker"]

    def worker_ports(self, i: int) -> tuple[int, int]:
        """Link and metrics ports of worker i (0-based); the single node's worker is worker 0."""
        return self.config.worker_port + 2 * i, self.config.worker_metrics_port + 2 * i

    # Start and stop

    def start(self) -> "Stack":
        self._check_nginx()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o755)
        _check_reachable_by_others(self.run_dir)
        if len(os.fsencode(self.metrics_socket_path(1))) > MAX_SOCKET_PATH:
            raise StackError(f"{self.metrics_socket_path(1)} is too long for a Unix socket; choose a shorter --run-dir")
        cfg = self.config
        level = self.node_log_level or cfg.log_level
        rinha = [self.python, "-m", "rinha"]
        # A new stack is a new deployment: a store left by an earlier one would bring its
        # payments into this one. Restarts of the worker within this stack keep it.
        shutil.rmtree(self.worker_data_dir, ignore_errors=True)
        try:
            if not cfg.default_url:
                self._spawn("default", rinha + ["emulator", "--port", str(cfg.default_port), "--fee", "0.05"])
            if not cfg.fallback_url:
                self._spawn("fallback", rinha + ["emulator", "--port", str(cfg.fallback_port), "--fee", "0.15"])
            if self.with_nodes and cfg.cluster:
                self._start_engines()
                self._start_cluster_nodes(rinha, level)
            elif self.with_nodes:
                self._start_nodes(rinha, level)
            elif self.stand_in:
                self._start_stand_ins()
            conf = self.run_dir / "nginx.conf"
            conf.write_text(self.render_conf(REPO_NGINX_CONF.read_text(), port=cfg.port, socket_dir=str(self.run_dir)))
            self._spawn("nginx", [cfg.nginx, "-c", str(conf), "-e", "stderr",
                                  "-g", f"daemon off; pid {self.run_dir / 'nginx.pid'};"])
            if not cfg.default_url:
                self._wait_ready(lambda: answers_http(("127.0.0.1", cfg.default_port), _probe_path()), "default")
            if not cfg.fallback_url:
                self._wait_ready(lambda: answers_http(("127.0.0.1", cfg.fallback_port), _probe_path()), "fallback")
            self._wait_ready(lambda: answers_http(("127.0.0.1", cfg.port), "/healthcheck"), "nginx")
        except BaseException:
            self.stop()
            raise
        if self.with_nodes and cfg.cluster:
            behind = (f"{self.socket_path(1)}, {self.socket_path(2)} -> {cfg.workers} workers from 127.0.0.1:"
                      f"{cfg.worker_port}, NATS 127.0.0.1:{cfg.nats_port}-{cfg.nats_port + 2}, "
                      f"PostgreSQL 127.0.0.1:{cfg.pg_port}")
        elif self.with_nodes:
            behind = f"{self.socket_path(1)}, {self.socket_path(2)} -> worker 127.0.0.1:{cfg.worker_port}"
        elif self.stand_in:
            behind = f"{self.socket_path(1)}, {self.socket_path(2)}: stand-ins ({' '.join(self.stand_in)})"
        else:
            behind = "NGINX's own constant answers (the latency floor)"
        self.log(f"[stack] up: http://127.0.0.1:{cfg.port} -> {behind}; "
                 f"default {self.default_url}, fallback {self.fallback_url}"
                 + (f"; metrics: GET /metrics on {self.metrics_socket_path(1)}, {self.metrics_socket_path(2)} "
                    f"and {self.worker_metrics_url}" if self.with_nodes else ""))
        return self

    def stop(self) -> None:
        """SIGTERM to each child, front to back (NGINX first, emulators last), then SIGKILL if stuck."""
        for child in reversed(self.children):
            process = child.process
            if process is None or process.poll() is not None:
                continue
            child.expected_exit = True
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.log(f"[stack] {child.name} (pid {process.pid}) ignored SIGTERM; killing it")
                process.kill()
                process.wait()
        for child in self.children:
            if child.pump is not None:
                child.pump.join(timeout=2)
        if self.nats is not None:
            self.nats.stop()
        if self.postgres is not None:
            self.postgres.stop()

    def stop_child(self, name: str, sig: int = signal.SIGTERM) -> int:
        """Stops one child (SIGTERM by default; SIGKILL for crash drills) and returns its exit code."""
        child = self.by_name(name)
        child.expected_exit = True
        child.process.send_signal(sig)
        return child.process.wait(STOP_TIMEOUT_S)

    def restart(self, name: str) -> None:
        """Starts again a child that was stopped or died (crash drills)."""
        child = self.by_name(name)
        if child.process is not None and child.process.poll() is None:
            raise StackError(f"{name} is still running")
        child.expected_exit = False
        self._launch(child)

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # Internals

    def _start_nodes(self, rinha: list[str], level: str) -> None:
        """The worker and the two API nodes, returning once each answers (API nodes: linked)."""
        cfg = self.config
        self._spawn("worker", rinha + ["worker", "--listen", f"127.0.0.1:{cfg.worker_port}",
                                       "--default-url", self.default_url, "--fallback-url", self.fallback_url,
                                       "--metrics-listen", f"127.0.0.1:{cfg.worker_metrics_port}",
                                       "--data-dir", str(self.worker_data_dir), "--log-level", level])
        link_port = cfg.link_port or cfg.worker_port
        for n in (1, 2):
            self._spawn(f"api{n}", rinha + ["api", "--socket", self.socket_path(n), "--name", f"api{n}",
                                            "--metrics-listen", self.metrics_socket_path(n),
                                            "--worker", f"127.0.0.1:{link_port}", "--log-level", level])
        self._wait_ready(lambda: answers_http(("127.0.0.1", cfg.worker_port), None), "worker")
        for n in (1, 2):
            self._wait_ready(lambda n=n: answers_http(self.socket_path(n), "/healthcheck", b'"link":"up"'),
                             f"api{n}")

    def _start_engines(self) -> None:
        """Cluster mode's engines, with credentials made for this run (imported only here)."""
        from rinha.cluster.servers import NatsCluster, Postgres
        cfg = self.config
        self.nats = NatsCluster(self.run_dir / "nats", [cfg.nats_port + i for i in range(3)],
                                [cfg.nats_cluster_port + i for i in range(3)])
        self.postgres = Postgres(self.run_dir / "pg", cfg.pg_port)
        self.nats.start(cfg.start_timeout_s)
        self.postgres.init()
        self.postgres.start(cfg.start_timeout_s)
        self.log(f"[stack] NATS JetStream cluster on 127.0.0.1:{cfg.nats_port}-{cfg.nats_port + 2}, "
                 f"PostgreSQL on 127.0.0.1:{cfg.pg_port} (data in {self.postgres.data_dir})")

    def _start_cluster_nodes(self, rinha: list[str], level: str) -> None:
        """N workers on the shared engines, and two API nodes that fail over between them."""
        cfg = self.config
        engines = {"RINHA_NATS_URL": self.nats.url, "RINHA_PG_DSN": self.postgres.dsn}  # never in argv
        for i, name in enumerate(self.worker_names):
            port, metrics_port = self.worker_ports(i)
            self._spawn(name, rinha + ["worker", "--listen", f"127.0.0.1:{port}",
                                       "--default-url", self.default_url, "--fallback-url", self.fallback_url,
                                       "--metrics-listen", f"127.0.0.1:{metrics_port}", "--log-level", level],
                        env=engines)
        addresses = [f"127.0.0.1:{self.worker_ports(i)[0]}" for i in range(cfg.workers)]
        for n in (1, 2):
            # Each API node starts on a different worker, so the publishing is shared too.
            first = (n - 1) % cfg.workers
            order = addresses[first:] + addresses[:first]
            self._spawn(f"api{n}", rinha + ["api", "--socket", self.socket_path(n), "--name", f"api{n}",
                                            "--metrics-listen", self.metrics_socket_path(n),
                                            "--worker", ",".join(order), "--log-level", level])
        for i, name in enumerate(self.worker_names):
            self._wait_ready(lambda i=i: answers_http(("127.0.0.1", self.worker_ports(i)[0]), None), name)
        for n in (1, 2):
            self._wait_ready(lambda n=n: answers_http(self.socket_path(n), "/healthcheck", b'"link":"up"'),
                             f"api{n}")

    def _start_stand_ins(self) -> None:
        for n in (1, 2):
            self._spawn(f"api{n}", [*self.stand_in, self.socket_path(n)])
        for n in (1, 2):
            self._wait_ready(lambda n=n: answers_http(self.socket_path(n), "/healthcheck"), f"api{n}")

    def _check_nginx(self) -> None:
        if subprocess.run(["sh", "-c", f"command -v {self.config.nginx}"], capture_output=True).returncode != 0:
            raise StackError(f"NGINX not found ('{self.config.nginx}'). Install it: apt-get install -y nginx")

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        child = Child(name, argv, env or {})
        self.children.append(child)
        self._launch(child)

    def _launch(self, child: Child) -> None:
        # The stack's secrets first, so a test can give one node a wrong one through extra_env.
        env = {**os.environ, "RINHA_LINK_SECRET": self.link_secret, "RINHA_ADMIN_TOKEN": self.admin_token,
               **self.extra_env, **child.env, "PYTHONUNBUFFERED": "1"}
        child.process = subprocess.Popen(child.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        child.pump = threading.Thread(target=self._pump, args=(child, child.process), daemon=True,
                                      name=f"log-{child.name}")
        child.pump.start()

    def _pump(self, child: Child, process: subprocess.Popen) -> None:
        """Streams one child's output with its name in front, then reports how it ended."""
        stream: IO[bytes] = process.stdout
        for raw in iter(stream.readline, b""):
            self.log(f"[{child.name}] {raw.decode(errors='replace').rstrip()}")
        stream.close()
        code = process.wait()
        if not child.expected_exit:
            self.died.append(child.name)
            self.log(f"[stack] !!! {child.name} (pid {process.pid}) DIED with exit code {code} !!!")

    def _wait_ready(self, probe: Callable[[], bool], name: str) -> None:
        deadline = time.monotonic() + self.config.start_timeout_s
        child = self.by_name(name)
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise StackError(f"{name} exited with code {child.process.returncode} while starting")
            if probe():
                return
            time.sleep(0.05)
        raise StackError(f"{name} did not answer within {self.config.start_timeout_s} s")


def _check_reachable_by_others(directory: Path) -> None:
    """NGINX's workers run unprivileged: every folder above the sockets must let them through."""
    for folder in [directory, *directory.resolve().parents]:
        if not os.stat(folder).st_mode & 0o001:
            raise StackError(f"{folder} is not searchable by other users, so NGINX's workers could not reach "
                             f"the API sockets in {directory}; choose another --run-dir")


def _probe_path() -> str:
    # An emulator is up when it answers a lookup: 404 for an id nobody stored. Never the health
    # endpoint, whose rate limit belongs to the worker.
    return f"/payments/{uuid.uuid4()}"


def run(config: StackConfig) -> int:
    stack = Stack(config)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        stack.start()
    except StackError as exc:
        print(f"rinha stack: {exc}", file=sys.stderr)
        return 1
    if not config.admin_token:  # one it made: say it, or nobody could purge this stack
        stack.log(f"[stack] admin token of this run (POST /purge-payments): {stack.admin_token}")
    stack.log("[stack] running; Ctrl-C stops everything")
    stopping.wait()
    stack.log("[stack] stopping")
    stack.stop()
    return 1 if stack.died else 0
