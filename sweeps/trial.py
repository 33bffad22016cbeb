"""The trial's side of an Optuna sweep: report held-out values while training, stop if pruned.

The sweeper passes `trial.storage`, `trial.study_name` and `trial.trial_id` to each job, so
this works whichever Hydra launcher ran the job: a local process, joblib, or SLURM.
"""

from __future__ import annotations

import time

import optuna
import sqlalchemy


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


class TrialReporter:
    def __init__(self, trial_cfg):
        study = optuna.load_study(study_name=trial_cfg.study_name, storage=open_storage(trial_cfg.storage))
        study.pruner = make_pruner(study.user_attrs["pruner"])
        self.trial = optuna.trial.Trial(study, trial_cfg.trial_id)
        self.objective = trial_cfg.objective

    def __call__(self, step: int, metrics: dict) -> None:
        self.trial.report(metrics[self.objective], step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} with {self.objective}={metrics[self.objective]:.4f}")
