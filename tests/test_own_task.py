"""A researcher's own task, end to end with the tiny model: reasoning-gym datasets by name, a JSONL file
and a reward function in a folder outside the package, rewards that hang, crash or raise counted while the
run goes on, one that fails on everything stopping the run in one line, and the stage keys following the
user's files."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from transformers import AutoTokenizer

from harness.pipeline import Pipeline
from harness.resume import check_resumable, recorded_config
from harness.tasks import task_class
from harness.tasks.base import Example
from harness.store import read_jsonl
from harness.settings import ConfigError

TINY = ["pipeline.stages=[sft,grpo]", "sft.source=solver", "sft.cold_start_size=32", "sft.steps=4",
        "sft.batch_size=8", "grpo.steps=2", "grpo.prompts_per_step=4", "grpo.num_generations=2",
        "eval.num_prompts=12", "eval.num_samples=2", "eval.eval_every=1", "eval.best_of_n=0",
        "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
        "model.pretrain_steps=8", "model.pretrain_batch_size=16", "rollout.max_completion_length=6",
        "task.reward_timeout=1", "tracking.mode=disabled", "checkpoint.keep=none"]

REWARDS = '''
import os
import time
from pathlib import Path


def exact(prompts, completions, answer, **columns):
    """TRL's convention: every column a keyword list; one score per completion."""
    with open(Path(__file__).parent / "scored_in", "a") as pids:  # which process scores
        pids.write(f"{os.getpid()}\\n")
    return [float(c.strip() == a) for c, a in zip(completions, answer)]


def trapped(prompts, completions, answer, trap, **columns):
    """Model text that is not the answer springs the problem's trap: a hang, a dead worker, an exception."""
    if completions[0].strip() != answer[0]:
        if trap[0] == "hang":
            time.sleep(600)
        if trap[0] == "kill":
            os._exit(1)
        if trap[0] == "raise":
            raise ZeroDivisionError("a trap")
    return exact(prompts, completions, answer)


def broken(prompts, completions, answer, **columns):
    """Right on the reference answers, so it passes the checks; fails on anything a model writes."""
    if completions[0].strip() != answer[0]:
        raise KeyError("a column it forgot")
    return [1.0]
