"""The trial's side of an Optuna sweep: report held-out values while training, stop if pruned.

The sweeper passes `trial.storage`, `trial.study_name` and `trial.trial_id` to each job, so
this works whichever Hydra launcher ran the job: a local process, joblib, or SLURM.
"""

from __future__ import annotations

import optuna


def make_pruner(name: str, startup_trials: int) -> optuna.pruners.BasePruner:
    """median | hyperband | none. Optuna keeps no pruner in its storage, so the sweeper saves these
    two settings on the study and every trial rebuilds the same pruner from them."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner={name!r}: must be one of median, hyperband, none")


class TrialReporter:
    def __init__(self, trial_cfg):
        settings = optuna.load_study(study_name=trial_cfg.study_name, storage=trial_cfg.storage).user_attrs
        study = optuna.load_study(study_name=trial_cfg.study_name, storage=trial_cfg.storage,
                                  pruner=make_pruner(settings["pruner"], settings["pruner_startup_trials"]))
        self.trial = optuna.trial.Trial(study, trial_cfg.trial_id)
        self.objective = trial_cfg.objective

    def __call__(self, step: int, metrics: dict) -> None:
        self.trial.report(metrics[self.objective], step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} with {self.objective}={metrics[self.objective]:.4f}")
