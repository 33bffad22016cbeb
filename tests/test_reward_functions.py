"""Reward functions by reference: a TRL-style function and a verl-style compute_score score as written,
with every column as a keyword list; math_verify compares answers as math; a bad reference, a changed
file and a broken function are caught before any model loads."""

import json
import os
import pickle
import random

import pytest

from harness.config import TaskConfig
from harness.rewards.functions import (FunctionReward, TaskReward, check_reward, load_function, reward_spec,
                                       source_digest)
from harness.tasks import make_task
from harness.tasks.base import Example

REWARDS = '''
import json
from pathlib import Path


def exact(completions, answer, **kwargs):
    return [float(c.strip() == a) for c, a in zip(completions, answer)]


def record(prompts, completions, completion_ids, trainer_state, log_extra, log_metric, **columns):
    log_metric("seen", 1.0)  # TRL's loggers are accepted, and dropped
    Path(__file__).with_name("seen.json").write_text(json.dumps({"prompts": prompts, "completions": completions,
                                                                 "completion_ids": completion_ids,
                                                                 "trainer_state": trainer_state, **columns}))
    return [None]


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    return {"score": float(solution_str.strip() == ground_truth), "source": data_source}


def plain_score(data_source, solution_str, ground_truth, extra_info=None):
    return 0.25 if extra_info["level"] == 1 else 0.75


def two_scores(completions, **kwargs):
    return [1.0, 0.0]


def too_high(completions, **kwargs):
    return [1.5]


def raises(completions, **kwargs):
    raise KeyError("no such column")


def a_number(completions, **kwargs):
    return 1.0


def level_zero_only(completions, level, **kwargs):
    return [float(level[0] == 0)]


NOT_CALLABLE = 3
'''

PROBLEMS = [Example(f"What is {i} + {i}?", str(2 * i), f"What is {i} + {i}?", {"answer": str(2 * i), "level": i % 3})
            for i in range(30)]


@pytest.fixture
def rewards(tmp_path):
    path = tmp_path / "rewards.py"
    path.write_text(REWARDS)
    return str(path)


def built(ref: str, style: str = "trl"):
    return FunctionReward(ref, style, f"task.gold={ref}").build()


def test_a_trl_function_scores_each_completion(rewards):
    score = built(f"{rewards}:exact")
    problem = PROBLEMS[4]
    assert score(problem, " 8\n", [1, 2]) == 1.0 and score(problem, "9", [1]) == 0.0


def test_a_trl_function_gets_every_column_as_a_keyword_list_and_none_scores_zero(rewards, tmp_path):
    problem = Example("Say hi.", "hi", "Say hi.", {"answer": "hi", "level": 2, "data_source": "greetings"})
    assert built(f"{rewards}:record")(problem, "hello", [5, 6]) == 0.0
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen == {"prompts": ["Say hi."], "completions": ["hello"], "completion_ids": [[5, 6]], "answer": ["hi"],
                    "level": [2], "data_source": ["greetings"], "trainer_state": None}


def test_a_verl_compute_score_gets_the_answer_and_the_columns(rewards):
    assert built(f"{rewards}:compute_score", "verl")(PROBLEMS[5], "10", []) == 1.0
    assert built(f"{rewards}:compute_score", "verl")(PROBLEMS[5], "11", []) == 0.0
    assert built(f"{rewards}:plain_score", "verl")(PROBLEMS[1], "", []) == 0.25


def test_a_trl_function_must_return_one_score_in_a_list(rewards):
    with pytest.raises(ValueError, match="two_scores returned 2 scores"):
        built(f"{rewards}:two_scores")(PROBLEMS[0], "0", [])
    with pytest.raises(TypeError, match="a_number returned float"):
        built(f"{rewards}:a_number")(PROBLEMS[0], "0", [])


@pytest.mark.parametrize("completion, expected", [
    ("\\boxed{1/2}", 1.0), ("0.5", 1.0), ("So the answer is $\\frac{1}{2}$.", 1.0), ("\\boxed{2}", 0.0), ("0.6", 0.0)])
def test_math_verify_compares_answers_as_math(completion, expected):
    half = Example("Half of 1?", "1/2", "Half of 1?", {"answer": "1/2"})
    assert built("math_verify")(half, completion, []) == expected


