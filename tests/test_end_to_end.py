"""The whole recipe, tiny, through the command line: stages, checkpoints, W&B and the run store."""

import json

import pandas as pd
import pytest

from analysis import load_run
from analysis.load import wandb_records
from harness.pipeline import Pipeline

STAGES = ["explore", "seed", "sft", "grpo"]


def test_every_stage_ran_and_the_finished_run_kept_only_its_final_checkpoint(smoke_run):
    run = load_run(smoke_run)
    assert list(run.summary) == ["base", "explore", "seed", "sft", "grpo"]
    for stage in ("explore", "sft", "grpo"):
        assert 0.0 <= run.summary[stage]["eval/gold_pass@1"] <= 1.0
    assert (smoke_run / "grpo" / "checkpoint" / "model.safetensors").exists()
    assert not (smoke_run / "explore" / "checkpoint").exists() and not (smoke_run / "sft" / "checkpoint").exists()
    assert not list(smoke_run.glob("*/resume"))  # checkpoint.keep=final is the default
    seed = [json.loads(line) for line in (smoke_run / "seed" / "seed.jsonl").read_text().splitlines()]
    assert len(seed) == run.summary["seed"]["seed/size"] >= 16
    assert sorted(run.stages) == sorted(STAGES)


def test_grpo_metrics_carry_the_names_trl_users_know(smoke_run):
    metrics = load_run(smoke_run).metrics
    grpo = metrics[metrics.stage == "grpo"]
    assert grpo.step.tolist() == [1, 2, 3, 4]
    for key in ["reward", "reward_std", "rewards/gold/mean", "rewards/proxy/mean", "frac_reward_zero_std",
                "live_group_frac", "pass_rate/per_prompt", "entropy", "clip_ratio/low_mean", "clip_ratio/high_mean",
                "clip_ratio/region_mean", "grad_norm", "completions/mean_length", "completions/clipped_ratio",
                "num_tokens", "tokens_per_second", "timing/rollout", "timing/update"]:
        assert grpo[key].notna().all(), key
    assert (grpo.live_group_frac + grpo.frac_reward_zero_std).round(6).eq(1).all()
    assert grpo.num_tokens.is_monotonic_increasing


def test_evaluations_and_completion_tables_are_kept_for_every_logged_step(smoke_run):
    run = load_run(smoke_run)
    grpo_evals = run.evals[run.evals.stage == "grpo"]
    assert grpo_evals.step.tolist() == [0, 2, 4]
    assert grpo_evals["eval/kl_to_initial"].iloc[0] == pytest.approx(0.0, abs=1e-6)  # the start, against itself
    assert sorted(run.completions[run.completions.stage == "grpo"].step.unique()) == [1, 2, 4]


def test_each_stage_is_a_wandb_run_in_one_group_holding_the_same_numbers(smoke_run):
    run = load_run(smoke_run)
    run_ids = set()
    for stage in STAGES:
        info = run.stages[stage]["run"]
        records = wandb_records(info["wandb_dir"])
        header = next(r["run"] for r in records if r["type"] == "run")
        assert header["run_group"] == "smoke-test" and header["job_type"] == stage
        run_ids.add(header["run_id"])
        history = {}
        for record in records:
            if record["type"] == "history":
                item = record["history"]["item"]
                history.setdefault(item["_step"], {}).update(item)
        local = run.metrics[run.metrics.stage == stage]
        key = "seed/size" if stage == "seed" else "train/loss" if stage == "sft" else "reward"
        for _, row in local.iterrows():
            assert history[row.step][key] == pytest.approx(row[key], rel=1e-6), (stage, row.step)
    assert len(run_ids) == len(STAGES)



@pytest.mark.parametrize("beta, copies", [(0.0, 0), (0.04, 1)])
def test_reference_model_is_loaded_only_when_beta_is_positive(compose, model_cache, tmp_path, monkeypatch, beta, copies):
    cfg = compose("experiment=smoke", "pipeline.stages=[grpo]", f"grpo.beta={beta}", "eval.kl_to_initial=false",
                  "tracking=disabled", f"model.cache_dir={model_cache}")
    made = []
    monkeypatch.setattr(Pipeline, "_frozen_copy", staticmethod(lambda model: made.append(model) or model))
    Pipeline(cfg, tmp_path).run()
    assert len(made) == copies
    run = load_run(tmp_path)
    assert ("kl" in run.metrics.columns) == (beta > 0)
    assert "eval/kl_to_initial" not in run.evals.columns


@pytest.mark.slow  # an end-to-end run: out of the fast subset
def test_several_updates_per_batch_in_micro_batches_move_the_ratio(compose, model_cache, tmp_path):
    """num_iterations > 1: pi_old is frozen at rollout time, so later passes see ratios != 1."""
    cfg = compose("experiment=smoke", "pipeline.stages=[grpo]", "grpo.num_iterations=3", "grpo.micro_batch_size=8",
                  "grpo.loss_type=grpo", "grpo.scale_rewards=batch", "grpo.learning_rate=1e-2", "grpo.epsilon=0.01",
                  "tracking=disabled", f"model.cache_dir={model_cache}")
    Pipeline(cfg, tmp_path).run()
    metrics = load_run(tmp_path).metrics
    assert metrics["clip_ratio/region_mean"].max() > 0
    assert metrics.loss.notna().all() and metrics.grad_norm.notna().all()