'''


def rows(pairs, traps=()) -> str:
    return "".join(json.dumps({"prompt": f"What is {a} plus {b}?", "answer": str(a + b),
                               "trap": traps[i] if i < len(traps) else ""}) + "\n"
                   for i, (a, b) in enumerate(pairs))


@pytest.fixture
def user_folder(tmp_path) -> Path:
    """What a user brings: data and a reward module in a folder of their own, nothing in the package."""
    folder = tmp_path / "my_task"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "train.jsonl").write_text(rows([(a, b) for a in range(20) for b in range(10)]))
    test = [(a, b) for a in range(20, 32) for b in range(1)]
    (folder / "data" / "test.jsonl").write_text(rows(test, traps=("hang", "kill", "raise")))
    (folder / "rewards.py").write_text(textwrap.dedent(REWARDS))
    return folder


def dataset_task(folder: Path, gold: str) -> list[str]:
    return ["task=dataset", f"task.train_path={folder / 'data' / 'train.jsonl'}",
            f"task.test_path={folder / 'data' / 'test.jsonl'}", f"task.gold={folder / 'rewards.py'}:{gold}"]


@pytest.mark.parametrize("dataset", ["letter_counting", "basic_arithmetic", "spell_backward"])
@pytest.mark.slow  # an end-to-end run: out of the fast subset
def test_a_reasoning_gym_dataset_runs_the_recipe_on_the_tiny_model_reading_bytes(compose, tmp_path, dataset):
    cfg = compose("task=reasoning_gym", f"task.dataset={dataset}", *TINY, "cache.stages=false")
    pipeline = Pipeline(cfg, tmp_path)
    summary = pipeline.run()
    assert len(AutoTokenizer.from_pretrained(pipeline.base)) == 260  # a byte each, and the 4 special tokens
    assert set(summary) == {"base", "sft", "grpo"}
    assert 0 <= summary["grpo"]["eval/gold_pass@1"] <= summary["grpo"]["eval/gold_score"] <= 1
    steps = read_jsonl(tmp_path / "grpo" / "metrics.jsonl")
    assert [row["step"] for row in steps] == [1, 2]
    assert all(row["rewards/errors"] == row["rewards/timeouts"] == row["rewards/crashes"] == 0 for row in steps)
    recorded = json.loads((tmp_path / "grpo" / "config.json").read_text())
    assert recorded["task"]["dataset"] == dataset and recorded["task_sources"]["reasoning_gym"]


@pytest.mark.slow  # an end-to-end run: out of the fast subset
def test_rewards_that_hang_kill_their_worker_or_raise_are_counted_and_the_run_finishes(compose, user_folder,
                                                                                       tmp_path):
    cfg = compose(*dataset_task(user_folder, "trapped"), *TINY, "cache.stages=false")
    summary = Pipeline(cfg, tmp_path).run()
    evaluations = read_jsonl(tmp_path / "grpo" / "eval.jsonl")
    assert len(evaluations) == 3  # at the start, after step 1, after step 2
    for row in evaluations:  # each trapped held-out prompt's two samples, each wrong: scored 0, counted
        assert (row["eval/rewards/timeouts"], row["eval/rewards/crashes"], row["eval/rewards/errors"]) == (2, 2, 2)
    assert summary["grpo"]["eval/rewards/timeouts"] == 2


@pytest.mark.slow  # an end-to-end run: out of the fast subset
def test_a_reward_that_fails_on_everything_a_model_writes_stops_the_run_in_one_line(user_folder, tmp_path,
                                                                                   model_cache):
    command = [sys.executable, "-m", "harness.train", f"hydra.run.dir={tmp_path / 'run'}",
               *dataset_task(user_folder, "broken"), *TINY]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                            env={**os.environ, "COLDCLIMB_CACHE": str(model_cache)})
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"coldclimb: reward task.gold={user_folder / 'rewards.py'}:broken failed on ")
    assert last.endswith("KeyError: 'a column it forgot'")


@pytest.mark.slow  # an end-to-end run: out of the fast subset
def test_editing_the_reward_or_the_data_recomputes_what_reads_it_and_nothing_else(compose, user_folder, tmp_path,
                                                                                 model_cache):
    def run(name: str) -> dict:
        cfg = compose(*dataset_task(user_folder, "exact"), *TINY, f"cache.dir={tmp_path / 'stages'}")
        (user_folder / "scored_in").unlink(missing_ok=True)  # the checks scored the reference answers here
        pipeline = Pipeline(cfg, tmp_path / name)
        pipeline.run()
        return {stage: pipeline.cost[f"cost/{stage}/reused"] for stage in ("sft", "grpo")}

    bases = lambda: sorted((model_cache / "tiny").iterdir())  # noqa: E731
    assert run("first") == {"sft": False, "grpo": False}
    scored_in = {int(pid) for pid in (user_folder / "scored_in").read_text().split()}
    assert scored_in and os.getpid() not in scored_in  # model text: only in reward workers
    base = bases()
    (user_folder / "notes.txt").write_text("a file nothing reads")
    assert run("unrelated edit") == {"sft": True, "grpo": True}
    with open(user_folder / "rewards.py", "a") as rewards:
        rewards.write("\n# a comment is an edit\n")
    assert run("reward edited") == {"sft": False, "grpo": False}
    assert bases() == base  # the base learns the answers' form, never the reward: not made again
    with open(user_folder / "data" / "train.jsonl", "a") as train:
        train.write(rows([(99, 1)]))
    assert run("data edited") == {"sft": False, "grpo": False}
    assert len(bases()) == len(base) + 1  # pre-trained on the data's prompts: made again


@pytest.mark.parametrize("edited, key", [("rewards.py", "gold"), ("data/train.jsonl", "train_path")])
def test_a_resume_refuses_an_edited_reward_or_data_file(compose, user_folder, tmp_path, edited, key):
    cfg = compose(*dataset_task(user_folder, "exact"), *TINY)
    (tmp_path / "grpo").mkdir()
    (tmp_path / "grpo" / "config.json").write_text(json.dumps(recorded_config(cfg)))
    check_resumable(cfg, tmp_path)  # nothing changed: resumable
    with open(user_folder / edited, "a") as file:
        file.write(rows([(99, 1)]) if edited.endswith(".jsonl") else "\n# edited while the run was down\n")
    with pytest.raises(ConfigError, match=f"task_sources.{key}="):
        check_resumable(cfg, tmp_path)


@pytest.mark.parametrize("overrides, named", [
    (["sft.source=solver", "task.name=tests.test_own_task:Bare"], "sft.source='solver': task tests.test_own_task:Bare "
                                                                 "has no demonstrations"),
    (["task.reward=proxy"], "task.proxy=None: task dataset has no proxy of its own, and a stage trains on one"),
    (["task.name=tests.test_own_task:Bare", "pipeline.stages=[grpo]"], "model.path=None: the tiny model's base"),
])
def test_a_stage_that_needs_what_the_task_lacks_is_refused_in_one_line(compose, user_folder, overrides, named):
    with pytest.raises(ConfigError) as error:
        compose(*dataset_task(user_folder, "exact"), *TINY, *overrides)
    assert str(error.value).startswith(named) and "\n" not in str(error.value)


class Bare:
    """A task with only what every stage needs: problems and a verifier."""

    name = "bare"

    @classmethod
    def from_config(cls, cfg):
        return cls()

    def sample(self, rng):
        number = str(rng.randrange(10**6))
        return Example(prompt=number, answer="0", key=number)

    def gold(self, problem, completion):
        return 0.0

    def difficulty(self):
        return {}


def test_an_installed_package_registers_a_task_by_entry_point(tmp_path, monkeypatch):
    dist = tmp_path / "my_tasks-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-tasks\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[coldclimb.tasks]\nbare = tests.test_own_task:Bare\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert task_class("bare") is Bare