def test_math_verify_reads_all_of_a_bare_reference_answer():
    polynomial = Example("Expand.", "x^2 + 1", "Expand.", {"answer": "x^2 + 1"})
    score = built("math_verify", "verl")  # the built-in is TRL-style whatever task.gold_style says
    assert score(polynomial, "\\boxed{1 + x^2}", []) == 1.0
    assert score(polynomial, "\\boxed{1}", []) == 0.0  # unboxed, the reference would parse as its last number


def test_load_function_finds_module_and_file_functions_and_refuses_in_one_line(rewards, tmp_path):
    assert load_function("os.path:join") is os.path.join
    assert load_function(f"{rewards}:exact")(["1"], ["1"]) == [1.0]
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('missing\\nconfig')\n")
    for ref, cause in [("no_such_module_xyz:f", "ModuleNotFoundError"), ("os.path:no_such", "no attribute"),
                       (f"{rewards}:NOT_CALLABLE", "not a function"), (f"{tmp_path}/gone.py:f", "no such file"),
                       (f"{broken}:f", "RuntimeError: missing config"), ("exact", "not module:function")]:
        with pytest.raises(ValueError) as caught:
            load_function(ref)
        assert ref in str(caught.value) and cause in str(caught.value) and "\n" not in str(caught.value)


def test_source_digest_follows_the_file(rewards):
    before = source_digest(f"{rewards}:exact")
    with open(rewards, "a") as stream:
        stream.write("\n# edited\n")
    assert len(before) == 16 and source_digest(f"{rewards}:exact") != before
    ordering = source_digest("harness.tasks.ordering:OrderingTask")
    assert ordering is not None and ordering != source_digest("harness.tasks.countdown:CountdownTask")
    assert source_digest("math_verify") is not None and source_digest("no_such_module_xyz:f") is None


def test_check_reward_catches_a_broken_function_in_one_line(rewards):
    for function, cause in [("two_scores", "returned 2 scores"), ("too_high", "1.5"), ("raises", "KeyError")]:
        name = f"task.gold={rewards}:{function}"
        with pytest.raises(ValueError) as caught:
            check_reward(built(f"{rewards}:{function}"), PROBLEMS, "gold", name)
        assert name in str(caught.value) and cause in str(caught.value) and "\n" not in str(caught.value)


def test_check_reward_warns_when_reference_answers_mostly_fail_gold(rewards):
    assert check_reward(built(f"{rewards}:exact"), PROBLEMS, "gold", "task.gold=exact") is None
    warning = check_reward(built(f"{rewards}:level_zero_only"), PROBLEMS, "gold", "task.gold=level_zero_only")
    assert "task.gold=level_zero_only" in warning and "7 of 20" in warning  # levels 0, 1, 2 in turn: 7 zeros
    assert check_reward(built(f"{rewards}:level_zero_only"), PROBLEMS, "proxy", "task.proxy=p") is None


def test_the_task_reward_scores_the_tasks_own_verifier_in_a_fresh_process_state():
    cfg = TaskConfig()
    spec = reward_spec(cfg, "gold")
    assert isinstance(spec, TaskReward)
    score = pickle.loads(pickle.dumps(spec)).build()  # as a worker receives it
    task, rng = make_task(cfg), random.Random(0)
    problems = [task.sample(rng) for _ in range(20)]
    assert all(score(p, task.solve(p, rng), []) == 1.0 for p in problems)
    assert not any(score(p, "", []) for p in problems)
    assert isinstance(reward_spec(cfg, "proxy"), TaskReward)


def test_reward_spec_prefers_the_named_function_and_has_no_proxy_where_the_task_has_none(rewards):
    named = reward_spec(TaskConfig(gold=f"{rewards}:exact", gold_style="trl"), "gold")
    assert named == FunctionReward(f"{rewards}:exact", "trl", f"task.gold={rewards}:exact")
    assert reward_spec(TaskConfig(name="dataset", gold="math_verify"), "proxy") is None
    proxy = reward_spec(TaskConfig(name="dataset", gold="math_verify", proxy="math_verify"), "proxy")
    assert proxy.ref == "math_verify" and proxy.name == "task.proxy=math_verify"
