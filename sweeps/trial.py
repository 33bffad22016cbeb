"""The trial's side of an Optuna sweep: report held-out values while training, stop if pruned,
beat while alive, and tell the study the outcome.

The sweeper passes `trial.storage`, `trial.study_name` and `trial.trial_id` to each job, so
this works whichever Hydra launcher ran the job: a local process, joblib, or SLURM. Because the
job itself beats and tells, a job whose sweeper died keeps its trial and lands its result, and a
job that died is found stale by any sweeper of the study.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import optuna
import sqlalchemy
from optuna.trial import TrialState

from harness.faults import TrialStopped, TrialSuperseded

log = logging.getLogger(__name__)

SCHEMA_ATTEMPTS = 5
JOURNAL = "journal:///"  # journal:///path/to/study.log: Optuna's file journal, for shared file systems


class TrialPruned(TrialStopped, optuna.TrialPruned):
    """Optuna's pruning, as harness stops a trial (the run's status says "stopped (TrialPruned)")."""


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


def make_pruner(settings: dict) -> optuna.pruners.BasePruner:
    """The study's pruner from its settings (name, startup_trials, min_resource, max_resource,
    reduction_factor). The resource is GRPO steps: a trial reports at every evaluation, so the
    first rung is one evaluation interval (min_resource) and the last the stage's steps. Optuna
    keeps no pruner in its storage: the sweeper saves these settings on the study and every trial,
    wherever it runs, rebuilds the same pruner from them."""
    name, factor = settings["name"], settings["reduction_factor"]
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=settings["startup_trials"])
    if name == "successive_halving":  # keep the best 1/factor at steps min_resource * factor**i
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=settings["min_resource"], reduction_factor=factor)
    if name == "hyperband":  # successive halving in brackets of different first rungs
        return optuna.pruners.HyperbandPruner(min_resource=settings["min_resource"],
                                              max_resource=settings["max_resource"], reduction_factor=factor)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner={name!r}: must be one of median, successive_halving, hyperband, none")


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


def tell(study, trial_id: int, record: dict, run_dir: Path, objectives: list[str]) -> None:
    """Record where the trial's runs are and what it cost, then its outcome: values, pruned, or
    failed and why. Once: the job tells as it ends, and its sweeper only a trial still unfinished
    (another process may finish it meanwhile, which is no error)."""
    run_dir = run_dir.resolve()
    trial = optuna.trial.Trial(study, trial_id)
    try:  # a finished trial refuses the first write
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("wandb_runs", {p.parent.name: json.loads(p.read_text())["wandb_id"]
                                           for p in sorted(run_dir.glob("*/run.json"))})
        for key in record:
            if key in ("status", "error", "reason") or key.startswith("cost/"):  # what it cost, and why it ended
                trial.set_user_attr(key, record[key])
    except optuna.exceptions.UpdateFinishedTrialError:
        return
    values = [record.get(key, math.nan) for key in objectives]
    if record["status"] == "pruned":
        study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
    elif record["status"] != "finished" or any(math.isnan(v) for v in values):
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    else:
        study.tell(trial, values, skip_if_finished=True)


class TrialReporter:
    """The running job's trial: `with` it, the job beats; called at each evaluation, it reports
    held-out values (single-objective studies: Optuna prunes only those) and may prune; `finish`
    lands the job's outcome."""

    def __init__(self, trial_cfg):
        self.storage = open_storage(trial_cfg.storage)
        self.study = optuna.load_study(study_name=trial_cfg.study_name, storage=self.storage)
        self.study.pruner = make_pruner(self.study.user_attrs["pruner"])
        self.objectives = self.study.user_attrs["objectives"]
        self.trial = optuna.trial.Trial(self.study, trial_cfg.trial_id)
        self.heartbeat_interval = trial_cfg.heartbeat_interval

    def __enter__(self) -> "TrialReporter":
        if self._over():
            raise TrialSuperseded(f"trial {self.trial.number} is over (failed and retried while this job was "
                                  "queued?): this job would only repeat its retry")
        self._beating = heartbeat(self.storage, [self.trial._trial_id], self.heartbeat_interval)
        self._beating.__enter__()
        return self

    def __exit__(self, *error) -> None:
        self._beating.__exit__(*error)

    def finish(self, record: dict, run_dir: Path) -> None:
        tell(self.study, self.trial._trial_id, record, run_dir, self.objectives)

    def __call__(self, step: int, metrics: dict) -> None:
        # Its beats stalled past the grace period (a database away for a while), so a sweeper failed
        # and retried the trial: training on would run beside the retry, in the directory it resumes.
        if self._over():
            raise TrialSuperseded(f"trial {self.trial.number} was failed and retried while this job ran "
                                  f"(stopped at step {step})")
        if len(self.objectives) > 1:
            return
        [objective] = self.objectives
        self.trial.report(metrics[objective], step)
        if self.trial.should_prune():
            raise TrialPruned(f"pruned at step {step} with {objective}={metrics[objective]:.4f}")

    def _over(self) -> bool:
        """Whether the trial is finished; a failed read (the database briefly away) is logged and
        taken as not: the next evaluation asks again."""
        try:
            return self.storage.get_trial(self.trial._trial_id).state.is_finished()
        except Exception as error:
            log.warning("could not read the state of trial %d: %s", self.trial.number, error)
            return False
