"""The Optuna sweeper's knobs (`hydra.sweeper.*`), declared like every other key: each with its default, its
help and its bounds, listed by `python -m harness.config` and checked before the study opens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf

from harness.settings import ConfigError, check_settings, setting
from harness.store import GOLD
from sweeps.storage import JOURNAL
from sweeps.study import PRUNERS, RUNG_PRUNERS, SAMPLERS


@dataclass
class SweeperSettings:
    study_name: str = setting("coldclimb", "the study's name in its storage")
    storage: Optional[str] = setting(None, "None: sqlite:///<sweep dir>/optuna.db; or postgresql://...; or "
                                           "journal:///path/study.log (a journal file, for shared file systems)")
    objectives: List[str] = setting([GOLD], "keys of the run's final metrics the study optimises")
    directions: List[str] = setting(["maximize"], "one per objective", choices=("maximize", "minimize"))
    sampler: str = setting("tpe", "tpe (multivariate), gp, random or grid", choices=tuple(SAMPLERS))
    pruner: str = setting("median", "stops trials whose held-out values lag the study's", choices=tuple(PRUNERS))
    pruner_startup_trials: int = setting(2, "trials that run to the end before the median pruner acts", low=0)
    pruner_reduction_factor: int = setting(3, "successive halving and hyperband keep the best 1/factor at each rung",
                                           low=2)
    n_trials: int = setting(8, "finished trials the study should hold, counting earlier runs of the command", low=1)
    n_jobs: int = setting(1, "trials in flight at once: a slot that frees (finished, pruned, failed) starts the next",
                          low=1)
    heartbeat_interval: int = setting(10, "seconds between a running trial's heartbeats (a database only)", low=1)
    grace_period: int = setting(60, "seconds a RUNNING trial may be silent before it is found stale, failed and "
                                    "retried", low=1)
    max_retry: int = setting(1, "times a trial whose job died is queued again", low=0)
    seed: int = setting(0, "the sampler's seed")
    params: Dict[str, str] = setting({}, "the search space, in Hydra's sweep grammar (choice, range, interval)")


def sweeper_settings(knobs: dict) -> SweeperSettings:
    """The sweeper's knobs as Hydra passes them, checked: ConfigError names the first bad one."""
    plain = {k: OmegaConf.to_container(v) if isinstance(v, (DictConfig, ListConfig)) else v for k, v in knobs.items()}
    settings = SweeperSettings(**plain)
    check_settings(settings, "hydra.sweeper.")
    if not settings.objectives:
        raise ConfigError("hydra.sweeper.objectives", settings.objectives, "must name at least one metric")
    if len(settings.objectives) != len(settings.directions):
        raise ConfigError("hydra.sweeper.directions", settings.directions,
                          f"must give one direction per objective ({settings.objectives})")
    if settings.grace_period <= settings.heartbeat_interval and not (settings.storage or "").startswith(JOURNAL):
        # a database finds a trial stale after grace_period: a shorter one fails trials that are alive
        raise ConfigError("hydra.sweeper.grace_period", settings.grace_period,
                          f"must exceed hydra.sweeper.heartbeat_interval={settings.heartbeat_interval}")
    return settings


def pruner_settings(settings: SweeperSettings, eval_every: int, steps: int) -> dict:
    """What every trial rebuilds the pruner from: its resource is the GRPO stage's steps, reported at
    every evaluation."""
    if settings.pruner in RUNG_PRUNERS and eval_every > steps:
        raise ConfigError("hydra.sweeper.pruner", settings.pruner,
                          f"its first rung, eval.eval_every={eval_every}, is past the end of grpo.steps={steps}")
    return {"name": settings.pruner, "startup_trials": settings.pruner_startup_trials,
            "reduction_factor": settings.pruner_reduction_factor, "min_resource": eval_every, "max_resource": steps}
