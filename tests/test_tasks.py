"""Every registered task implements the interface every stage relies on (harness.tasks.base.Task); the
built-in ones have every capability too; a task is found by name, by module:Class, or refused in one line."""

import inspect
import random

import pytest

from harness.config import TaskConfig
from harness.tasks import TASKS, UnknownTask, make_task, task_class
from harness.tasks.base import Demonstrations, FormatOnly, HandMadeProxy, HeldOutSplit, Task, Vocabulary

BUILT_IN = ("ordering", "countdown")
CAPABILITIES = (Demonstrations, HandMadeProxy, FormatOnly, Vocabulary, HeldOutSplit)

METHODS = sorted(name for name, member in vars(Task).items()
                 if not name.startswith("_") and (callable(member) or isinstance(member, classmethod)))


def parameters(owner, method: str) -> list[str]:
    return list(inspect.signature(getattr(owner, method)).parameters)


def test_the_interface_names_what_every_stage_calls_and_no_capability():
    assert set(METHODS) == {"sample", "gold", "difficulty", "from_config"}


@pytest.mark.parametrize("name", TASKS)
def test_every_task_has_each_method_of_the_interface_with_its_parameters(name):
    found = TASKS[name]
    assert found.name == name
    for method in METHODS:
        assert parameters(found, method) == parameters(Task, method), method
    for capability in CAPABILITIES:
        for method in (m for m in vars(capability) if not m.startswith("_")):
            if hasattr(found, method):
                assert parameters(found, method) == parameters(capability, method), method


@pytest.mark.parametrize("name", BUILT_IN)
def test_a_built_in_task_has_every_capability_but_a_test_split(name):
    task = make_task(TaskConfig(name=name))
    assert all(isinstance(task, capability) for capability in CAPABILITIES if capability is not HeldOutSplit)


def test_a_task_is_found_by_module_and_class_and_an_unknown_one_names_close_matches():
    assert task_class("harness.tasks.ordering:OrderingTask") is TASKS["ordering"]
    with pytest.raises(UnknownTask, match="did you mean countdown"):
        task_class("countdwn")
    with pytest.raises(UnknownTask, match="cannot import no_such_module:Task"):
        task_class("no_such_module:Task")


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_task_solves_its_own_problems_and_names_them_by_a_hashable_key(name):
    task, rng = make_task(TaskConfig(name=name)), random.Random(0)
    for _ in range(20):
        problem = task.sample(rng)
        assert isinstance(problem.prompt, str) and hash(problem.key) is not None
        answer = task.solve(problem, rng)
        assert task.gold(problem, answer) == 1.0 and task.proxy(problem, answer) == 1.0
        assert set(answer.split()) <= set(task.vocabulary())
