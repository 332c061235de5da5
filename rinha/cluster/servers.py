"""The engines of a throwaway cluster, in a run directory: three nats-server processes as one
JetStream cluster, and a PostgreSQL instance run as the `postgres` user (it refuses root).

Used by `rinha stack --cluster` and by the tests. Credentials are made per run: a NATS user and
password (clients and routes alike), a PostgreSQL password (scram over TCP; nothing else listens).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
PG_BIN = Path(os.environ.get("RINHA_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"


def write_private(path: Path, text: str) -> None:
    """Writes a file only its owner may read (it holds a password), never readable even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _wait_port(port: int, deadline: float, process: subprocess.Popen, what: str) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on {port} in time")


@dataclass
class NatsCluster:
    run_dir: Path
    client_ports: list[int]
    cluster_ports: list[int]
    user: str = "rinha"
    password: str = field(default_factory=lambda: secrets.token_hex(16))
    processes: list[subprocess.Popen | None] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Every server, with credentials: the value of RINHA_NATS_URL."""
        return ",".join(f"nats://{self.user}:{self.password}@127.0.0.1:{port}" for port in self.client_ports)

    def config(self, i: int) -> Path:
        routes = ", ".join(f"nats-route://{self.user}:{self.password}@127.0.0.1:{port}"
                           for j, port in enumerate(self.cluster_ports) if j != i)
        path = self.run_dir / f"nats{i + 1}.conf"
        write_private(path, f"""server_name: n{i + 1}
listen: 127.0.0.1:{self.client_ports[i]}
jetstream {{ store_dir: "{self.run_dir / f'nats{i + 1}'}" }}
authorization {{ user: {self.user}, password: "{self.password}" }}
cluster {{
  name: rinha
  listen: 127.0.0.1:{self.cluster_ports[i]}
  authorization {{ user: {self.user}, password: "{self.password}" }}
  routes: [{routes}]
}}
""")
        return path

    def start(self, timeout_s: float = 20.0) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.processes = [None] * len(self.client_ports)
        for i in range(len(self.client_ports)):
            self.start_one(i)
        deadline = time.monotonic() + timeout_s
        for i, port in enumerate(self.client_ports):
            _wait_port(port, deadline, self.processes[i], f"nats-server {i + 1}")

    def start_one(self, i: int) -> subprocess.Popen:
        with open(self.run_dir / f"nats{i + 1}.log", "ab") as log:  # the child keeps its own copy
            self.processes[i] = subprocess.Popen([NATS_SERVER, "-c", str(self.config(i))], stdout=log, stderr=log)
        return self.processes[i]

    def kill(self, i: int) -> None:
        """SIGKILL, as a crash would."""
        process = self.processes[i]
        process.kill()
        process.wait()

    def stop(self) -> None:
        for process in self.processes:
            if process is not None and process.poll() is None:
                process.terminate()
        for process in self.processes:
            if process is not None:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@dataclass
class Postgres:
    run_dir: Path
    port: int
    user: str = "rinha"
    password: str = field(default_factory=lambda: secrets.token_hex(16))
    process: subprocess.Popen | None = None

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "pgdata"

    @property
    def dsn(self) -> str:
        """The value of RINHA_PG_DSN."""
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self) -> dict:
        entry = pwd.getpwnam(PG_USER)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []} if os.getuid() == 0 else {}

    def init(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir()
        pwfile = self.run_dir / "pg.pw"
        write_private(pwfile, self.password + "\n")
        if os.getuid() == 0:
            entry = pwd.getpwnam(PG_USER)
            for path in (self.data_dir, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            os.chmod(self.data_dir, 0o700)
        subprocess.run([str(PG_BIN / "initdb"), "-D", str(self.data_dir), "-U", self.user, f"--pwfile={pwfile}",
                        "--auth-host=scram-sha-256", "--auth-local=reject", "-E", "UTF8", "--no-sync"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **self._as_postgres())
        pwfile.unlink()

    def start(self, timeout_s: float = 20.0) -> None:
        with open(self.run_dir / "postgres.log", "ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [str(PG_BIN / "postgres"), "-D", str(self.data_dir), "-p", str(self.port), "-k", str(self.data_dir),
                 "-c", "listen_addresses=127.0.0.1", "-c", "shared_buffers=32MB", "-c", "max_connections=100",
                 "-c", "max_wal_size=256MB"],
                stdout=log, stderr=log, **self._as_postgres())
        _wait_port(self.port, time.monotonic() + timeout_s, self.process, "postgres")

    def stop(self, *, immediate: bool = False) -> None:
        """SIGINT is PostgreSQL's fast shutdown; SIGQUIT its immediate one (a crash, WAL replay at start)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(3 if immediate else 2)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        self.stop(immediate=True)
        self.start()
