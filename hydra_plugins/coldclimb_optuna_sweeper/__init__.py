"""coldclimb's Hydra sweeper on Optuna 5's ask/tell: Bayesian, random or grid search with pruning.

    python -m harness.train -m hydra/sweeper=coldclimb_optuna sweep=bayes

Each trial is a Hydra job, run by whichever launcher is configured. The job reports held-out
values to the study while it trains (sweeps/trial.py), so pruners see them wherever it runs.
The study lives in SQLite in the sweep directory unless `storage` names another Optuna
storage (postgresql://..., or journal:///path/study.log for a journal file); running the same
command again resumes it.
Hydra loads sweepers only from the `hydra_plugins` package, hence its home here; the search
space and the trial's side live in `sweeps/`. (No `from __future__ import annotations` here:
Hydra's plugin scan imports this module outside sys.modules, where dataclasses cannot resolve
string annotations.)
"""


import copy
import json
import logging
import math
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import optuna
from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from optuna.distributions import distribution_to_json
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from sweeps.space import distributions, grid, to_distribution
from sweeps.trial import JOURNAL, beat, has_heartbeats, heartbeat, make_pruner, open_storage, tell

log = logging.getLogger(__name__)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats are experimental
DONE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
LOCAL_LAUNCHERS = ("JoblibLauncher", "LocalLauncher")  # jobs on this machine's GPUs (submitit's local executor)


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.coldclimb_optuna_sweeper.OptunaSweeper"
    study_name: str = "coldclimb"
    storage: Optional[str] = None  # None: sqlite:///<sweep dir>/optuna.db; or postgresql://...; or journal:///path
    objectives: list[str] = field(default_factory=lambda: ["eval/gold_pass@1"])  # keys of the run's final metrics
    directions: list[str] = field(default_factory=lambda: ["maximize"])
    sampler: str = "tpe"  # tpe (multivariate) | gp | random | grid
    pruner: str = "median"  # median | successive_halving | hyperband | none
    pruner_startup_trials: int = 2  # trials that run to the end before the median pruner acts
    pruner_reduction_factor: int = 3  # successive halving and hyperband keep the best 1/factor at each rung
    n_trials: int = 8  # finished trials the study should hold, counting earlier runs of the command
    n_jobs: int = 1  # trials in flight at once: a slot that frees (finished, pruned, failed) starts the next
    heartbeat_interval: int = 10  # seconds; a RUNNING trial silent for grace_period is stale: failed, retried
    grace_period: int = 60
    max_retry: int = 1
    seed: int = 0
    params: dict[str, str] = field(default_factory=dict)  # search space, in Hydra's sweep grammar


ConfigStore.instance().store(group="hydra/sweeper", name="coldclimb_optuna", node=OptunaSweeperConf,
                             provider="coldclimb")


class AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler calls study.stop() once the grid is spent, which only optimize() allows; with
    ask/tell the sweeper stops instead, after as many trials as the grid has points."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def accounted_for(trials: list) -> list:
    """Finished trials, less failed attempts that were retried: each trial of the sweep counts once."""
    retried = {number for t in trials for number in RetryHeartbeatStaleTrialCallback.retry_history(t)}
    return [t for t in trials if t.state in DONE and t.number not in retried]


class Dispatch:
    """The sweeper's slots ask for the next trial only while the study holds fewer than it should,
    counting the trials running anywhere (this sweeper's, another worker's, a job whose sweeper
    died) where a dead one would be found stale (a database); with a journal file, its own only."""

    WAIT = "wait"  # full only counting trials that run elsewhere: one may die and be queued again

    def __init__(self, study, storage, space, n_trials: int):
        self.study, self.storage, self.space, self.n_trials = study, storage, space, n_trials
        self.lock, self.mine, self.returns, self.waited_for = threading.Lock(), set(), [], []

    def next(self):
        """The next trial to run, WAIT, or None once the study holds its trials."""
        with self.lock:
            optuna.storages.fail_stale_trials(self.study)  # trials whose job died: failed, queued again
            trials = self.study.get_trials(deepcopy=False)
            running = set(self.mine)
            if has_heartbeats(self.storage):
                running |= {t._trial_id for t in trials if t.state == TrialState.RUNNING}
            if self.n_trials - len(accounted_for(trials)) - len(running) <= 0:
                elsewhere = sorted(t.number for t in trials if t._trial_id in running - self.mine)
                if elsewhere and elsewhere != self.waited_for:
                    log.info("waiting for trials %s, running elsewhere", elsewhere)
                self.waited_for = elsewhere
                return self.WAIT if elsewhere else None
            trial = self.study.ask(self.space)
            self.mine.add(trial._trial_id)
            if has_heartbeats(self.storage):  # at once: a trial that never beat is never found stale
                beat(self.storage, trial._trial_id)
            return trial

    def done(self, trial, job) -> None:
        """A slot's trial ended: with its job's return, or None when the job died."""
        with self.lock:
            self.mine.discard(trial._trial_id)
            if job is not None:
                self.returns.append(job)


