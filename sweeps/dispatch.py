"""Dispatch: the sweeper's slots, each asking for its next trial as soon as it is free, launching its job
through the configured Hydra launcher, and telling the outcome where the job could not."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from sweeps.retry import accounted_for, fail_and_retry, first_attempt
from sweeps.storage import beat, has_heartbeats, heartbeat, trial_id
from sweeps.trial import tell

log = logging.getLogger(__name__)


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
                running |= {trial_id(t) for t in trials if t.state == TrialState.RUNNING}
            if self.n_trials - len(accounted_for(trials)) - len(running) <= 0:
                elsewhere = sorted(t.number for t in trials if trial_id(t) in running - self.mine)
                if elsewhere and elsewhere != self.waited_for:
                    log.info("waiting for trials %s, running elsewhere", elsewhere)
                self.waited_for = elsewhere
                return self.WAIT if elsewhere else None
            trial = self.study.ask(self.space)
            self.mine.add(trial_id(trial))
            if has_heartbeats(self.storage):  # at once: a trial that never beat is never found stale
                beat(self.storage, trial_id(trial))
            return trial

    def done(self, trial, job) -> None:
        """A slot's trial ended: with its job's return, or None when the job died."""
        with self.lock:
            self.mine.discard(trial_id(trial))
            if job is not None:
                self.returns.append(job)


@dataclass
class Slot:
    """One job at a time, asked, launched and told, until the study holds its trials."""
    dispatch: Dispatch
    launcher: Any  # Hydra's launcher
    sweep_dir: Path
    url: str  # the study's storage, as the job opens it
    fixed: list  # the overrides every job gets
    settings: Any  # sweeps.settings.SweeperSettings
    retry: RetryHeartbeatStaleTrialCallback

    def run(self) -> None:
        storage, study = self.dispatch.storage, self.dispatch.study
        while (trial := self.dispatch.next()) is not None:
            if trial is Dispatch.WAIT:
                time.sleep(self.settings.heartbeat_interval)
                continue
            overrides = self.prepare(study, storage, trial)
            try:  # the sweeper beats too, for a job still queued: the job beats once it runs
                with heartbeat(storage, [trial_id(trial)], self.settings.heartbeat_interval):
                    [job] = self.launcher.launch([overrides], initial_job_idx=trial.number)
            except Exception as error:  # the job died outside its task function: cancelled, killed, node lost
                fail_and_retry(study, storage, trial, error, self.retry)
                self.dispatch.done(trial, None)
                continue
            self.tell_outcome(study, trial, job)
            self.dispatch.done(trial, job)

    def prepare(self, study, storage, trial) -> list:
        """The trial's job (its run directory recorded on the trial): its params, and what lets it beat to its
        trial, report held-out values as it trains (single-objective studies: Optuna takes no intermediate
        values of a Pareto search) and tell its outcome; a retry goes on where its killed attempt stopped."""
        s = self.settings
        overrides = self.fixed + [f"{k}={v}" for k, v in trial.params.items()] + [
            f"trial.storage={self.url}", f"trial.study_name={s.study_name}", f"trial.trial_id={trial_id(trial)}",
            f"trial.objective={s.objectives[0]}", f"trial.heartbeat_interval={s.heartbeat_interval}",
            f"trial.number={trial.number}"]
        run_dir = self.sweep_dir / str(trial.number)  # as Hydra numbers the jobs
        if (first := first_attempt(study, storage.get_trial(trial_id(trial)))) is not None:
            run_dir, run_name = first
            overrides += [f"output_dir={run_dir}", f"run_name={run_name}", "resume=true"]
        trial.set_user_attr("run_dir", str(run_dir))  # before it runs: a retry after a kill looks here
        return overrides

    def tell_outcome(self, study, trial, job) -> None:
        """The job's outcome, where the job did not tell it: it failed before it reached the study
        (a config error) or raised past its task function."""
        run_dir = Path(job.cfg.output_dir or job.hydra_cfg.hydra.runtime.output_dir).resolve()
        try:
            record: dict[str, Any] = job.return_value
        except Exception as error:  # the job raised past the task function
            record = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
        tell(study, trial_id(trial), record, run_dir, self.settings.objectives)
