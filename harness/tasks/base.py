"""The task interface, beside the rollout engine's (harness.rollout.base): what every stage asks of a task.

`ordering.py` and `countdown.py` implement it; a new task is one more class with these methods,
registered in `harness.tasks.TASKS` and given its settings in `TaskConfig`.
"""

from __future__ import annotations

import random
from collections.abc import Hashable
from typing import Protocol


class Problem(Protocol):
    @property
    def prompt(self) -> str:
        """What the policy sees."""

    @property
    def key(self) -> Hashable:
        """What makes two problems the same one, whatever their wording: held-out prompts are kept out
        of training by it."""


class Task(Protocol):
    name: str

    @classmethod
    def from_config(cls, cfg) -> "Task":
        """The task from its `TaskConfig`."""

    def sample(self, rng: random.Random) -> Problem:
        """A problem with at least one solution."""

    def gold(self, problem: Problem, completion: str) -> float:
        """The verifier: 1.0 for a correct answer, else 0.0."""

    def proxy(self, problem: Problem, completion: str) -> float:
        """The hand-made proxy reward, hackable on purpose (reward over-optimisation)."""

    def solve(self, problem: Problem, rng: random.Random) -> str:
        """A correct answer, as a demonstration (sft.source=solver)."""

    def format_only(self, problem: Problem, rng: random.Random) -> str:
        """An answer in the right format, not checked against the rules: what the tiny base is pre-trained on."""

    def difficulty(self) -> dict:
        """The settings that make the task harder or easier (they name the pre-trained tiny base)."""

    def vocabulary(self) -> list[str]:
        """Every token the task's prompts and answers use (the tiny model's tokenizer)."""