class OptunaSweeper(Sweeper):
    def __init__(self, study_name, storage, objectives, directions, sampler, pruner, pruner_startup_trials,
                 pruner_reduction_factor, n_trials, n_jobs, heartbeat_interval, grace_period, max_retry, seed, params):
        if len(objectives) != len(directions):
            raise ValueError(f"objectives={list(objectives)} and directions={list(directions)} differ in length")
        self.study_name, self.storage = study_name, storage
        self.objectives, self.directions = list(objectives), list(directions)
        self.sampler_name = sampler
        self.pruner = {"name": pruner, "startup_trials": pruner_startup_trials,
                       "reduction_factor": pruner_reduction_factor}
        self.n_trials, self.n_jobs, self.seed = n_trials, n_jobs, seed
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)  # a trial whose job died: queued again
        self.params = dict(params or {})

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)
        self.sweep_dir = Path(config.hydra.sweep.dir).resolve()
        # The pruners' resource is the GRPO stage's steps, reported at every evaluation.
        self.pruner.update(min_resource=config.eval.eval_every, max_resource=config.grpo.steps)
        if self.pruner["name"] in ("successive_halving", "hyperband") and config.eval.eval_every > config.grpo.steps:
            raise ValueError(f"hydra.sweeper.pruner={self.pruner['name']}: its first rung, eval.eval_every="
                             f"{config.eval.eval_every}, is past the end of grpo.steps={config.grpo.steps}")
        self.device, self.jobs_per_gpu = config.device, config.jobs_per_gpu

    def sweep(self, arguments: list) -> list:
        space, fixed = distributions(self.params), []
        for override in OverridesParser.create().parse_overrides(arguments):
            if override.is_sweep_override():  # a search dimension given on the command line
                space[override.key_or_group] = to_distribution(override.key_or_group, override.value())
            else:
                fixed.append(override.input_line)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        url = self.storage or f"sqlite:///{self.sweep_dir / 'optuna.db'}"
        storage = self._storage(url)
        study = optuna.create_study(study_name=self.study_name, storage=storage,
                                    sampler=self._sampler(space), pruner=make_pruner(self.pruner),
                                    directions=self.directions, load_if_exists=True)
        study.set_user_attr("pruner", self.pruner)
        study.set_user_attr("objectives", self.objectives)  # what the analysis names the values
        n_trials = self.n_trials
        if self.sampler_name == "grid":
            n_trials = min(n_trials, math.prod(len(values) for values in grid(space).values()))
        # Every run records what rebuilds the study without its storage (analysis.study, from W&B alone).
        spec = {"study_name": self.study_name, "sampler": self.sampler_name, "objectives": self.objectives,
                "directions": self.directions,
                "space": {k: json.loads(distribution_to_json(d)) for k, d in space.items()}}
        # JSON's own escapes keep a quote or ${ in a choice from ending Hydra's quoted string or interpolating.
        quoted = json.dumps(spec).replace("'", "\\u0027").replace("$", "\\u0024")
        fixed.append(f"trial.study='{quoted}'")
        dispatch = Dispatch(study, storage, space, n_trials)
        slots = 1 if isinstance(self.launcher, BasicLauncher) else self.n_jobs  # basic: jobs in this process
        if self.device == "cuda" and type(self.launcher).__name__ in LOCAL_LAUNCHERS:  # SLURM places its own
            from harness.gpus import gpu_slots, visible_gpus  # torch, for a GPU sweep only

            slots = gpu_slots(slots, len(visible_gpus()), self.jobs_per_gpu)
        with ThreadPoolExecutor(slots) as pool:  # each slot asks for its next trial as soon as it is free
            for returned in [pool.submit(self._slot, dispatch, storage, url, fixed) for _ in range(slots)]:
                returned.result()
        log.info("study %s: %d trials in %s", self.study_name, len(study.trials), url)
        return [dispatch.returns]

    def _slot(self, dispatch: "Dispatch", storage, url: str, fixed: list) -> None:
        """One job at a time, asked, launched and told, until the study holds its trials."""
        while (trial := dispatch.next()) is not None:
            if trial is Dispatch.WAIT:
                time.sleep(self.heartbeat_interval)
                continue
            study = dispatch.study
            overrides = fixed + [f"{k}={v}" for k, v in trial.params.items()] + self._trial_overrides(url, trial)
            overrides.append(f"trial.number={trial.number}")
            run_dir = self.sweep_dir / str(trial.number)  # as Hydra numbers the jobs
            first_attempt = self._first_attempt(study, storage.get_trial(trial._trial_id))
            if first_attempt is not None:  # a retry goes on where its killed attempt stopped
                run_dir, run_name = first_attempt
                overrides += [f"output_dir={run_dir}", f"run_name={run_name}", "resume=true"]
            trial.set_user_attr("run_dir", str(run_dir))  # before it runs: a retry after a kill looks here
            try:  # the sweeper beats too, for a job still queued: the job beats once it runs
                with heartbeat(storage, [trial._trial_id], self.heartbeat_interval):
                    [job] = self.launcher.launch([overrides], initial_job_idx=trial.number)
            except Exception as error:  # the job died outside its task function: cancelled, killed, node lost
                self._fail_and_retry(study, storage, trial, error)
                dispatch.done(trial, None)
                continue
            self._tell(study, trial, job)
            dispatch.done(trial, job)

    def _storage(self, url: str):
        """A database gets heartbeats, so that a trial whose job died is found stale and retried."""
        if url.startswith(JOURNAL):
            return open_storage(url)
        return open_storage(url, heartbeat_interval=self.heartbeat_interval, grace_period=self.grace_period,
                            heartbeat_stale_trial_callback=self.retry)

    def _trial_overrides(self, url: str, trial) -> list:
        """What lets the job beat to its trial, report held-out values as it trains (single-objective
        studies: Optuna takes no intermediate values of a Pareto search) and tell its outcome."""
        return [f"trial.storage={url}", f"trial.study_name={self.study_name}", f"trial.trial_id={trial._trial_id}",
                f"trial.objective={self.objectives[0]}", f"trial.heartbeat_interval={self.heartbeat_interval}"]

    @staticmethod
    def _first_attempt(study, trial: optuna.trial.FrozenTrial) -> Optional[tuple]:
        """(run directory, run name) of the attempt a retried trial repeats (its job died mid-run),
        when that attempt began a stage; the retry resumes it from its last resume state."""
        first = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
        if first is None:
            return None
        run_dir = Path(study.trials[first].user_attrs["run_dir"])
        saved = sorted(run_dir.glob("*/config.json"))
        return (run_dir, json.loads(saved[0].read_text())["run_name"]) if saved else None

    def _fail_and_retry(self, study, storage, trial, error: Exception) -> None:
        """A job that died outside its task function (a SLURM job cancelled or out of time, a joblib
        worker killed) fails its trial, which is queued again up to max_retry times; the retry
        resumes the dead attempt's run from its last resume state. With heartbeats this waits until
        the trial is found stale: a cancelled job may still run out its grace, and the retry must
        not start beside it. A journal file has none, so there it happens at once."""
        log.warning("trial %d: its job died (%s: %s)", trial.number, type(error).__name__, error)
        if has_heartbeats(storage):
            return  # the slot's next ask fails it once stale, and Optuna's callback queues the retry
        # What the retry inherits, before this attempt's outcome: a copy, since a journal's trials are
        # its live objects and Optuna's callback appends to the retry history it is given.
        attempt = copy.deepcopy(storage.get_trial(trial._trial_id))
        try:
            trial.set_user_attr("status", "failed")
            trial.set_user_attr("error", f"{type(error).__name__}: {error}"[:2000])
            failed = storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            return  # it told its outcome (a cancelled job runs out its grace) before it died
        if failed:
            self.retry(study, attempt)

    def _tell(self, study, trial, job) -> None:
        """The job's outcome, where the job did not tell it: it failed before it reached the study
        (a config error) or raised past its task function."""
        run_dir = Path(job.cfg.output_dir or job.hydra_cfg.hydra.runtime.output_dir).resolve()
        try:
            record: dict[str, Any] = job.return_value
        except Exception as error:  # the job raised past the task function
            record = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
        tell(study, trial._trial_id, record, run_dir, self.objectives)

    def _sampler(self, space) -> optuna.samplers.BaseSampler:
        if self.sampler_name == "tpe":
            return optuna.samplers.TPESampler(multivariate=True, seed=self.seed)
        if self.sampler_name == "gp":
            return optuna.samplers.GPSampler(seed=self.seed)
        if self.sampler_name == "random":
            return optuna.samplers.RandomSampler(seed=self.seed)
        if self.sampler_name == "grid":
            return AskTellGridSampler(grid(space), seed=self.seed)
        raise ValueError(f"sampler={self.sampler_name!r}: must be one of tpe, gp, random, grid")
