"""Determinism, kill-and-resume, numerical faults and checkpoint retention, through the command line."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from analysis.load import from_local, from_wandb_offline
from harness import sft
from harness.checkpoint import prune_finished
from harness.faults import NonFiniteLoss, TrialSuperseded
from harness.models import base_model
from harness.pipeline import Pipeline
from harness.resume import check_resumable
from harness.tasks import make_task
from harness.store import read_jsonl
from harness.settings import ConfigError

# SFT from solver demonstrations, then 10 GRPO steps with a resumable checkpoint every 3.
# The stage cache is off: these runs must compute SFT themselves, to show it is deterministic too.
RUN = ["experiment=smoke", "pipeline.stages=[sft,grpo]", "sft.source=solver", "grpo.steps=10",
       "checkpoint.every=3", "eval.eval_every=4", "checkpoint.keep=all", "cache.stages=false"]
WALL_CLOCK = {"step_time", "timing/rollout", "timing/update", "timing/rollout_frac", "tokens_per_second"}
LOGS = ["metrics.jsonl", "eval.jsonl", "completions.jsonl", "best_of_n.jsonl"]


def logged(run_dir, stage: str, name: str) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in WALL_CLOCK} for row in read_jsonl(run_dir / stage / name)]


def assert_same_run(a, b):
    """Every logged number (wall-clock times aside), every summary and the final weights, identical."""
    for stage in ("sft", "grpo"):
        for name in LOGS:
            assert logged(a, stage, name) == logged(b, stage, name), (stage, name)
        weights_a = load_file(a / stage / "checkpoint" / "model.safetensors")
        weights_b = load_file(b / stage / "checkpoint" / "model.safetensors")
        assert all(weights_a[k].equal(weights_b[k]) for k in weights_a), stage
    assert json.loads((a / "summary.json").read_text()) == json.loads((b / "summary.json").read_text())
    assert outcome(a) == outcome(b)


def outcome(run_dir) -> dict:
    """status.json but its cost: the wall-clock, and the stages this attempt ran, differ by nature."""
    return {k: v for k, v in json.loads((run_dir / "status.json").read_text()).items() if not k.startswith("cost/")}


@pytest.fixture(scope="module")
def uninterrupted(train, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    train(run_dir, *RUN)
    return run_dir


@pytest.mark.slow
def test_same_config_and_seed_give_identical_metrics_twice_in_a_row(train, uninterrupted, tmp_path):
    train(tmp_path, *RUN)
    assert_same_run(uninterrupted, tmp_path)
    assert len(logged(tmp_path, "grpo", "metrics.jsonl")) == 10


def run_and_kill(overrides: list[str], run_dir, model_cache, after_step: int, stage: str = "grpo") -> int:
    """Start `python -m harness.train OVERRIDES` and SIGKILL it once `run_dir` holds a resume state of
    the GRPO stage `stage` of `after_step` or later and has logged a step past it; the step of the state it left."""
    command = [sys.executable, "-m", "harness.train", *overrides]
    env = {**os.environ, "COLDCLIMB_CACHE": str(model_cache)}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    pointer, metrics = run_dir / stage / "resume" / "latest.json", run_dir / stage / "metrics.jsonl"

    def saved_and_beyond() -> bool:
        if not pointer.exists():
            return False
        saved = json.loads(pointer.read_text())["step"]
        return saved >= after_step and any(row["step"] > saved for row in read_jsonl(metrics))

    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if saved_and_beyond():
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    return json.loads(pointer.read_text())["step"]


@pytest.mark.slow
def test_a_run_killed_mid_stage_resumes_and_ends_as_if_never_stopped(train, model_cache, uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    resumed_from = run_and_kill([f"hydra.run.dir={run_dir}", *RUN], run_dir, model_cache, after_step=3)
    assert resumed_from in (3, 6) and not (run_dir / "status.json").exists()  # killed mid-GRPO
    assert not (run_dir / "grpo" / "summary.json").exists() and (run_dir / "sft" / "checkpoint").is_dir()
    assert max(row["step"] for row in read_jsonl(run_dir / "grpo" / "metrics.jsonl")) > resumed_from
    sft_log = (run_dir / "sft" / "metrics.jsonl").stat().st_mtime_ns

    # Named by output_dir, as the README says; Hydra's own files go elsewhere.
    result = train(tmp_path / "hydra", *RUN, f"output_dir={run_dir}", "resume=true")
    assert f"goes on after step {resumed_from}" in result.stdout + result.stderr
    assert (run_dir / "sft" / "metrics.jsonl").stat().st_mtime_ns == sft_log  # the finished stage was kept
    assert_same_run(uninterrupted, run_dir)
    assert not (run_dir / "grpo" / "resume").exists()
    # The killed attempt's W&B run is gone with its buffer; the resumed one was sent every step.
    local, offline = from_local(run_dir).history, from_wandb_offline(run_dir).history
    columns = ["run", "stage", "step", "reward", "eval/gold_pass@1", "train/loss"]
    pd.testing.assert_frame_equal(local[columns], offline[columns], check_dtype=False)


@pytest.mark.slow
def test_r1s_recipe_resumes_after_a_kill_in_its_first_rl_stage_and_a_second_run_reuses_every_stage(
        train, model_cache, tmp_path):
    """pipeline=r1: cold start, RL, rejection sampling from the RL policy, SFT of the base on both seed
    sets, final RL. Killed in the first RL stage, resumed to the end; run again, every stage is the cache's."""
    run_dir, r1 = tmp_path / "run", ["experiment=smoke", "pipeline=r1", "checkpoint.every=2", "tracking=disabled",
                                     f"cache.dir={tmp_path / 'stages'}"]
    resumed_from = run_and_kill([f"hydra.run.dir={run_dir}", *r1], run_dir, model_cache, after_step=2, stage="rl")
    assert not (run_dir / "rl" / "summary.json").exists() and (run_dir / "sft" / "checkpoint").is_dir()
    result = train(tmp_path / "hydra", *r1, f"output_dir={run_dir}", "resume=true")
    assert f"the rl stage goes on after step {resumed_from}" in result.stdout + result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert list(summary) == ["base", "explore", "seed", "sft", "rl", "mine", "sft_final", "grpo"]
    # the final RL starts from the second SFT, which drew its examples from the seed set mined from the first RL
    assert read_jsonl(run_dir / "grpo" / "eval.jsonl")[0]["eval/gold_pass@1"] == summary["sft_final"]["eval/gold_pass@1"]
    [mined] = (tmp_path / "stages" / "mine").glob("*/manifest.json")
    [final_sft] = (tmp_path / "stages" / "sft_final").glob("*/manifest.json")
    assert mined.parent.name in json.loads(final_sft.read_text())["inputs"]["start"]
    assert json.loads((run_dir / "sft_final" / "summary.json").read_text())["sft/examples"] == 16

    train(tmp_path / "again", *r1)
    status = json.loads((tmp_path / "again" / "status.json").read_text())
    assert all(status[f"cost/{stage}/reused"] for stage in list(summary)[1:])
    assert json.loads((tmp_path / "again" / "summary.json").read_text()) == summary


