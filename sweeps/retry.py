"""Retry accounting: a trial whose job died (killed, cancelled, out of time, node lost) is failed and
queued again up to max_retry times, by Optuna's RetryHeartbeatStaleTrialCallback; the retry resumes
the dead attempt's run from its last resume state, and the study counts each trial once."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Optional

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from harness.store import CONFIG
from sweeps.storage import has_heartbeats, trial_id

log = logging.getLogger(__name__)
DONE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def accounted_for(trials: list) -> list:
    """Finished trials, less failed attempts that were retried: each trial of the sweep counts once."""
    retried = {number for t in trials for number in RetryHeartbeatStaleTrialCallback.retry_history(t)}
    return [t for t in trials if t.state in DONE and t.number not in retried]


def first_attempt(study, trial: optuna.trial.FrozenTrial) -> Optional[tuple]:
    """(run directory, run name) of the attempt a retried trial repeats (its job died mid-run), when
    that attempt began a stage; the retry resumes it from its last resume state."""
    first = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
    if first is None:
        return None
    run_dir = Path(study.trials[first].user_attrs["run_dir"])
    saved = sorted(run_dir.glob(f"*/{CONFIG}"))
    return (run_dir, json.loads(saved[0].read_text())["run_name"]) if saved else None


def fail_and_retry(study, storage, trial, error: Exception, retry: RetryHeartbeatStaleTrialCallback) -> None:
    """A job that died outside its task function (a SLURM job cancelled or out of time, a joblib
    worker killed) fails its trial, which `retry` queues again. With heartbeats this waits until the
    trial is found stale: a cancelled job may still run out its grace, and the retry must not start
    beside it. A journal file has none, so there it happens at once."""
    log.warning("trial %d: its job died (%s: %s)", trial.number, type(error).__name__, error)
    if has_heartbeats(storage):
        return  # the next ask fails it once stale, and Optuna's callback queues the retry
    # What the retry inherits, before this attempt's outcome: a copy, since a journal's trials are
    # its live objects and Optuna's callback appends to the retry history it is given.
    attempt = copy.deepcopy(storage.get_trial(trial_id(trial)))
    try:
        trial.set_user_attr("status", "failed")
        trial.set_user_attr("error", f"{type(error).__name__}: {error}"[:2000])
        failed = storage.set_trial_state_values(trial_id(trial), state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return  # it told its outcome (a cancelled job runs out its grace) before it died
    if failed:
        retry(study, attempt)
