"""A tracking failure never stops training: the local run store keeps everything."""

import json
from pathlib import Path

import wandb

from analysis import load_run
from analysis.load import wandb_records
from harness.config import TrackingConfig
from harness.tracking import StageTracker

OFFLINE = TrackingConfig(project="coldclimb-test")
DISABLED = TrackingConfig(mode="disabled", project="p")


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
    tracker = log_a_stage(tmp_path, DISABLED)
    assert tracker.wandb is None and not (tmp_path / "wandb").exists()


def stage_tracker(run_dir, resume_step=None):
    return StageTracker(run_dir / "grpo", stage="grpo", run_name="t", config={}, tracking_cfg=DISABLED,
                        wandb_dir=run_dir, resume_step=resume_step)


def test_a_line_cut_short_by_a_kill_is_skipped_and_a_resumed_stage_keeps_its_steps(tmp_path):
    tracker = stage_tracker(tmp_path)
    for step in range(1, 5):
        tracker.log(step, {"reward": step / 10})
        tracker.log_completions(step, [{"completion": "a b", "gold": 1.0}])
    with open(tmp_path / "grpo" / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 5, "rew')  # the kill came mid-write
    assert load_run(tmp_path).metrics.step.tolist() == [1, 2, 3, 4]

    resumed = stage_tracker(tmp_path, resume_step=2)
    resumed.log(3, {"reward": 0.33})
    run = load_run(tmp_path)
    assert run.metrics.reward.tolist() == [0.1, 0.2, 0.33] and run.completions.step.tolist() == [1, 2]

    stage_tracker(tmp_path)  # a fresh start of the stage
    assert load_run(tmp_path).metrics.empty and not list((tmp_path / "grpo").glob("*.jsonl"))


def test_a_stage_adopted_from_the_cache_sends_wandb_its_steps_and_its_tables(tmp_path):
    made = log_a_stage(tmp_path / "made")
    made.log_rows("best_of_n", [{"prompt": 0, "gold": 1.0}])  # after finish: the file is what matters here
    adopted = tmp_path / "adopted" / "grpo"
    tracker = StageTracker(adopted, stage="grpo", run_name="u", config={"seed": 0}, tracking_cfg=OFFLINE,
                           wandb_dir=tmp_path / "adopted")
    for name in ("metrics.jsonl", "eval.jsonl", "completions.jsonl", "best_of_n.jsonl"):  # as the cache restores
        (adopted / name).write_bytes((tmp_path / "made" / "grpo" / name).read_bytes())
    tracker.adopt(str(tmp_path / "made"), {"eval/gold_pass@1": 0.25})
    logged = {}
    for record in wandb_records(Path(tracker.wandb.dir).parent):
        if record["type"] == "history":
            item = record["history"]["item"]
            logged.setdefault(item["_step"], set()).update(key.split(".")[0] for key in item)  # tables: name.type
    assert {"reward", "eval/gold_pass@1", "completions"} <= logged[1]
    assert "best_of_n" in set().union(*logged.values())


def test_completions_are_due_at_the_first_step_then_every_log_completions_every(tmp_path):
    tracker = StageTracker(tmp_path / "grpo", stage="grpo", run_name="t", config={}, wandb_dir=tmp_path,
                           tracking_cfg=TrackingConfig(mode="disabled", log_completions_every=3))
    assert [step for step in range(1, 11) if tracker.completions_due(step)] == [1, 3, 6, 9]
