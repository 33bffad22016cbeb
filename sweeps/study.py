"""The study: its samplers and pruners by registry (the sweeper's `sampler` and `pruner` choices are these
names), and the study opened, or resumed, with what rebuilds it elsewhere.

A sampler is built from the search space and the sweeper's seed; a pruner from its settings (name,
startup_trials, min_resource, max_resource, reduction_factor). The pruners' resource is GRPO steps: a
trial reports at every evaluation, so the first rung is one evaluation interval (min_resource) and the
last the stage's steps. Optuna keeps no pruner in its storage: the sweeper saves these settings on the
study and every trial, wherever it runs, rebuilds the same pruner from them.
"""

from __future__ import annotations

import json
import math

import optuna
from optuna.distributions import distribution_to_json

from sweeps.space import grid


class AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler calls study.stop() once the grid is spent, which only optimize() allows; with
    ask/tell the sweeper stops instead, after as many trials as the grid has points."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


SAMPLERS = {
    "tpe": lambda space, seed: optuna.samplers.TPESampler(multivariate=True, seed=seed),
    "gp": lambda space, seed: optuna.samplers.GPSampler(seed=seed),
    "random": lambda space, seed: optuna.samplers.RandomSampler(seed=seed),
    "grid": lambda space, seed: AskTellGridSampler(grid(space), seed=seed),
}

PRUNERS = {
    "median": lambda s: optuna.pruners.MedianPruner(n_startup_trials=s["startup_trials"]),
    # keep the best 1/factor at steps min_resource * factor**i
    "successive_halving": lambda s: optuna.pruners.SuccessiveHalvingPruner(
        min_resource=s["min_resource"], reduction_factor=s["reduction_factor"]),
    # successive halving in brackets of different first rungs
    "hyperband": lambda s: optuna.pruners.HyperbandPruner(
        min_resource=s["min_resource"], max_resource=s["max_resource"], reduction_factor=s["reduction_factor"]),
    "none": lambda s: optuna.pruners.NopPruner(),
}
RUNG_PRUNERS = ("successive_halving", "hyperband")  # their first rung is one evaluation interval


def make_pruner(settings: dict) -> optuna.pruners.BasePruner:
    """The study's pruner from the settings saved on it."""
    return PRUNERS[settings["name"]](settings)


def open_study(settings, storage, sampler: optuna.samplers.BaseSampler, pruner: dict) -> optuna.Study:
    """The sweeper's study (created, or loaded to resume), with what its trials rebuild the pruner
    from and what the analysis names the values."""
    study = optuna.create_study(study_name=settings.study_name, storage=storage, sampler=sampler,
                                pruner=make_pruner(pruner), directions=settings.directions, load_if_exists=True)
    study.set_user_attr("pruner", pruner)
    study.set_user_attr("objectives", settings.objectives)
    return study


def trials_wanted(settings, space: dict) -> int:
    """n_trials, or a grid's size where that is smaller: each point once."""
    if settings.sampler != "grid":
        return settings.n_trials
    return min(settings.n_trials, math.prod(len(values) for values in grid(space).values()))


def spec_override(settings, space: dict) -> str:
    """`trial.study=...`: every run records what rebuilds the study without its storage (analysis.study,
    from W&B alone). JSON's own escapes keep a quote or ${ in a choice from ending Hydra's quoted string
    or interpolating."""
    spec = {"study_name": settings.study_name, "sampler": settings.sampler, "objectives": settings.objectives,
            "directions": settings.directions,
            "space": {k: json.loads(distribution_to_json(d)) for k, d in space.items()}}
    quoted = json.dumps(spec).replace("'", "\\u0027").replace("$", "\\u0024")
    return f"trial.study='{quoted}'"
