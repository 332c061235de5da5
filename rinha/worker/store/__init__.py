"""Where the worker keeps what it owes and what it has paid: see `base.Store`."""

from rinha.worker.store.base import Store
from rinha.worker.store.sqlite import SYNC_POLICIES, SqliteStore

__all__ = ["Store", "SqliteStore", "SYNC_POLICIES", "open_store"]


def open_store(config) -> Store:
    """The store a worker's settings ask for: SQLite in --data-dir, or in a private temporary folder."""
    return SqliteStore(config.data_dir or None, sync=config.sync if config.data_dir else "off",
                       commit_interval_ms=config.commit_interval_ms, recent_window_s=config.recent_window_s,
                       recent_ids=config.recent_ids)
