"""coldclimb's Hydra sweeper on Optuna 5's ask/tell: Bayesian, random or grid search with pruning.

    python -m harness.train -m hydra/sweeper=coldclimb_optuna sweep=bayes

Each trial is a Hydra job, run by whichever launcher is configured. The job reports held-out
values to the study while it trains (sweeps/trial.py), so pruners see them wherever it runs.
The study lives in SQLite in the sweep directory unless `storage` names another Optuna
storage (postgresql://..., or journal:///path/study.log for a journal file); running the same
command again resumes it.
Hydra loads sweepers only from the `hydra_plugins` package, hence its home here, as a thin plugin:
its knobs are sweeps/settings.py, the study (samplers, pruners) sweeps/study.py, the storage and
heartbeats sweeps/storage.py, its slots sweeps/dispatch.py and the retries sweeps/retry.py. (No
`from __future__ import annotations` here: Hydra's plugin scan imports this module outside sys.modules,
where dataclasses cannot resolve string annotations.)
"""


import logging
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import optuna
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from optuna.storages import RetryHeartbeatStaleTrialCallback

from harness.settings import ConfigError
from sweeps.dispatch import Dispatch, Slot
from sweeps.settings import SweeperSettings, pruner_settings, sweeper_settings
from sweeps.space import split_overrides
from sweeps.storage import study_storage
from sweeps.study import SAMPLERS, open_study, spec_override, trials_wanted

log = logging.getLogger(__name__)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats are experimental
IN_PROCESS = "BasicLauncher"  # Hydra's default launcher runs its jobs one by one in this process
LOCAL_LAUNCHERS = ("JoblibLauncher", "LocalLauncher")  # jobs on this machine's GPUs (submitit's local executor)


@dataclass
class OptunaSweeperConf(SweeperSettings):
    _target_: str = "hydra_plugins.coldclimb_optuna_sweeper.OptunaSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="coldclimb_optuna", node=OptunaSweeperConf,
                             provider="coldclimb")


def refuse(error: Exception) -> NoReturn:
    """A bad knob or search space: one line, and the sweep does not start."""
    print(f"coldclimb: config error: {error}", file=sys.stderr)
    sys.exit(2)


class OptunaSweeper(Sweeper):
    def __init__(self, **knobs):
        self.knobs = knobs

    def setup(self, *, hydra_context, task_function, config) -> None:
        try:  # a bad knob refused in one line before the study opens
            self.settings = sweeper_settings(self.knobs)
            self.pruner = pruner_settings(self.settings, config.eval.eval_every, config.grpo.steps)
        except ConfigError as error:
            refuse(error)
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)
        self.sweep_dir = Path(config.hydra.sweep.dir).resolve()
        self.device, self.jobs_per_gpu = config.device, config.jobs_per_gpu

    def sweep(self, arguments: list) -> list:
        s = self.settings
        try:
            space, fixed = split_overrides(s.params, arguments)
            sampler = SAMPLERS[s.sampler](space, s.seed)  # a grid refuses an interval
        except ValueError as error:
            refuse(error)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        url = s.storage or f"sqlite:///{self.sweep_dir / 'optuna.db'}"
        retry = RetryHeartbeatStaleTrialCallback(max_retry=s.max_retry)  # a trial whose job died: queued again
        storage = study_storage(url, s.heartbeat_interval, s.grace_period, retry)
        study = open_study(s, storage, sampler, self.pruner)
        dispatch = Dispatch(study, storage, space, trials_wanted(s, space))
        slots = [Slot(dispatch, self.launcher, self.sweep_dir, url, fixed + [spec_override(s, space)], s, retry)
                 for _ in range(self._slots())]
        with ThreadPoolExecutor(len(slots)) as pool:  # each slot asks for its next trial as soon as it is free
            for returned in [pool.submit(slot.run) for slot in slots]:
                returned.result()
        log.info("study %s: %d trials in %s", s.study_name, len(study.trials), url)
        return [dispatch.returns]

    def _slots(self) -> int:
        """Trials in flight: one for the in-process launcher; on this machine's GPUs, as many as fit."""
        launcher = type(self.launcher).__name__
        if IN_PROCESS in {c.__name__ for c in type(self.launcher).__mro__}:
            return 1
        if self.device == "cuda" and launcher in LOCAL_LAUNCHERS:  # SLURM places its own
            from harness.gpus import gpu_slots, visible_gpus  # torch, for a GPU sweep only

            return gpu_slots(self.settings.n_jobs, len(visible_gpus()), self.jobs_per_gpu)
        return self.settings.n_jobs
