"""Built-in tasks. A task makes problems (each with a `.prompt`, and a `.key` that names the problem
whatever its wording), scores completions with a gold verifier and a proxy reward, and can solve
its own problems for demonstrations."""

from __future__ import annotations

import random

from harness.tasks.countdown import CountdownTask
from harness.tasks.ordering import OrderingTask

TASKS = {"ordering": OrderingTask, "countdown": CountdownTask}


def make_task(cfg):
    return TASKS[cfg.name].from_config(cfg)


def heldout_problems(task, size: int, seed: int) -> list:
    """A fixed evaluation set: the same problems for every run with the same task and seed, no two alike
    (compared by `key`, so a reordering of a problem counts as the same problem)."""
    rng = random.Random(seed)
    problems, seen = [], set()
    while len(problems) < size:
        problem = task.sample(rng)
        if problem.key not in seen:
            seen.add(problem.key)
            problems.append(problem)
    return problems


class ProblemStream:
    """Training problems from a seeded stream, never a held-out one: any problem whose `key` is in `heldout_keys`."""

    def __init__(self, task, seed: int, heldout_keys: set[tuple]):
        self.task, self.rng, self.heldout_keys = task, random.Random(seed), heldout_keys

    def take(self, count: int) -> list:
        problems = []
        while len(problems) < count:
            problem = self.task.sample(self.rng)
            if problem.key not in self.heldout_keys:
                problems.append(problem)
        return problems
