"""The trial's side of a sweep and the sweeper's count of its trials, on real Optuna storages."""

import time
from types import SimpleNamespace

import optuna
import pytest
import sqlalchemy
from optuna.distributions import FloatDistribution
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from harness.faults import TrialSuperseded
from sweeps.dispatch import Dispatch
from sweeps.retry import accounted_for, fail_and_retry
from sweeps.storage import open_storage, trial_id
from sweeps.trial import TrialReporter

SPACE = {"grpo.learning_rate": FloatDistribution(1e-5, 1e-3, log=True)}


def new_study(url: str, objectives=("eval/gold_pass@1",)):
    study = optuna.create_study(study_name="coldclimb", storage=open_storage(url),
                                directions=["maximize"] * len(objectives))
    study.set_user_attr("pruner", {"name": "none", "reduction_factor": 3})
    study.set_user_attr("objectives", list(objectives))
    return study


def heartbeats(url: str) -> list:
    with sqlalchemy.create_engine(url).connect() as connection:
        return connection.execute(sqlalchemy.text("SELECT trial_id FROM trial_heartbeats")).fetchall()


def test_a_running_job_beats_its_trial_and_tells_its_outcome_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = new_study(url)
    trial = study.ask(SPACE)
    settings = SimpleNamespace(storage=url, study_name="coldclimb", trial_id=trial_id(trial), heartbeat_interval=1)
    with TrialReporter(settings) as job:
        assert heartbeats(url) == [(trial_id(trial),)]  # the job's own process beats
        job(2, {"eval/gold_pass@1": 0.25})
        job.finish({"status": "finished", "eval/gold_pass@1": 0.5, "cost/grpo/steps": 4}, tmp_path)
    job.finish({"status": "failed", "error": "told twice"}, tmp_path)  # the sweeper's tell comes second: no-op
    [told] = study.trials
    assert told.state == TrialState.COMPLETE and told.value == 0.5 and told.intermediate_values == {2: 0.25}
    assert told.user_attrs["status"] == "finished" and told.user_attrs["cost/grpo/steps"] == 4
    assert told.user_attrs["run_dir"] == str(tmp_path.resolve())


def test_a_job_whose_trial_was_failed_as_stale_stops_at_its_next_evaluation(tmp_path):
    """Its beats stalled (a database away for a minute) and a sweeper failed and retried its trial:
    training on would run beside the retry, so the job stops, telling nothing."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = new_study(url)
    trial = study.ask(SPACE)
    settings = SimpleNamespace(storage=url, study_name="coldclimb", trial_id=trial_id(trial), heartbeat_interval=1)
    with TrialReporter(settings) as job:
        job(2, {"eval/gold_pass@1": 0.25})
        study.tell(trial, state=TrialState.FAIL)  # what a sweeper's stale check does
        with pytest.raises(TrialSuperseded, match="failed and retried while this job ran .stopped at step 4."):
            job(4, {"eval/gold_pass@1": 0.3})
    [told] = study.trials
    assert told.state == TrialState.FAIL and told.intermediate_values == {2: 0.25}


def test_a_pareto_trial_gets_no_intermediate_values_but_its_outcome(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    objectives = ("eval/gold_pass@1", "cost/grpo/rollout_tokens")
    study = optuna.create_study(study_name="coldclimb", storage=url, directions=["maximize", "minimize"])
    study.set_user_attr("pruner", {"name": "none", "reduction_factor": 3})
    study.set_user_attr("objectives", list(objectives))
    trial = study.ask(SPACE)
    settings = SimpleNamespace(storage=url, study_name="coldclimb", trial_id=trial_id(trial), heartbeat_interval=1)
    with TrialReporter(settings) as job:
        job(2, {"eval/gold_pass@1": 0.25, "cost/grpo/rollout_tokens": 10})
        job.finish({"status": "finished", "eval/gold_pass@1": 0.5, "cost/grpo/rollout_tokens": 99}, tmp_path)
    [told] = study.trials
    assert told.values == [0.5, 99] and told.intermediate_values == {}


def test_a_trial_retried_twice_counts_once():
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    retry = RetryHeartbeatStaleTrialCallback(max_retry=2)
    first = study.ask(SPACE)
    study.tell(first, state=TrialState.FAIL)
    retry(study, study.trials[0])
    second = study.ask(SPACE)  # the first retry
    study.tell(second, state=TrialState.FAIL)
    retry(study, study.trials[1])
    third = study.ask(SPACE)
    study.tell(third, 0.5)
    assert [t.number for t in accounted_for(study.trials)] == [2]


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_a_sweeper_counts_a_trial_running_elsewhere_only_where_a_dead_one_would_be_found(tmp_path, storage):
    """A database keeps heartbeats: another process's running trial fills the study and this
    sweeper waits for it. A journal file keeps none: waiting could be forever, so it is not counted."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}" if storage == "sqlite" else f"journal:///{tmp_path / 'study.log'}"
    study = new_study(url)
    elsewhere = study.ask(SPACE)  # another sweeper's job, beating
    if storage == "sqlite":
        study._storage.record_heartbeat(trial_id(elsewhere))
    dispatch = Dispatch(study, open_storage(url), SPACE, n_trials=1)
    if storage == "sqlite":
        assert dispatch.next() is Dispatch.WAIT
        study.tell(elsewhere, 0.5)
        assert dispatch.next() is None
    else:
        mine = dispatch.next()
        assert mine.number == 1 and dispatch.next() is None  # full, counting its own


