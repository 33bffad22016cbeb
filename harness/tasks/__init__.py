"""Built-in tasks (the interface: harness.tasks.base.Task). A task makes problems (each with a `.prompt`,
and a `.key` that names the problem whatever its wording), scores completions with a gold verifier and a
proxy reward, and can solve its own problems for demonstrations."""

from __future__ import annotations

import random

from harness.tasks.base import Problem, Task
from harness.tasks.countdown import CountdownTask
from harness.tasks.ordering import OrderingTask

TASKS: dict[str, type[Task]] = {"ordering": OrderingTask, "countdown": CountdownTask}


def make_task(cfg) -> Task:
    return TASKS[cfg.name].from_config(cfg)


MAX_DRAWS_PER_PROBLEM = 100  # a task setting with fewer distinct problems than asked for is refused, not looped on


def heldout_problems(task: Task, size: int, seed: int) -> list[Problem]:
    """A fixed evaluation set: the same problems for every run with the same task and seed, no two alike
    (compared by `key`, so a reordering of a problem counts as the same problem). Raises ValueError when
    the task setting has too few distinct problems to hold `size` of them."""
    rng = random.Random(seed)
    problems, seen = [], set()
    for _ in range(MAX_DRAWS_PER_PROBLEM * size):
        problem = task.sample(rng)
        if problem.key not in seen:
            seen.add(problem.key)
            problems.append(problem)
            if len(problems) == size:
                return problems
    raise ValueError(f"only {len(problems)} distinct problems turned up in {MAX_DRAWS_PER_PROBLEM * size} draws")


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
