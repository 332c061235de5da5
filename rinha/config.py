"""One frozen settings object per role, built once at start-up from flags and environment.

Every field is a command-line flag (`--flush-interval-ms`) with an environment twin
(`RINHA_API_FLUSH_INTERVAL_MS`: prefix, role, field); the flag wins, then the
environment, then the default. Nothing reads `os.environ` after start-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping


def _opt(default: Any, help: str, env: str | None = None, *, secret: bool = False) -> Any:
    # A secret stays out of the config's repr, so logging a config never prints it.
    return field(default=default, metadata={"help": help, "env": env}, repr=not secret)


# Secrets (the admin token, the link secret): at least this long, and visible ASCII only (a header
# value and an environment variable carry them as they are). `rinha stack` makes 43-character ones.
MIN_SECRET_CHARS = 16


def check_secret(name: str, value: str, *, required: bool) -> None:
    if not value:
        if required:
            raise SystemExit(f"rinha: {name} is not set: the worker's link refuses every peer without it. Give the "
                             f"worker and the API nodes the same random value, e.g. {name}=$(openssl rand -hex 32)")
        return
    if len(value) < MIN_SECRET_CHARS:
        raise SystemExit(f"rinha: {name} must be at least {MIN_SECRET_CHARS} characters long")
    if not all(0x21 <= ord(ch) <= 0x7E for ch in value):
        raise SystemExit(f"rinha: {name} must be visible ASCII characters only (no spaces)")


def env_name(cls: type, f: dataclasses.Field) -> str:
    """`RINHA_<ROLE>_<FIELD>` (e.g. RINHA_API_FLUSH_INTERVAL_MS), unless the field names its own."""
    return f.metadata.get("env") or f"RINHA_{cls.ROLE.upper()}_{f.name.upper()}"


def flag_name(f: dataclasses.Field) -> str:
    return "--" + f.name.replace("_", "-")


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _converter(f: dataclasses.Field):
    kind = type(f.default)
    if kind is bool:
        return _parse_bool
    return kind


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Adds one flag per field of `cls`; defaults stay None so the environment can fill in."""
    for f in dataclasses.fields(cls):
        # A bare boolean flag (`--cluster`) means on; `--cluster off` still says it in full.
        boolean = {"nargs": "?", "const": True} if type(f.default) is bool else {}
        parser.add_argument(
            flag_name(f),
            dest=f.name,
            type=_converter(f),
            default=None,
            **boolean,
            metavar=f.name.upper(),
            help=f"{f.metadata['help']} (env {env_name(cls, f)}, default {f.default!r})",
        )


