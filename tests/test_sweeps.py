"""Sweeps running: a failing job never loses the others; pruning, slots, kills and retries, PostgreSQL and a
journal file (their configuration: tests/test_sweep_config.py)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import optuna
import optuna_dashboard
import pandas as pd
import pytest
import sqlalchemy
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from sweeps.retry import accounted_for
from sweeps.storage import open_storage
from tests.postgres import postgres_server, server_bin

@pytest.mark.slow  # an end-to-end run: out of the fast subset
def test_grid_with_failing_jobs_finishes_the_others_and_records_why(model_cache, tmp_path):
    # seed_set.max_rounds=1 verifies about 20 examples: 4 is enough, 40 is not (a runtime failure),
    # 500 exceeds seed_set.size (a config error).
    command = [sys.executable, "-m", "harness.train", "-m", "experiment=smoke", "seed_set.max_rounds=1",
               "sft.cold_start_size=4,40,500", "tracking=disabled", f"hydra.sweep.dir={tmp_path}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "COLDCLIMB_CACHE": str(model_cache)})
    assert result.returncode == 0, result.stderr[-3000:]
    status = [json.loads((tmp_path / str(job) / "status.json").read_text()) for job in range(3)]
    assert status[0]["status"] == "finished" and 0 <= status[0]["eval/gold_pass@1"] <= 1
    assert (tmp_path / "0" / "grpo" / "checkpoint").is_dir()
    assert status[1]["status"] == "failed" and "seed set holds only" in status[1]["error"]
    assert status[2]["status"] == "failed" and status[2]["error"].startswith("config error: sft.cold_start_size=500")
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary.status.tolist() == ["finished", "failed", "failed"]  # the best first, failures last
    assert summary["sft.cold_start_size"].tolist()[0] == 4 and summary.run_dir[0] == str(tmp_path / "0")
    assert "3 jobs" in (tmp_path / "summary.md").read_text()


def optuna_sweep(model_cache, sweep_dir, *overrides: str, timeout: int = 600):
    """`python -m harness.train -m hydra/sweeper=coldclimb_optuna OVERRIDES...`, as a user runs it; its study."""
    command = [sys.executable, "-m", "harness.train", "-m", "hydra/sweeper=coldclimb_optuna", *overrides,
               f"hydra.sweep.dir={sweep_dir}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "COLDCLIMB_CACHE": str(model_cache)})
    assert result.returncode == 0, result.stderr[-3000:]
    return optuna.load_study(study_name="coldclimb", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


@pytest.mark.parametrize("pruner", ["median", "successive_halving"])
@pytest.mark.slow  # an end-to-end run: out of the fast subset
def test_optuna_sweep_prunes_bad_trials_early_and_links_each_trial_to_its_runs(model_cache, tmp_path, pruner):
    """lr 3e-2 wrecks the tiny base within a step or two; the pruner stops those trials."""
    steps = 4
    study = optuna_sweep(model_cache, tmp_path, "experiment=smoke", "pipeline.stages=[grpo]", f"grpo.steps={steps}",
                         "eval.eval_every=1", "eval.num_prompts=32", "grpo.learning_rate=choice(1e-5,3e-2)",
                         "hydra.sweeper.sampler=random", "hydra.sweeper.n_trials=5",
                         f"hydra.sweeper.pruner={pruner}", "hydra.sweeper.pruner_startup_trials=1")
    assert study.user_attrs["pruner"]["name"] == pruner
    assert study.user_attrs["pruner"]["min_resource"] == 1  # one evaluation interval of this sweep's runs
    states = [t.state for t in study.trials]
    assert len(states) == 5 and TrialState.COMPLETE in states and TrialState.PRUNED in states
    for trial in study.trials:
        run_dir = Path(trial.user_attrs["run_dir"])
        assert json.loads((run_dir / "status.json").read_text())["status"] == trial.user_attrs["status"]
        [wandb_id] = trial.user_attrs["wandb_runs"].values()
        assert json.loads((run_dir / "grpo" / "run.json").read_text())["wandb_id"] == wandb_id
        assert list((run_dir / "wandb").glob(f"*-{wandb_id}"))
        if trial.state == TrialState.PRUNED:
            assert max(trial.intermediate_values) < steps  # stopped early
        else:
            assert sorted(trial.intermediate_values) == list(range(1, steps + 1))
            assert trial.value == pytest.approx(trial.intermediate_values[steps])
    # optuna-dashboard serves the study (through its WSGI app: no server, no network).
    app = optuna_dashboard.wsgi(f"sqlite:///{tmp_path / 'optuna.db'}")
    environ = {}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = f"/api/studies/{study._study_id}"
    body = json.loads(b"".join(app(environ, lambda status, headers, exc_info=None: None)))
    assert [t["state"] for t in body["trials"]] == [t.state.name.capitalize() for t in study.trials]


@pytest.mark.slow
def test_a_slot_that_frees_starts_the_next_trial_without_waiting_for_the_slowest(model_cache, tmp_path):
    """n_jobs=2, one long trial and four short ones: the short ones go through the other slot
    while the long one runs, instead of waiting for it in batches of two."""
    study = optuna_sweep(model_cache, tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                         "hydra.sweeper.n_jobs=2", "experiment=smoke", "pipeline.stages=[grpo]", "tracking=disabled",
                         "eval.eval_every=100", "grpo.steps=choice(1,2,3,4,300)", "hydra.sweeper.sampler=grid",
                         "hydra.sweeper.seed=5", "hydra.sweeper.n_trials=5", "hydra.sweeper.pruner=none", timeout=900)
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5
    long, short = trials[0], trials[1:]
    assert long.params["grpo.steps"] == 300  # the grid's order at this seed: the long trial first, beside a short one
    assert all(t.datetime_complete < long.datetime_complete for t in short), [
        (t.number, t.datetime_start, t.datetime_complete) for t in trials]


@pytest.mark.slow  # a killed sweep and its resume: the longest of the sweep tests
def test_sweep_killed_mid_trial_resumes_with_every_trial_accounted_for_once(model_cache, tmp_path):
    command = [sys.executable, "-m", "harness.train", "-m", "hydra/sweeper=coldclimb_optuna", "experiment=smoke",
               "pipeline.stages=[grpo]", "grpo.steps=8", "checkpoint.every=2", "tracking=disabled",
               "grpo.learning_rate=choice(1e-5,1e-4)", "hydra.sweeper.n_trials=3",
               "hydra.sweeper.pruner=none",  # pruning is not what this tests
               "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=2",
               f"hydra.sweep.dir={tmp_path}"]
    env = {**os.environ, "COLDCLIMB_CACHE": str(model_cache)}
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"

    def states():
        try:
            return [t.state for t in optuna.load_study(study_name="coldclimb", storage=storage).trials]
        except (KeyError, sqlalchemy.exc.OperationalError):  # the study or its database is not there yet
            return []

    def mid_trial(now) -> bool:  # a trial has completed and the next one's job has saved a resume state
        saved = (tmp_path / str(len(now) - 1) / "grpo" / "resume" / "latest.json").exists()
        return TrialState.COMPLETE in now and now[-1] == TrialState.RUNNING and saved

    sweep = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.monotonic() + 300
    while not mid_trial(states()):
        assert sweep.poll() is None and time.monotonic() < deadline, "the sweep ended before it could be killed"
        time.sleep(0.2)
    os.killpg(sweep.pid, signal.SIGKILL)
    sweep.wait()
    killed = len(states()) - 1
    time.sleep(3)  # past the grace period: the killed trial's heartbeat is stale

    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = optuna.load_study(study_name="coldclimb", storage=storage).trials
    retries = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) is not None]
    assert trials[killed].state == TrialState.FAIL  # found stale, not left RUNNING
    assert [RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in retries] == [killed]
    assert retries[0].params == trials[killed].params and retries[0].state == TrialState.COMPLETE
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3 and len(trials) == 4  # none lost, none twice
    assert len(accounted_for(optuna.load_study(study_name="coldclimb", storage=storage).trials)) == 3
    # The retry went on in the killed trial's run directory, from its resume state, logging each step once.
    assert retries[0].user_attrs["run_dir"] == str(tmp_path / str(killed))
    steps = [json.loads(line)["step"] for line in (tmp_path / str(killed) / "grpo" / "metrics.jsonl").open()]
    assert steps == list(range(1, 9)) and "goes on after step" in result.stdout + result.stderr
    assert not (tmp_path / str(retries[0].number) / "grpo").exists()


@pytest.mark.slow
def test_a_killed_joblib_worker_fails_its_trial_which_is_retried_from_its_resume_state(model_cache, tmp_path):
    """The job dies under a living sweeper (here a joblib worker, on SLURM a cancelled job:
    tests/test_slurm.py): once its trial is stale, the trial runs again once, resuming."""
    sweep = subprocess.Popen(
        [sys.executable, "-m", "harness.train", "-m", "hydra/sweeper=coldclimb_optuna", "hydra/launcher=joblib",
         "hydra.launcher.n_jobs=2",  # 1 would run the job in the sweeper's process: joblib's sequential backend
         "experiment=smoke", "pipeline.stages=[grpo]", "tracking=disabled", "cache.stages=false", "grpo.steps=40",
         "checkpoint.every=4", "eval.eval_every=20", "grpo.learning_rate=choice(1e-4)", "hydra.sweeper.n_trials=1",
         "hydra.sweeper.pruner=none", "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=5",
         f"hydra.sweep.dir={tmp_path}"],
        env={**os.environ, "COLDCLIMB_CACHE": str(model_cache)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        deadline = time.monotonic() + 300
        while not (tmp_path / "0" / "grpo" / "resume" / "latest.json").exists():
            assert sweep.poll() is None and time.monotonic() < deadline, "the trial ended before its worker was killed"
            time.sleep(0.1)
        workers = subprocess.run(["pgrep", "-P", str(sweep.pid), "-f", "LokyProcess"], capture_output=True,
                                 text=True).stdout.split()
        for pid in workers:
            os.kill(int(pid), signal.SIGKILL)
        output, _ = sweep.communicate(timeout=600)
    finally:
        sweep.kill()
    assert sweep.returncode == 0 and workers, output[-3000:]
    trials = optuna.load_study(study_name="coldclimb", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert "its job died (TerminatedWorkerError" in output
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(trials[1]) == 0
    steps = [json.loads(line)["step"] for line in (tmp_path / "0" / "grpo" / "metrics.jsonl").open()]
    assert steps == list(range(1, 41))  # resumed, each step logged once


@pytest.mark.slow
def test_the_same_grid_gives_the_same_results_under_every_local_launcher(model_cache, tmp_path):
    """At the default batch (16 prompts x 8), where torch splits sums over threads: joblib's workers
    would run on fewer threads than a lone process, and give other numbers, but for `threads`."""
    results = {}
    for launcher in ("basic", "joblib", "submitit_local"):
        sweep_dir = tmp_path / launcher
        command = [sys.executable, "-m", "harness.train", "-m", f"hydra/launcher={launcher}", "experiment=smoke",
                   "pipeline.stages=[grpo]", "grpo.prompts_per_step=16", "grpo.steps=3", "eval.num_prompts=64",
                   "tracking=disabled", "seed=0,1", f"hydra.sweep.dir={sweep_dir}"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                                env={**os.environ, "COLDCLIMB_CACHE": str(model_cache)})
        assert result.returncode == 0, result.stderr[-3000:]
        table = pd.read_csv(sweep_dir / "summary.csv").sort_values("seed")
        assert table.status.eq("finished").all()
        results[launcher] = table[["eval/gold_pass@1", "eval/kl_to_initial", "threads_used"]].values.tolist()
    assert results["basic"] == results["joblib"] == results["submitit_local"]


@pytest.fixture
def postgres_url():
    if server_bin() is None:
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql; .ci/run does)")
    with postgres_server() as url:
        yield url


@pytest.mark.slow
def test_two_workers_share_one_study_on_postgresql(model_cache, postgres_url, tmp_path):
    n_trials = 6
    env = {**os.environ, "COLDCLIMB_CACHE": str(model_cache)}
    # worker-b runs two trials at a time in joblib processes: they report to the study on their own.
    launchers = {"worker-a": [], "worker-b": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                                              "hydra.sweeper.n_jobs=2"]}
    workers = [subprocess.Popen(
        [sys.executable, "-m", "harness.train", "-m", "hydra/sweeper=coldclimb_optuna", "experiment=smoke",
         "pipeline.stages=[grpo]", "tracking=disabled", "grpo.learning_rate=tag(log,interval(1e-5,1e-3))",
         f"hydra.sweeper.n_trials={n_trials}", "hydra.sweeper.pruner=none", f"hydra.sweeper.storage={postgres_url}",
         f"hydra.sweep.dir={tmp_path / name}", *launcher], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True) for name, launcher in launchers.items()]
    for worker in workers:
        assert worker.wait(timeout=600) == 0, worker.stderr.read()[-3000:]
    trials = optuna.load_study(study_name="coldclimb", storage=postgres_url).trials
    assert len(trials) >= n_trials and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.number for t in trials}) == len(trials)
    run_dirs = [Path(t.user_attrs["run_dir"]) for t in trials]
    assert len(set(run_dirs)) == len(trials)  # no trial ran twice
    assert {d.parent.name for d in run_dirs} == {"worker-a", "worker-b"}  # both workers did some
    for trial, run_dir in zip(trials, run_dirs):
        stored = json.loads((run_dir / "status.json").read_text())
        assert trial.value == pytest.approx(stored["eval/gold_pass@1"])  # every result reached the study
        assert sorted(trial.intermediate_values) == [2, 4]


@pytest.mark.parametrize("sampler, objectives", [
    ("grid", ["eval/gold_pass@1", "cost/grpo/rollout_tokens"]),  # a Pareto front over every point of a grid
    ("gp", ["eval/gold_pass@1"]),
])
@pytest.mark.slow  # an end-to-end run: out of the fast subset
def test_other_samplers_and_several_objectives(model_cache, tmp_path, sampler, objectives):
    directions = ["maximize", "minimize"][: len(objectives)]
    command = [sys.executable, "-m", "harness.train", "-m", "hydra/sweeper=coldclimb_optuna", "experiment=smoke",
               "pipeline.stages=[grpo]", "tracking=disabled", "grpo.learning_rate=choice(1e-5,1e-3)",
               "grpo.num_generations=choice(2,4)", "hydra.sweeper.n_trials=4", "hydra.sweeper.pruner=none",
               f"hydra.sweeper.sampler={sampler}", f"hydra.sweeper.objectives=[{','.join(objectives)}]",
               f"hydra.sweeper.directions=[{','.join(directions)}]", f"hydra.sweep.dir={tmp_path}",
               f"cache.dir={tmp_path / 'stages'}"]  # this sweep's own: a trial reuses only this study's trials
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "COLDCLIMB_CACHE": str(model_cache)})
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="coldclimb", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    first = {}  # params -> the trial that first ran them
    for trial in study.trials:
        status = json.loads((Path(trial.user_attrs["run_dir"]) / "status.json").read_text())
        assert trial.values == pytest.approx([status[key] for key in objectives])
        params = tuple(sorted(trial.params.items()))
        # A trial repeating an earlier one's settings reuses its GRPO stage, with its numbers.
        assert trial.user_attrs["cost/grpo/reused"] is (params in first)
        if params in first:
            assert trial.values == first[params].values
        first.setdefault(params, trial)
        assert trial.user_attrs["cost/grpo/steps"] == 4 and trial.user_attrs["cost/grpo/rollout_tokens"] > 0
        assert trial.user_attrs["cost/grpo/seconds"] > 0
    if sampler == "grid":  # four points, each once
        assert sorted(tuple(t.params.values()) for t in study.trials) == sorted(
            (lr, k) for lr in (1e-5, 1e-3) for k in (2, 4))


@pytest.mark.slow  # a whole study twice on a journal file
def test_journal_file_storage_reports_and_resumes(model_cache, tmp_path):
    journal = tmp_path / "study.log"
    env = {**os.environ, "COLDCLIMB_CACHE": str(model_cache)}
    for n_trials in (2, 3):  # the second command resumes the study and adds one trial
        command = [sys.executable, "-m", "harness.train", "-m", "hydra/sweeper=coldclimb_optuna", "experiment=smoke",
                   "pipeline.stages=[grpo]", "tracking=disabled", "grpo.learning_rate=tag(log,interval(1e-5,1e-3))",
                   f"hydra.sweeper.n_trials={n_trials}", "hydra.sweeper.pruner=none",  # every trial reports to the end
                   f"hydra.sweeper.storage=journal:///{journal}",
                   f"hydra.sweep.dir={tmp_path / str(n_trials)}"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="coldclimb", storage=open_storage(f"journal:///{journal}"))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert all(sorted(t.intermediate_values) == [2, 4] for t in study.trials)  # reported through the journal
