"""A tracking failure never stops training: the local run store keeps everything."""

import json
from types import SimpleNamespace

import wandb

from analysis import load_run
from harness.tracking import StageTracker

OFFLINE = SimpleNamespace(mode="offline", project="coldclimb-test", entity=None, group=None)


def log_a_stage(run_dir, tracking_cfg=OFFLINE):
    tracker = StageTracker(run_dir / "grpo", stage="grpo", run_name="t", config={"seed": 0},
                           tracking_cfg=tracking_cfg, wandb_dir=run_dir)
    tracker.log(1, {"reward": 0.5, "pass_rate/per_prompt": [0.0, 1.0]})
    tracker.log_eval(1, {"eval/gold_pass@1": 0.25})
    tracker.log_completions(1, [{"prompt": "a b | a < b =", "completion": "a b", "gold": 1.0, "proxy": 1.0}])
    tracker.finish({"eval/gold_pass@1": 0.25})
    return tracker


def test_wandb_that_cannot_start_leaves_the_local_store_complete(tmp_path, monkeypatch):
    def refuse(**_):
        raise RuntimeError("no W&B today")

    monkeypatch.setattr(wandb, "init", refuse)
    tracker = log_a_stage(tmp_path)
    assert tracker.wandb is None
    run = load_run(tmp_path)
    assert run.metrics.reward.tolist() == [0.5] and run.metrics["pass_rate/per_prompt"][0] == [0.0, 1.0]
    assert run.evals["eval/gold_pass@1"].tolist() == [0.25]
    assert run.completions.completion.tolist() == ["a b"]
    assert json.loads((tmp_path / "grpo" / "run.json").read_text())["wandb_id"] is None


def test_wandb_that_fails_mid_run_is_dropped_and_training_goes_on(tmp_path, monkeypatch):
    tracker = StageTracker(tmp_path / "sft", stage="sft", run_name="t", config={}, tracking_cfg=OFFLINE,
                           wandb_dir=tmp_path)
    assert tracker.wandb is not None

    def broken(*_, **__):
        raise OSError("disk full")

    monkeypatch.setattr(tracker.wandb, "log", broken)
    tracker.log(1, {"train/loss": 1.0})
    tracker.log(2, {"train/loss": 0.5})
    tracker.finish({})
    assert tracker.wandb is None
    assert load_run(tmp_path).metrics["train/loss"].tolist() == [1.0, 0.5]


def test_disabled_tracking_starts_no_wandb_run(tmp_path):
    tracker = log_a_stage(tmp_path, SimpleNamespace(mode="disabled", project="p", entity=None, group=None))
    assert tracker.wandb is None and not (tmp_path / "wandb").exists()
