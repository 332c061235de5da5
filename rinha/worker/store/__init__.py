"""Where the worker keeps what it owes and what it has paid: see `base.Store`."""

from rinha.worker.store.base import Store
from rinha.worker.store.sqlite import SYNC_POLICIES, SqliteStore

__all__ = ["Store", "SqliteStore", "SYNC_POLICIES", "open_store"]


def open_store(config, queue) -> Store:
    """The store a worker's settings ask for: SQLite in --data-dir, or in a private temporary folder;
    in cluster mode (RINHA_NATS_URL and RINHA_PG_DSN) JetStream and PostgreSQL, whose clients are
    imported only then, so the single node never loads them. `queue` is where a store that
    brings payments itself (the cluster's consumer) puts them."""
    if config.nats_url:
        from rinha.cluster.store import ClusterStore
        return ClusterStore(queue, nats_url=config.nats_url, pg_dsn=config.pg_dsn, ack_wait_s=config.ack_wait_s,
                            replicas=config.nats_replicas, settle_s=config.settle_timeout_ms / 1000,
                            settle_recent_s=config.settle_recent_ms / 1000, call_timeout_s=config.request_timeout_s,
                            max_held=4 * config.senders, name=config.listen)
    return SqliteStore(config.data_dir or None, sync=config.sync if config.data_dir else "off",
                       commit_interval_ms=config.commit_interval_ms, recent_window_s=config.recent_window_s,
                       recent_ids=config.recent_ids)