@pytest.mark.slow  # an end-to-end run: out of the fast subset
def test_dynamic_sampling_trains_on_fewer_dead_groups(compose, model_cache, tmp_path):
    """GRPO straight on the base with K = 4: at its pass rate (~0.08) most groups are dead."""
    dead, rounds = {}, {}
    for dynamic in (False, True):
        cfg = compose("experiment=smoke", "pipeline.stages=[grpo]", "grpo.num_generations=4", "grpo.prompts_per_step=8",
                      "grpo.steps=6", f"grpo.dynamic_sampling={dynamic}", "grpo.dynamic_sampling_max_rounds=6",
                      "eval.eval_every=100", "tracking=disabled", f"model.cache_dir={model_cache}")
        Pipeline(cfg, tmp_path / str(dynamic)).run()
        metrics = load_run(tmp_path / str(dynamic)).metrics
        dead[dynamic] = metrics["update/dead_group_frac"].mean()
        rounds[dynamic] = metrics["dynamic_sampling/rounds"].mean()
        assert (metrics["update/groups"] <= 8).all() and metrics["rollout_tokens/dead"].gt(0).any()
    assert dead[False] > 0.4 and dead[True] == 0.0
    assert rounds[False] == 1 and rounds[True] > 1


@pytest.mark.slow  # an end-to-end run: out of the fast subset
def test_how_often_and_how_much_we_evaluate_changes_nothing_that_trains(compose, model_cache, tmp_path):
    """Evaluation samples from its own seeded stream: training's random state never sees it."""
    trained = {}
    for name, eval_every, best_of_n in (("often", 1, 16), ("rarely", 100, 0)):
        cfg = compose("experiment=smoke", "pipeline.stages=[grpo]", f"eval.eval_every={eval_every}",
                      f"eval.best_of_n={best_of_n}", "tracking=disabled", f"model.cache_dir={model_cache}")
        Pipeline(cfg, tmp_path / name).run()
        trained[name] = load_run(tmp_path / name)
    often, rarely = trained["often"], trained["rarely"]
    assert len(often.evals) == 5 and len(rarely.evals) == 2  # steps 0-4, against the start and the end
    columns = ["reward", "rewards/gold/mean", "loss", "grad_norm", "entropy"]
    pd.testing.assert_frame_equal(often.metrics[columns], rarely.metrics[columns])
    pd.testing.assert_frame_equal(often.evals.iloc[[0, -1]].reset_index(drop=True), rarely.evals)


@pytest.mark.slow
def test_countdown_runs_the_recipe_from_a_solver_cold_start(train, tmp_path):
    train(tmp_path, "experiment=smoke", "task=countdown", "pipeline.stages=[sft,grpo]", "sft.source=solver",
          "tracking=disabled")
    run = load_run(tmp_path)
    assert set(run.stages) == {"sft", "grpo"} and len(run.metrics[run.metrics.stage == "grpo"]) == 4
    completions = run.completions[run.completions.stage == "grpo"]
    assert len(completions) and completions.gold.isin([0.0, 1.0]).all() and completions.proxy.le(1.0).all()
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "finished"


TIMING = ("step_time", "timing/", "tokens_per_second")


def _untimed_rows(path) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.startswith(TIMING)}
            for row in map(json.loads, path.read_text().splitlines())]


@pytest.mark.slow  # an end-to-end run: out of the fast subset
def test_a_sweep_over_grpo_leaves_every_stage_before_grpo_identical(compose, model_cache, tmp_path):
    """Two trials of a sweep over grpo.* share one explorer, seed set and cold start, bit for bit."""
    for arm in ("a", "b"):
        knobs = ["grpo.beta=0.1", "grpo.num_generations=4", "grpo.learning_rate=1e-3"] if arm == "b" else []
        cfg = compose("experiment=smoke", "grpo.steps=1", "checkpoint.keep=all", "tracking=disabled",
                      "cache.stages=false", f"model.cache_dir={model_cache}", *knobs)
        Pipeline(cfg, tmp_path / arm).run()
    a, b = tmp_path / "a", tmp_path / "b"
    for output in ("explore/checkpoint/model.safetensors", "seed/seed.jsonl", "sft/checkpoint/model.safetensors"):
        assert (a / output).read_bytes() == (b / output).read_bytes(), output
    for log in ("explore/metrics.jsonl", "explore/eval.jsonl", "sft/metrics.jsonl", "sft/eval.jsonl"):
        assert _untimed_rows(a / log) == _untimed_rows(b / log), log
    assert _untimed_rows(a / "grpo/metrics.jsonl") != _untimed_rows(b / "grpo/metrics.jsonl")


def test_status_records_what_each_stage_cost(smoke_run):
    status = json.loads((smoke_run / "status.json").read_text())
    assert status["status"] == "finished" and status["threads_used"] >= 1
    for stage in STAGES:
        assert status[f"cost/{stage}/seconds"] > 0 and isinstance(status[f"cost/{stage}/reused"], bool)
    metrics = load_run(smoke_run).metrics
    for stage in ("explore", "grpo"):
        logged = metrics[metrics.stage == stage]
        assert status[f"cost/{stage}/steps"] == logged.step.max()
        assert status[f"cost/{stage}/rollout_tokens"] == logged.num_tokens.max()
