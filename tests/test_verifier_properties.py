"""Every built-in task's verifier and proxy take any text a model can write: they never crash, never run
it, and stay fast, on arbitrary unicode, huge numbers, deep parentheses, empty and very long outputs.
(Verifiers from elsewhere, reasoning-gym's among them, may run it: they score only in reward workers.)"""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.config import TaskConfig
from harness.tasks import make_task

TASK_NAMES = ("ordering", "countdown")

TASKS = {name: make_task(TaskConfig(name=name, num_numbers=4, max_number=20, max_target=100)) for name in TASK_NAMES}
PROBLEMS = {name: task.sample(random.Random(0)) for name, task in TASKS.items()}
# A whole example (both rewards) taking a second means a parser gone quadratic or worse.
PROPERTY = settings(max_examples=200, deadline=1000, suppress_health_check=[HealthCheck.too_slow])


def assert_scored(name: str, text: str) -> None:
    task, problem = TASKS[name], PROBLEMS[name]
    assert task.gold(problem, text) in (0.0, 1.0)
    assert -1.0 <= task.proxy(problem, text) <= 1.0


def answer_like(name: str):
    """Text built from the task's own answer tokens, and numbers of any size, in any order."""
    words = [*TASKS[name].vocabulary(), "(", ")", "+", "-", "*", "/", " ", ",", str(10**30), "0", "-1", "1e308"]
    return st.lists(st.sampled_from(words), max_size=200).map(" ".join)


@pytest.mark.parametrize("name", TASK_NAMES)
@PROPERTY
@given(text=st.text(max_size=500))
def test_arbitrary_unicode(name, text):
    assert_scored(name, text)


@pytest.mark.parametrize("name", TASK_NAMES)
@PROPERTY
@given(data=st.data())
def test_answer_like_text_of_any_order_and_size(name, data):
    assert_scored(name, data.draw(answer_like(name)))


@pytest.mark.parametrize("name", TASK_NAMES)
@PROPERTY
@given(digits=st.integers(1, 5000), operator=st.sampled_from("+-*/"))
def test_huge_numbers(name, digits, operator):
    huge = "9" * digits
    assert_scored(name, f"{huge} {operator} {huge} {operator} {huge}")


@pytest.mark.parametrize("name", TASK_NAMES)
@PROPERTY
@given(depth=st.integers(0, 50_000), closed=st.booleans())
def test_deep_parentheses(name, depth, closed):
    assert_scored(name, "(" * depth + "7" + (")" * depth if closed else ""))


@pytest.mark.parametrize("name", TASK_NAMES)
@pytest.mark.parametrize("text", ["", " ", "\n" * 10_000, "a " * 500_000, "1+" * 200_000 + "1", "\x00" * 1000,
                                  "\ud800 surrogate", "x" * 1_000_000])
def test_empty_and_very_long_outputs(name, text):
    assert_scored(name, text)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_model_text_that_is_code_is_never_run(name, no_code_execution, tmp_path):
    marker = tmp_path / "ran"
    attacks = [f"__import__('pathlib').Path('{marker}').touch()", f"open('{marker}', 'w')", "exec('1')",
               "().__class__.__base__.__subclasses__()"]
    task, problem = TASKS[name], PROBLEMS[name]
    assert all(task.gold(problem, text) == 0 and task.proxy(problem, text) <= 1 for text in attacks)
    assert not marker.exists()