@pytest.mark.slow
def test_a_grid_sweep_killed_mid_trial_resumes_in_its_directory(model_cache, uninterrupted, tmp_path):
    """Killed in job 0's GRPO stage; resumed, job 0 goes on from its resume state and job 1,
    which never began, starts afresh."""
    sweep = ["-m", *RUN, "seed=0,1", f"hydra.sweep.dir={tmp_path}"]
    run_and_kill(sweep, tmp_path / "0", model_cache, after_step=3)
    assert not (tmp_path / "0" / "status.json").exists() and not (tmp_path / "1").exists()
    result = subprocess.run([sys.executable, "-m", "harness.train", *sweep, "resume=true"], capture_output=True,
                            text=True, timeout=600, env={**os.environ, "COLDCLIMB_CACHE": str(model_cache)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_run(uninterrupted, tmp_path / "0")  # seed 0, as the uninterrupted run
    assert pd.read_csv(tmp_path / "summary.csv").status.tolist() == ["finished", "finished"]


@pytest.mark.slow
def test_a_nan_loss_fails_its_trial_keeps_its_last_good_state_and_the_sweep_goes_on(model_cache, tmp_path):
    """The real command line, with the trainer's log-probabilities poisoned at the third GRPO
    update of the sweep: trial 0 stops there, trial 1 trains cleanly."""
    inject = ("import sys, harness.grpo as grpo\n"
              "real, calls = grpo.completion_logprobs, []\n"
              "def poisoned(*args, **kwargs):\n"
              "    calls.append(1)\n"
              "    logp, entropy = real(*args, **kwargs)\n"
              "    return (logp * float('nan') if len(calls) == 3 else logp), entropy\n"
              "grpo.completion_logprobs = poisoned\n"
              "from harness.train import main\n"
              "main()\n")
    command = [sys.executable, "-c", inject, "-m", "experiment=smoke", "pipeline.stages=[grpo]", "grpo.steps=4",
               "checkpoint.every=2", "seed=0,1", "tracking=disabled", f"hydra.sweep.dir={tmp_path}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "COLDCLIMB_CACHE": str(model_cache)})
    assert result.returncode == 0, result.stderr[-3000:]
    failed, finished = (json.loads((tmp_path / str(job) / "status.json").read_text()) for job in (0, 1))
    assert failed == {"status": "failed", "error": "the GRPO loss is nan"}
    assert finished["status"] == "finished"
    assert pd.read_csv(tmp_path / "summary.csv").status.tolist() == ["finished", "failed"]
    assert [r["step"] for r in read_jsonl(tmp_path / "0" / "grpo" / "metrics.jsonl")] == [1, 2]
    last_good = tmp_path / "0" / "grpo" / "resume"
    assert json.loads((last_good / "latest.json").read_text())["step"] == 2
    weights = load_file(last_good / "step-000002" / "model.safetensors")
    assert all(w.isfinite().all() for w in weights.values())
    assert not (tmp_path / "0" / "grpo" / "checkpoint").exists()


@pytest.mark.parametrize("keep, kept", [("all", ["explore", "grpo", "sft"]), ("final", ["grpo"]), ("none", [])])
def test_a_finished_run_keeps_the_checkpoints_its_retention_names(tmp_path, keep, kept):
    """The whole recipe's run (smoke_run) shows the default, final; here each setting on a run's layout."""
    for stage in ("explore", "sft", "grpo"):
        (tmp_path / stage / "checkpoint").mkdir(parents=True)
    (tmp_path / "grpo" / "resume" / "step-000003").mkdir(parents=True)  # a stage killed after its last save
    (tmp_path / "seed").mkdir()
    (tmp_path / "seed" / "seed.jsonl").write_text("{}\n")
    prune_finished(tmp_path, ["explore", "seed", "sft", "grpo"], keep)
    assert sorted(p.parent.name for p in tmp_path.glob("*/checkpoint")) == kept
    assert not list(tmp_path.glob("*/resume")) and (tmp_path / "seed" / "seed.jsonl").exists()


def test_resume_refuses_a_changed_value_or_a_missing_run(compose, tmp_path):
    cfg = compose("experiment=smoke", "grpo.beta=0.04")
    with pytest.raises(ConfigError, match=r"^resume=True: no interrupted run in "):
        check_resumable(cfg, tmp_path)
    (tmp_path / "grpo").mkdir()
    (tmp_path / "grpo" / "config.json").write_text(json.dumps(asdict(compose("experiment=smoke"))))
    with pytest.raises(ConfigError, match=r"^grpo\.beta=0\.04: differs from the interrupted run's 0\.0$"):
        check_resumable(cfg, tmp_path)
    check_resumable(compose("experiment=smoke", "checkpoint.keep=none", "resume=true"), tmp_path)


def test_a_run_from_before_a_key_existed_resumes_with_that_key_at_its_default(compose, tmp_path):
    older = asdict(compose("pipeline.stages=[sft,grpo]", "sft.source=solver"))
    del older["cache"], older["sft"]["epochs"]  # keys added since that run was made
    (tmp_path / "grpo").mkdir()
    (tmp_path / "grpo" / "config.json").write_text(json.dumps(older))
    check_resumable(compose("pipeline.stages=[sft,grpo]", "sft.source=solver", "resume=true"), tmp_path)
    with pytest.raises(ConfigError, match=r"^sft\.epochs=2\.0: differs from the interrupted run's None$"):
        check_resumable(compose("pipeline.stages=[sft,grpo]", "sft.source=solver", "sft.epochs=2"), tmp_path)


def test_a_run_from_before_keys_were_renamed_resumes_under_the_new_names_and_one_removed_is_refused(
        compose, tmp_path):
    older = asdict(compose("experiment=smoke"))
    for key, value in older.pop("seed_set").items():  # as saved before the seed stage's keys moved
        older["pipeline"][f"seed_{key}"] = value
    (tmp_path / "grpo").mkdir()
    (tmp_path / "grpo" / "config.json").write_text(json.dumps(older))
    check_resumable(compose("experiment=smoke", "resume=true"), tmp_path)
    with pytest.raises(ConfigError, match=r"^seed_set\.size=50: differs from the interrupted run's 40$"):
        check_resumable(compose("experiment=smoke", "seed_set.size=50"), tmp_path)
    older["pipeline"]["retired_knob"] = 3
    (tmp_path / "grpo" / "config.json").write_text(json.dumps(older))
    with pytest.raises(ConfigError, match=r"^pipeline\.retired_knob=3: was the interrupted run's, and this version"):
        check_resumable(compose("experiment=smoke", "resume=true"), tmp_path)


def test_a_nan_in_sft_closes_the_stage_saying_why(compose, model_cache, tmp_path, monkeypatch):
    """A batch with no completion token to learn from has a NaN mean loss: SFT stops there."""
    real = sft.encode_examples

    def nothing_to_learn(*args, **kwargs):
        batch = real(*args, **kwargs)
        return {**batch, "labels": torch.full_like(batch["labels"], sft.IGNORE)}

    cfg = compose("experiment=smoke", "pipeline.stages=[sft,grpo]", "sft.source=solver", "tracking=disabled",
                  "cache.stages=false", f"model.cache_dir={model_cache}")  # a cached SFT would hide the fault
    base_model(cfg.model, make_task(cfg.task))  # the tiny base pre-trained first, with nothing patched
    monkeypatch.setattr(sft, "encode_examples", nothing_to_learn)
    with pytest.raises(NonFiniteLoss, match="^the sft loss is nan$"):
        Pipeline(cfg, tmp_path).run()
    summary = json.loads((tmp_path / "sft" / "summary.json").read_text())
    assert summary == {"status": "stopped (NonFiniteLoss)", "error": "the sft loss is nan"}
    assert not (tmp_path / "sft" / "checkpoint").exists() and not (tmp_path / "grpo").exists()


@pytest.mark.slow  # an end-to-end run: out of the fast subset
def test_a_superseded_job_stops_at_its_evaluation_without_closing_the_stage_its_retry_resumes(
        compose, model_cache, tmp_path):
    """Its trial was failed and retried while it trained: it writes no stage summary and no status,
    which would tell the retry's resume that the stage stopped."""
    from harness.train import run_recipe

    def superseded(step, metrics):
        raise TrialSuperseded("trial 0 was failed and retried while this job ran")

    cfg = compose("experiment=smoke", "pipeline.stages=[sft,grpo]", "sft.source=solver", "tracking=disabled",
                  "cache.stages=false", f"model.cache_dir={model_cache}")  # a GRPO stage reused whole would not train
    with pytest.raises(TrialSuperseded):
        run_recipe(cfg, tmp_path, on_eval=superseded)
    assert not (tmp_path / "grpo" / "summary.json").exists() and not (tmp_path / "status.json").exists()
    assert (tmp_path / "sft" / "summary.json").exists()  # the stage before it finished