def build(cls: type, args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None):
    """Builds a frozen config: flag, else environment variable, else the field's default."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        given = getattr(args, f.name, None) if args is not None else None
        if given is not None:
            values[f.name] = given
            continue
        raw = environ.get(env_name(cls, f))
        if raw is not None:
            try:
                values[f.name] = _converter(f)(raw)
            except ValueError as exc:
                raise SystemExit(f"rinha: bad value for {env_name(cls, f)}: {exc}") from None
    config = cls(**values)
    config.check()
    return config


def split_host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"rinha: expected HOST:PORT, got {address!r}")
    return host or "127.0.0.1", int(port)


@dataclass(frozen=True)
class ApiConfig:
    """An API node: accepts payments over HTTP and batches them to the worker."""

    ROLE: ClassVar[str] = "api"

    socket: str = _opt("/tmp/rinha/api1.sock", "Unix socket to serve HTTP on (NGINX's upstream)")
    port: int = _opt(0, "also serve HTTP on this TCP port of 127.0.0.1 (0 = off; for development)")
    # Cluster mode lists every worker: the link fails over to the next live one and resends what
    # the lost one had not acknowledged (the queue drops repeats by correlationId).
    worker: str = _opt("127.0.0.1:9100", "HOST:PORT of the worker node's link; several, comma-separated, to fail over between")
    name: str = _opt("api", "name of this node in logs")
    # A flush every 2 ms keeps the worker no more than a few ms behind while batching ~1 payment
    # per ms of the official peak into one frame; what an API node can lose if killed is this window.
    flush_interval_ms: float = _opt(2.0, "how long a payment may wait in the local buffer before its batch is sent (not in ack mode)")
    batch_max: int = _opt(512, "most payments in one link frame")
    # 100k payments is minutes of the official peak rate and about 15 MB: room for a worker restart.
    buffer_max: int = _opt(100_000, "most payments held (unsent + unacknowledged) before POST answers 503")
    max_body_bytes: int = _opt(4096, "largest request body accepted; larger gets 413")
    max_header_bytes: int = _opt(8192, "largest request head (line + headers) accepted; larger gets 431")
    # Longer than NGINX's upstream keepalive_timeout (60 s in nginx.conf), so NGINX always closes
    # an idle upstream connection first and never sends a POST into one we are closing.
    keepalive_timeout_s: float = _opt(75.0, "idle keep-alive connections are closed after this")
    # NGINX sends each request whole, so behind it this never fires; it stops trickling clients.
    request_timeout_s: float = _opt(10.0, "a request whose head and body are not complete within this gets 408 and a close")
    # About 5-7 KB per idle connection: 4096 of them stay under 30 MB.
    max_connections: int = _opt(4096, "most open client connections; a new one past this gets 503 and is closed at once")
    summary_timeout_s: float = _opt(5.0, "how long GET /payments-summary waits for the worker before 504")
    reconnect_max_backoff_s: float = _opt(1.0, "ceiling of the link's reconnect backoff (starts at 20 ms, doubles)")
    # Off by default: answering before the worker has the payment costs a kill -9 of this node at
    # most one flush interval of payments, and keeps POST at the speed of one local append.
    ack_mode: bool = _opt(False, "answer POST /payments only once the worker has acknowledged the payment's batch")
    # On by default: counting costs an add or two per request (bench/api_throughput.py
    # --compare-metrics measures it); off leaves the hot path as it was and /metrics answers 404.
    metrics: str = _opt("on", "count requests and serve GET /metrics on --metrics-listen: on | off")
    # Never the public socket: NGINX proxies that one. A path (with a /) is a Unix socket.
    metrics_listen: str = _opt("127.0.0.1:9102", "where GET /metrics is served: HOST:PORT, or a Unix socket path (empty: nowhere)")
    # Empty disables purge (403): the contest's setup calls it without a token and ignores the failure.
    admin_token: str = _opt("", "token that POST /purge-payments needs (Authorization: Bearer ...); empty: purge disabled",
                            env="RINHA_ADMIN_TOKEN", secret=True)
    link_secret: str = _opt("", "shared secret proven to the worker in the link's handshake (required)",
                            env="RINHA_LINK_SECRET", secret=True)
    log_level: str = _opt("INFO", "logging level")

    def check(self) -> None:
        if self.metrics not in ("on", "off"):
            raise SystemExit("rinha: metrics must be on or off")
        check_secret("RINHA_ADMIN_TOKEN", self.admin_token, required=False)
        check_secret("RINHA_LINK_SECRET", self.link_secret, required=True)
        check_listen(self.metrics_listen)
        _positive(self, "flush_interval_ms", "batch_max", "buffer_max", "max_body_bytes", "max_header_bytes",
                  "keepalive_timeout_s", "request_timeout_s", "max_connections", "summary_timeout_s",
                  "reconnect_max_backoff_s")
        for address in self.worker.split(","):
            split_host_port(address)


# Routing policies (rinha/worker/router.py): ours, and the two baselines it is measured against.
# Default slowness gates: below the auditor's 1.5 s edge, robust with the narrower margin.
ROBUST_SLOW_S = 1.45
PROFIT_SLOW_S = 1.0
POLICIES = ("robust", "profit", "always-default", "fallback-on-failure")


@dataclass(frozen=True)
class WorkerConfig:
    """The worker node: owns the queue, the processor calls, routing and the ledger."""

    ROLE: ClassVar[str] = "worker"

    listen: str = _opt("127.0.0.1:9100", "HOST:PORT for the API nodes' link")
    default_url: str = _opt("http://127.0.0.1:8001", "base URL of the default (cheap) payment processor")
    fallback_url: str = _opt("http://127.0.0.1:8002", "base URL of the fallback (expensive) payment processor")
    # The official peak is ~550 payments/s; at the schedule's 100 ms delay that is ~55 calls in
    # flight, and draining a 20 s outage's backlog at 20 ms takes ~64 to finish in a few seconds.
    senders: int = _opt(64, "senders (calls in flight) the pool starts with")
    # The processors serve 800 calls at once: a slow one (1.2 s) carries ~650 payments/s at 800.
    max_senders: int = _opt(800, "most calls in flight at once: the pool grows to it while all senders are in calls and payments wait")
    # A ceiling only: each call's timeout follows the processor's latency (announced and seen),
    # never below 2.5 s, because a call we abandon may still be stored by the processor.
    request_timeout_s: float = _opt(10.0, "longest a call to a processor may take")
    # A processor stores a payment just before answering, so an answer already received but not yet
    # recorded is in their books and not in ours. A short wait lets such answers be recorded; a long
    # one would also count calls the processor stores only after the auditor read its books.
    settle_timeout_ms: float = _opt(5.0, "how long a summary waits for calls in flight inside its window")
    # Except the newest calls: no audit reads the last 1.5 s (SPEC.md section 3), so a window that
    # reaches into them is answered once the calls under way there have ended. A processor slow
    # but within the gate (1.2 s) then has its last second's payments counted, not left as lag.
    settle_recent_ms: float = _opt(1500.0, "a summary waits, until they end, for the calls in flight in its window "
                                   "stamped within this many ms of now (0 = off)")
    policy: str = _opt("robust", "routing policy: robust | profit (the contest preset) | always-default | "
                       "fallback-on-failure (the last two are baselines)")
    # Issue 14: a bound on how long any payment waits for default bounds the worst case at the
    # fee premium; bench/evaluate.py measured 2 s / 200 payments on generated schedules.
    hold_ms: float = _opt(2000.0, "robust policy: longest default may be out before waiting payments go to a healthy fallback")
    hold_payments: int = _opt(200, "robust policy: payments waiting for an out default before they go to a healthy fallback")
    # The official schedule's default outage lasts 20 s; 25 s waits it out with margin, and beyond
    # it a 15 % fee beats the risk of never being paid (a 5 % fee saved vs 100 % lost).
    fallback_after_s: float = _opt(25.0, "profit policy: how long default may be out before payments go to a healthy fallback")
    # The official peak is ~550 calls/s; 1,200 drains a 20 s outage's backlog in ~11 s while
    # leaving the API nodes most of the CPU. 0 turns pacing off.
    max_calls_per_s: float = _opt(1200.0, "most calls started per second, all processors together (0: no pacing)")
    failure_threshold: int = _opt(3, "consecutive failed calls that open a processor's circuit")
    probe_interval_ms: float = _opt(200.0, "while a circuit is open, one probe payment per this interval")
    max_probes: int = _opt(4, "probe payments in flight at once to an open circuit")
    # Below the auditor's 1.5 s: a payment answered faster is in both books before it is audited.
    # 0 picks the policy's own: profit keeps 1,000; robust lets a processor carry what it can
    # while it still answers inside the audit's 1.5 s edge.
    slow_ms: float = _opt(0.0, "a processor slower than this (announced, average, or a call in flight) gets no new payments "
                          "(0: robust 1450, other policies 1000)")
    # Calls more than 5 s apart never share the processors' fixed 5 s rate-limit window.
    health_interval_s: float = _opt(5.1, "time between two health checks of one processor (at least 5)")
    # Empty keeps everything in memory (tests, benchmarks); production sets a volume here.
    data_dir: str = _opt("", "folder of the SQLite store that makes the queue and the ledger survive a crash "
                         "(empty: a private temporary folder, lost on a crash)", env="RINHA_DATA_DIR")
    # normal: a commit is in the OS at once (kill -9 loses nothing) and on disk at the next WAL
    # checkpoint; full fsyncs every commit (see issue 13's closing note for what each costs).
    sync: str = _opt("normal", "when commits reach the disk: full (every commit) | normal (WAL checkpoints) | off")
    commit_interval_ms: float = _opt(5.0, "writes are committed together this long after the first; an ACK and a call wait for it")
    # The auditor asks for the last 15 s; 60 s answers it (and the teardown's 70 s mostly) from memory.
    recent_window_s: float = _opt(60.0, "stored payments this recent are also kept in memory for fast summaries")
    recent_ids: int = _opt(65536, "correlationIds accepted most recently, kept in memory to drop repeats without a query")
    # All interfaces: in Docker the scraper is another container on the backend network. No host
    # port is published, so nothing outside the deployment reaches it.
    metrics_listen: str = _opt("0.0.0.0:9101", "where GET /metrics is served: HOST:PORT, or a Unix socket path (empty: nowhere)")
    # No default: a worker without it would take payments and purges from anyone who reaches the port.
    link_secret: str = _opt("", "shared secret every API node must prove in the link's handshake (required)",
                            env="RINHA_LINK_SECRET", secret=True)
    # Cluster mode (rinha/cluster): both set, or neither. Empty keeps the single-node store above.
    nats_url: str = _opt("", "cluster mode: NATS servers of the JetStream queue, comma-separated nats://user:password@host:port "
                         "(empty: single node)", env="RINHA_NATS_URL", secret=True)
    pg_dsn: str = _opt("", "cluster mode: PostgreSQL DSN of the shared ledger, postgresql://user:password@host:port/db",
                       env="RINHA_PG_DSN", secret=True)
    # A worker that dies holding payments: they go to another worker this long after its last
    # sign of life (a live worker says "still working" on each one every third of it).
    ack_wait_s: float = _opt(4.0, "cluster mode: a payment held by a silent worker is redelivered after this")
    nats_replicas: int = _opt(3, "cluster mode: copies of the queue's stream (one per NATS server)")
    log_level: str = _opt("INFO", "logging level")

    def check(self) -> None:
        if bool(self.nats_url) != bool(self.pg_dsn):
            raise SystemExit("rinha: cluster mode needs both RINHA_NATS_URL and RINHA_PG_DSN")
        _positive(self, "ack_wait_s", "nats_replicas")
        _positive(self, "senders", "max_senders", "request_timeout_s", "settle_timeout_ms", "failure_threshold",
                  "probe_interval_ms", "max_probes", "hold_ms", "hold_payments")
        if self.slow_ms < 0:
            raise SystemExit("rinha: slow_ms must not be negative")
        if self.settle_recent_ms < 0:
            raise SystemExit("rinha: settle_recent_ms must not be negative")
        if self.max_calls_per_s < 0:
            raise SystemExit("rinha: max_calls_per_s must not be negative")
        if self.fallback_after_s < 0:
            raise SystemExit("rinha: fallback_after_s must not be negative")
        if self.health_interval_s < 5:
            raise SystemExit("rinha: health_interval_s must be at least 5 (the processors' rate-limit window)")
        if self.sync not in ("full", "normal", "off"):
            raise SystemExit("rinha: sync must be full, normal or off")
        _positive(self, "commit_interval_ms", "recent_window_s", "recent_ids")
        if self.policy not in POLICIES:
            raise SystemExit(f"rinha: policy must be one of {', '.join(POLICIES)}")
        split_host_port(self.listen)
        check_listen(self.metrics_listen)
        check_secret("RINHA_LINK_SECRET", self.link_secret, required=True)

    def slow_threshold_s(self) -> float:
        if self.slow_ms:
            return self.slow_ms / 1000
        return ROBUST_SLOW_S if self.policy == "robust" else PROFIT_SLOW_S


@dataclass(frozen=True)
class EmulatorConfig:
    """A stand-in for one payment processor, exact to SPEC.md section 2."""

    ROLE: ClassVar[str] = "emulator"

    port: int = _opt(8001, "TCP port to listen on")
    host: str = _opt("127.0.0.1", "address to listen on")
    fee: float = _opt(0.05, "fee per transaction, as a fraction of the amount")
    token: str = _opt("123", "initial admin token (header X-Rinha-Token)")
    rate_limit_seconds: float = _opt(5.0, "health endpoint: one call per this fixed window")
    max_concurrent: int = _opt(800, "payments served at once")
    max_queued: int = _opt(500, "payments waiting for a free slot before 429")
    log_level: str = _opt("WARNING", "logging level")

    def check(self) -> None:
        _positive(self, "rate_limit_seconds", "max_concurrent")


@dataclass(frozen=True)
class StackConfig:
    """The local launcher: NGINX, two API nodes, the worker and (unless URLs are given) two emulators."""

    ROLE: ClassVar[str] = "stack"

    port: int = _opt(9999, "port NGINX listens on")
    default_url: str = _opt("", "use this default processor instead of starting an emulator on :8001")
    fallback_url: str = _opt("", "use this fallback processor instead of starting an emulator on :8002")
    worker_port: int = _opt(9100, "TCP port of the worker's link")
    worker_metrics_port: int = _opt(9101, "TCP port of the worker's GET /metrics, on 127.0.0.1")
    link_port: int = _opt(0, "port the API nodes dial for the worker (0: worker_port; set it to put a proxy between)")
    default_port: int = _opt(8001, "port of the default emulator (when no --default-url)")
    fallback_port: int = _opt(8002, "port of the fallback emulator (when no --fallback-url)")
    run_dir: str = _opt("/tmp/rinha-stack", "where sockets, the rendered nginx.conf, pid files and the worker's store go")
    nginx: str = _opt("nginx", "the NGINX binary")
    start_timeout_s: float = _opt(20.0, "how long to wait for every process to answer")
    admin_token: str = _opt("", "admin token given to the API nodes (empty: a random one per run, see Stack.admin_token)",
                            env="RINHA_ADMIN_TOKEN", secret=True)
    link_secret: str = _opt("", "link secret given to the worker and the API nodes (empty: a random one per run)",
                            env="RINHA_LINK_SECRET", secret=True)
    # Cluster mode (rinha/cluster): 3 nats-server processes as one JetStream cluster, a throwaway
    # PostgreSQL in the run directory, two API nodes failing over between N workers, NGINX.
    cluster: bool = _opt(False, "cluster mode: workers on NATS JetStream and PostgreSQL (see README, Cluster mode)")
    workers: int = _opt(3, "cluster mode: how many workers (worker i links on worker_port + 2i, metrics on worker_metrics_port + 2i)")
    nats_port: int = _opt(14222, "cluster mode: client port of the first NATS server (the others follow it)")
    nats_cluster_port: int = _opt(16222, "cluster mode: route port of the first NATS server (the others follow it)")
    pg_port: int = _opt(15432, "cluster mode: port of the throwaway PostgreSQL")
    log_level: str = _opt("INFO", "logging level of the nodes")

    def check(self) -> None:
        _positive(self, "workers", "nats_port", "nats_cluster_port", "pg_port")
        _positive(self, "port", "worker_port", "worker_metrics_port", "default_port", "fallback_port",
                  "start_timeout_s")
        check_secret("RINHA_ADMIN_TOKEN", self.admin_token, required=False)
        check_secret("RINHA_LINK_SECRET", self.link_secret, required=False)


def is_unix_path(address: str) -> bool:
    """A listen address with a / in it is a Unix socket path; anything else is HOST:PORT."""
    return "/" in address


def check_listen(address: str) -> None:
    if address and not is_unix_path(address):
        split_host_port(address)


def _positive(config: Any, *names: str) -> None:
    for name in names:
        if not getattr(config, name) > 0:
            raise SystemExit(f"rinha: {name} must be positive, got {getattr(config, name)!r}")


ROLES: dict[str, type] = {
    "api": ApiConfig,
    "worker": WorkerConfig,
    "emulator": EmulatorConfig,
    "stack": StackConfig,
}


def markdown_tables() -> str:
    """The README's configuration tables, generated from the fields above (tests keep them equal)."""
    out = []
    for role, cls in ROLES.items():
        out.append(f"`rinha {role}`: {(cls.__doc__ or '').strip()}\n")
        out.append("| flag | environment | default | meaning |")
        out.append("|---|---|---|---|")
        for f in dataclasses.fields(cls):
            default = "(empty)" if f.default == "" else f"`{f.default!r}`"
            out.append(f"| `{flag_name(f)}` | `{env_name(cls, f)}` | {default} | {f.metadata['help']} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown_tables())
