"""Built-in tasks. A task makes problems (each with a `.prompt`), scores completions with a
gold verifier and a proxy reward, and can solve its own problems for demonstrations."""

from __future__ import annotations

import random

from harness.tasks.countdown import CountdownTask
from harness.tasks.ordering import OrderingTask

TASKS = {"ordering": OrderingTask, "countdown": CountdownTask}


def make_task(cfg):
    return TASKS[cfg.name].from_config(cfg)


def heldout_problems(task, size: int, seed: int) -> list:
    """A fixed evaluation set: the same problems for every run with the same task and seed."""
    rng = random.Random(seed)
    problems, seen = [], set()
    while len(problems) < size:
        problem = task.sample(rng)
        if problem.prompt not in seen:
            seen.add(problem.prompt)
            problems.append(problem)
    return problems


class ProblemStream:
    """Training problems from a seeded stream, never one of the held-out prompts."""

    def __init__(self, task, seed: int, exclude: set[str]):
        self.task, self.rng, self.exclude = task, random.Random(seed), exclude

    def take(self, count: int) -> list:
        problems = []
        while len(problems) < count:
            problem = self.task.sample(self.rng)
            if problem.prompt not in self.exclude:
                problems.append(problem)
        return problems
