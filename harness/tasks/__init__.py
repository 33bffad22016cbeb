"""Tasks by name: the built-in ones, reasoning-gym's procedural datasets, a dataset of your own, a class
of your own (`package.module:Class`) or one an installed package registers under the entry-point group
`coldclimb.tasks` (the interface: harness.tasks.base). A task makes problems (each with a `.prompt`, and a
`.key` that names the problem whatever its wording) and scores completions with a gold verifier."""

from __future__ import annotations

import difflib
import importlib
import random
from importlib.metadata import entry_points

from harness.tasks.base import HeldOutSplit, Problem, Task
from harness.tasks.countdown import CountdownTask
from harness.tasks.dataset import DatasetTask
from harness.tasks.ordering import OrderingTask
from harness.tasks.reasoning_gym import ReasoningGymTask

TASKS: dict[str, type[Task]] = {task.name: task for task in (OrderingTask, CountdownTask, ReasoningGymTask, DatasetTask)}
ENTRY_POINTS = "coldclimb.tasks"


class UnknownTask(ValueError):
    pass


def task_class(name: str) -> type[Task]:
    """The class `task.name` names: a registered task, `package.module:Class`, or an entry point."""
    if name in TASKS:
        return TASKS[name]
    if ":" in name:
        module, _, attribute = name.partition(":")
        try:
            return getattr(importlib.import_module(module), attribute)
        except Exception as error:  # ImportError, AttributeError, or anything the user's module raises as it runs
            raise UnknownTask(f"cannot import {name} ({type(error).__name__}: {error})") from None
    installed = {point.name: point for point in entry_points(group=ENTRY_POINTS)}
    if name in installed:
        try:
            return installed[name].load()
        except Exception as error:  # as above, for the installed package's module
            raise UnknownTask(f"cannot load the entry point {name} ({type(error).__name__}: {error})") from None
    known = [*TASKS, *installed]
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UnknownTask(f"no such task: {hint}known: {', '.join(known)}, or package.module:Class")


def make_task(cfg) -> Task:
    return task_class(cfg.name).from_config(cfg)


MAX_DRAWS_PER_PROBLEM = 100  # a task setting with fewer distinct problems than asked for is refused, not looped on


def heldout_problems(task: Task, size: int, seed: int) -> list[Problem]:
    """A fixed evaluation set: the same problems for every run with the same task and seed, no two alike
    (compared by `key`, so a reordering of a problem counts as the same problem), drawn from the task's
    own test split where it has one. Raises ValueError when the task setting has too few distinct
    problems to hold `size` of them."""
    rng = random.Random(seed)
    split = task.heldout_split() if isinstance(task, HeldOutSplit) else None
    problems, seen = [], set()
    for _ in range(MAX_DRAWS_PER_PROBLEM * size):
        problem = task.sample(rng) if split is None else rng.choice(split)
        if problem.key not in seen:
            seen.add(problem.key)
            problems.append(problem)
            if len(problems) == size:
                return problems
    raise ValueError(f"only {len(problems)} distinct problems turned up in {MAX_DRAWS_PER_PROBLEM * size} draws")


def kept_out(task: Task, heldout: list[Problem]) -> set:
    """The keys no training problem may have: the held-out set's, and the whole test split's where the task has one."""
    split = task.heldout_split() if isinstance(task, HeldOutSplit) else heldout
    return {p.key for p in [*heldout, *split]}


class ProblemStream:
    """Training problems from a seeded stream, never a held-out one: any problem whose `key` is in `heldout_keys`."""

    def __init__(self, task: Task, seed: int | str, heldout_keys: set):
        self.task, self.rng, self.heldout_keys = task, random.Random(seed), heldout_keys

    def take(self, count: int) -> list[Problem]:
        problems, misses = [], 0
        while len(problems) < count:
            problem = self.task.sample(self.rng)
            if problem.key not in self.heldout_keys:
                problems.append(problem)
                misses = 0
            elif (misses := misses + 1) > MAX_DRAWS_PER_PROBLEM * len(self.heldout_keys):
                raise RuntimeError("nearly every problem of this task setting is held out: lower eval.num_prompts")
        return problems
