"""Sweeps on a real SLURM: a single-node cluster started on this machine from Debian's packages
(tests/slurm_cluster.py), driven through the README's `hydra/launcher=slurm` preset."""

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from tests.slurm_cluster import Cluster, installed

pytestmark = pytest.mark.slow
# The preset as the README shows it, sized to this machine's node: one core and 2 GB a job.
SLURM = ["hydra/launcher=slurm", "hydra.launcher.partition=cpu", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.mem_gb=2"]
# Each run computes its own GRPO stage: a stage cached by an earlier test would leave nothing to cancel or compare.
SMOKE = ["experiment=smoke", "pipeline.stages=[grpo]", "tracking=disabled", "threads=1", "cache.stages=false"]
# Heartbeats fast enough that a dead job is found within seconds, slack enough for a loaded 2-core machine.
BEATS = ["hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=10"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory, model_cache):
    if not installed():
        pytest.skip("no SLURM (apt-get install slurmctld slurmd slurmdbd munge mariadb-server; .ci/run does)")
    cluster = Cluster(tmp_path_factory.mktemp("slurm")).start()
    yield cluster
    cluster.stop()


def train(slurm, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "harness.train", "-m", *overrides], capture_output=True,
                            text=True, timeout=timeout, env=slurm.env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def jobs(slurm, *options: str) -> list[str]:
    """sacct's line per job (not per step): JobID|State."""
    listed = subprocess.run(["sacct", "-X", "-n", "-P", "-S", "2000-01-01", "-o", "JobID,State", *options],
                            capture_output=True,
                            text=True, env=slurm.env, check=True)
    return listed.stdout.splitlines()


def wait_for_resume_state(run_dir, sweep: subprocess.Popen, before: str, timeout: float = 300) -> None:
    """Until the run's GRPO stage has saved a resume state: mid-run, with something to resume."""
    deadline = time.monotonic() + timeout
    while not (run_dir / "grpo" / "resume" / "latest.json").exists():
        assert sweep.poll() is None and time.monotonic() < deadline, f"the trial ended {before}"
        time.sleep(0.2)


def test_a_grid_sweep_runs_as_slurm_jobs_with_the_numbers_of_a_local_run(slurm, tmp_path):
    before = len(jobs(slurm))
    train(slurm, *SLURM, *SMOKE, "seed=0,1", f"hydra.sweep.dir={tmp_path / 'slurm'}")
    train(slurm, "hydra/launcher=basic", *SMOKE, "seed=0,1", f"hydra.sweep.dir={tmp_path / 'basic'}")
    ran = jobs(slurm)[before:]
    assert len(ran) == 2 and all(line.endswith("|COMPLETED") for line in ran)
    tables = [pd.read_csv(tmp_path / way / "summary.csv").sort_values("seed") for way in ("slurm", "basic")]
    assert tables[0].status.eq("finished").all()
    columns = ["seed", "eval/gold_pass@1", "eval/kl_to_initial"]
    assert tables[0][columns].values.tolist() == tables[1][columns].values.tolist()


def test_an_optuna_sweep_keeps_two_slurm_jobs_running_on_one_study(slurm, tmp_path):
    running, done = [], threading.Event()

    def watch():  # how many of the sweep's jobs SLURM runs at once
        while not done.wait(0.5):
            listed = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i"], capture_output=True, text=True,
                                    env=slurm.env)
            running.append(len(listed.stdout.split()))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        train(slurm, "hydra/sweeper=coldclimb_optuna", *SLURM, *SMOKE,
              "grpo.learning_rate=tag(log,interval(1e-5,1e-3))", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2",
              "hydra.sweeper.pruner=none", f"hydra.sweep.dir={tmp_path}")
    finally:
        done.set()
        watcher.join()
    trials = optuna.load_study(study_name="coldclimb", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert max(running) >= 2  # two SLURM jobs at once
    # Never more than two trials in flight (a job's last moments in SLURM may overlap its successor's start).
    events = sorted([(t.datetime_start, 1) for t in trials] + [(t.datetime_complete, -1) for t in trials])
    assert max(itertools.accumulate(change for _, change in events)) == 2
    for trial in trials:  # each result reached the study from its SLURM job
        stored = json.loads((tmp_path / str(trial.number) / "status.json").read_text())
        assert trial.value == pytest.approx(stored["eval/gold_pass@1"]) and sorted(trial.intermediate_values) == [2, 4]


def test_a_job_whose_sweeper_died_keeps_its_trial_and_lands_its_result(slurm, tmp_path):
    """The job beats to its trial and tells the outcome itself: a new sweeper of the study finds the
    trial alive (not stale, not retried) and waits for it, and the result reaches the study."""
    # Long enough (about a minute) to outlive the grace period and a second sweeper's start.
    overrides = ["hydra/sweeper=coldclimb_optuna", *SLURM, *SMOKE, *BEATS, "grpo.steps=400", "checkpoint.every=20",
                 "eval.eval_every=200", "grpo.learning_rate=choice(1e-4)", "hydra.sweeper.n_trials=1",
                 "hydra.sweeper.pruner=none", f"hydra.sweep.dir={tmp_path}"]
    sweep = subprocess.Popen([sys.executable, "-m", "harness.train", "-m", *overrides], env=slurm.env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_resume_state(tmp_path / "0", sweep, "before its sweeper was killed")
    finally:
        os.killpg(sweep.pid, signal.SIGKILL)
        sweep.wait()
    time.sleep(11)  # past the grace period: only the job's own heartbeat keeps its trial
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert [t.state for t in optuna.load_study(study_name="coldclimb", storage=storage).trials] == [TrialState.RUNNING]
    again = train(slurm, *overrides)
    assert "waiting for trials [0], running elsewhere" in again.stdout + again.stderr

    [trial] = optuna.load_study(study_name="coldclimb", storage=storage).trials
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["status"] == "finished"
    assert trial.value == pytest.approx(json.loads((tmp_path / "0" / "status.json").read_text())["eval/gold_pass@1"])
    steps = [json.loads(line)["step"] for line in (tmp_path / "0" / "grpo" / "metrics.jsonl").open()]
    assert steps == list(range(1, 401))  # one run, never restarted


def slurm_task(job: str, rank: int) -> int:
    """The pid of the job's task that is rank `rank`: slurmstepd's own child (its reward workers inherit its
    environment)."""
    wanted = {f"SLURM_JOB_ID={job}".encode(), f"SLURM_PROCID={rank}".encode()}
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            parent = (environ.parent / "stat").read_text().rsplit(")", 1)[1].split()[1]
            if wanted <= set(environ.read_bytes().split(b"\0")) \
                    and Path(f"/proc/{parent}/comm").read_text().strip() == "slurmstepd":
                return int(environ.parent.name)
        except OSError:
            continue
    raise LookupError(f"no task of rank {rank} in job {job}")


def test_a_two_rank_trial_is_one_slurm_job_and_a_killed_rank_is_retried_and_resumed(slurm, tmp_path):
    """As a one-process trial whose job was cancelled: its job fails, the sweeper retries the trial in the same run
    directory, and the retry resumes. Here one rank of two is killed: srun ends the other, and the job fails."""
    sweep = subprocess.Popen(
        [sys.executable, "-m", "harness.train", "-m", "hydra/sweeper=coldclimb_optuna", *SLURM, *SMOKE, *BEATS,
         "trial.processes=2", "rollout.group_seeds=true", "tracking=offline", "grpo.steps=12", "checkpoint.every=4",
         "eval.eval_every=12", "grpo.learning_rate=choice(1e-4)", "hydra.sweeper.n_trials=1",
         "hydra.sweeper.pruner=none", f"hydra.sweep.dir={tmp_path}"],
        env=slurm.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_resume_state(tmp_path / "0", sweep, "before a rank could be killed")
        [job] = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True,
                               env=slurm.env).stdout.split()
        os.kill(slurm_task(job, 1), signal.SIGKILL)
        output, _ = sweep.communicate(timeout=600)
    finally:
        sweep.kill()
    assert sweep.returncode == 0, output[-3000:]

    trials = optuna.load_study(study_name="coldclimb", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert "its job died (UncompletedJobError" in output
    assert any(line.startswith(f"{job}|FAILED") for line in jobs(slurm))  # one job for both ranks, failed as one
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(trials[1]) == 0
    run_dir = tmp_path / "0"
    assert trials[1].user_attrs["run_dir"] == str(run_dir) and trials[1].user_attrs["status"] == "finished"
    assert trials[1].value == pytest.approx(json.loads((run_dir / "status.json").read_text())["eval/gold_pass@1"])
    # The retry went on from rank 0's resume state; rank 0 alone logged, each step once, to one W&B run.
    steps = [json.loads(line)["step"] for line in (run_dir / "grpo" / "metrics.jsonl").open()]
    assert steps == list(range(1, 13)), steps
    assert all(json.loads(line)["groups"] == 4 for line in (run_dir / "grpo" / "metrics.jsonl").open())
    assert "goes on after step" in (tmp_path / "1" / "train.log").read_text()
    # Both jobs' tasks log to their job's train.log; rank 0's alone beat to the trial.
    assert [(tmp_path / job / "train.log").read_text().count(" beats from this process ") for job in "01"] == [1, 1]
    assert len({p.name.rsplit("-", 1)[1] for p in (run_dir / "wandb").glob("offline-run-*")}) == 1
