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
from pathlib import Path

import optuna
from optuna.trial import TrialState

from harness.faults import TrialStopped, TrialSuperseded
from sweeps.storage import heartbeat, open_storage
from sweeps.study import make_pruner

log = logging.getLogger(__name__)


class TrialPruned(TrialStopped, optuna.TrialPruned):
    """Optuna's pruning, as harness stops a trial (the run's status says "stopped (TrialPruned)")."""


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
        self.trial_id = trial_cfg.trial_id
        self.trial = optuna.trial.Trial(self.study, self.trial_id)
        self.heartbeat_interval = trial_cfg.heartbeat_interval

    def __enter__(self) -> "TrialReporter":
        if self._over():
            raise TrialSuperseded(f"trial {self.trial.number} is over (failed and retried while this job was "
                                  "queued?): this job would only repeat its retry")
        self._beating = heartbeat(self.storage, [self.trial_id], self.heartbeat_interval)
        self._beating.__enter__()
        log.info("trial %d beats from this process every %d s", self.trial.number, self.heartbeat_interval)
        return self

    def __exit__(self, *error) -> None:
        self._beating.__exit__(*error)

    def finish(self, record: dict, run_dir: Path) -> None:
        tell(self.study, self.trial_id, record, run_dir, self.objectives)

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
            return self.storage.get_trial(self.trial_id).state.is_finished()
        except Exception as error:
            log.warning("could not read the state of trial %d: %s", self.trial.number, error)
            return False
