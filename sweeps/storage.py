"""Where a study lives (a database, or Optuna's journal file), and the heartbeats that keep its running
trials alive: a trial whose job stops beating for the grace period is found stale, failed and retried."""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager

import optuna
import sqlalchemy

log = logging.getLogger(__name__)

SCHEMA_ATTEMPTS = 5
JOURNAL = "journal:///"  # journal:///path/to/study.log: Optuna's file journal, for shared file systems


def open_storage(url: str, **rdb_options):
    """An Optuna storage from a URL: a database (sqlite, postgresql, mysql) or a journal file."""
    if url.startswith(JOURNAL):
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url[len(JOURNAL) - 1:]))
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(url, **rdb_options)
        # Workers that start together on a fresh database race to create its tables; the losers retry.
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == SCHEMA_ATTEMPTS - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


def study_storage(url: str, heartbeat_interval: int, grace_period: int, retry):
    """The sweeper's storage: a database gets heartbeats, so that a trial whose job died is found stale and
    `retry` (Optuna's RetryHeartbeatStaleTrialCallback) queues it again; a journal file has none."""
    if url.startswith(JOURNAL):
        return open_storage(url)
    return open_storage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                        heartbeat_stale_trial_callback=retry)


def trial_id(trial) -> int:
    """The storage's id of a trial (live or frozen): what the storage's public methods take. Optuna
    keeps it private; this is the one place that reads it."""
    return trial._trial_id


def has_heartbeats(storage) -> bool:
    """A database keeps heartbeats; a journal file does not, so its trials are never found stale."""
    return isinstance(storage, optuna.storages.RDBStorage)


def beat(storage, trial_id: int) -> None:
    """One heartbeat. One that fails (a locked SQLite file, a database briefly away) is logged, and
    the next one tried: a trial that stopped beating while alive would be retried beside itself."""
    try:
        storage.record_heartbeat(trial_id)
    except Exception as error:
        log.warning("heartbeat of trial %d failed: %s", trial_id, error)


@contextmanager
def heartbeat(storage, trial_ids: list[int], interval: int):
    """Mark the trials alive every `interval` seconds while the block runs."""
    if not has_heartbeats(storage):
        yield
        return
    stop = threading.Event()

    def beat_all():
        for trial_id in trial_ids:
            beat(storage, trial_id)

    def beat_until_stopped():
        while not stop.wait(interval):
            beat_all()

    beat_all()  # at once: a trial with no heartbeat is never found stale
    thread = threading.Thread(target=beat_until_stopped, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
