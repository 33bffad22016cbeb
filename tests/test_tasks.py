"""Every built-in task implements the interface the stages rely on (harness.tasks.base.Task)."""

import inspect
import random

import pytest

from harness.config import TaskConfig
from harness.tasks import TASKS, make_task
from harness.tasks.base import Task

METHODS = sorted(name for name, member in vars(Task).items()
                 if not name.startswith("_") and (callable(member) or isinstance(member, classmethod)))


def parameters(owner, method: str) -> list[str]:
    return list(inspect.signature(getattr(owner, method)).parameters)


def test_the_interface_names_what_the_stages_call():
    assert {"sample", "gold", "proxy", "solve", "format_only", "from_config"} <= set(METHODS)


@pytest.mark.parametrize("name", TASKS)
def test_every_task_has_each_method_of_the_interface_with_its_parameters(name):
    task_class = TASKS[name]
    assert task_class.name == name
    for method in METHODS:
        assert parameters(task_class, method) == parameters(Task, method), method


@pytest.mark.parametrize("name", TASKS)
def test_every_task_solves_its_own_problems_and_names_them_by_a_hashable_key(name):
    task, rng = make_task(TaskConfig(name=name)), random.Random(0)
    for _ in range(20):
        problem = task.sample(rng)
        assert isinstance(problem.prompt, str) and hash(problem.key) is not None
        answer = task.solve(problem, rng)
        assert task.gold(problem, answer) == 1.0 and task.proxy(problem, answer) == 1.0
        assert set(answer.split()) <= set(task.vocabulary())