def test_a_trial_whose_job_stopped_beating_is_failed_and_queued_again(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = open_storage(url, heartbeat_interval=1, grace_period=3,  # SQLite stamps beats to the second
                           heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))
    study = new_study(url)
    dispatch = Dispatch(optuna.load_study(study_name="coldclimb", storage=storage), storage, SPACE, n_trials=1)
    trial = dispatch.next()
    dispatch.done(trial, None)  # its job died; nothing beats it any more
    assert dispatch.next() is Dispatch.WAIT  # not yet stale: it may still be running out its grace
    time.sleep(5)
    retry = dispatch.next()
    assert retry.number == 1 and retry.params == trial.params
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.RUNNING]


def test_on_a_journal_file_a_job_that_dies_twice_is_retried_once_and_counts_once(tmp_path):
    """No heartbeats there: the sweeper fails and requeues at once, and the retry's own death is final."""
    url = f"journal:///{tmp_path / 'study.log'}"
    storage = open_storage(url)
    study = new_study(url)
    retry = RetryHeartbeatStaleTrialCallback(max_retry=1)
    dispatch = Dispatch(study, storage, SPACE, n_trials=1)
    for _ in range(2):  # the first attempt dies, then its retry
        trial = dispatch.next()
        fail_and_retry(study, storage, trial, RuntimeError("killed"), retry)
        dispatch.done(trial, None)
    assert dispatch.next() is None
    trials = optuna.load_study(study_name="coldclimb", storage=open_storage(url)).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert RetryHeartbeatStaleTrialCallback.retry_history(trials[1]) == [0]
    assert [t.number for t in accounted_for(trials)] == [1] and trials[1].user_attrs["error"] == "RuntimeError: killed"


def test_a_job_that_starts_after_its_trial_is_over_does_not_run(tmp_path):
    """Its sweeper died while it was queued, and the trial was found stale and retried meanwhile."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = new_study(url)
    trial = study.ask(SPACE)
    study.tell(trial, state=TrialState.FAIL)
    settings = SimpleNamespace(storage=url, study_name="coldclimb", trial_id=trial_id(trial), heartbeat_interval=1)
    with pytest.raises(TrialSuperseded, match="trial 0 is over"):
        TrialReporter(settings).__enter__()
    assert heartbeats(url) == []
