"""The task interface, beside the rollout engine's (harness.rollout.base): what every stage asks of a task,
and the capabilities only some stages need.

Every task makes problems (`sample`) and judges completions (`gold`, run only in reward worker
processes: harness.rewards). A stage that needs more asks for a capability, and validation refuses in
one line a recipe whose task lacks one:
  - Demonstrations (`solve`): sft.source=solver;
  - HandMadeProxy (`proxy`): task.reward=proxy or explore.reward=proxy without task.proxy;
  - FormatOnly (`format_only`): the tiny model's base, pre-trained on well-formed answers;
  - Vocabulary (`vocabulary`): a word-level tiny tokenizer; without it the tiny model reads bytes;
  - HeldOutSplit (`heldout_split`): a fixed test set in place of held-out problems drawn by `sample`.
A task whose settings can be wrong checks them in a classmethod `check_config(cfg)` (the run's whole
config), raising harness.settings.ConfigError; validation calls it before anything loads. A task whose
own proxy checks k of a problem's rules sets `graded_proxy = True` (task.proxy_rules=k).

A new task is a class with these methods, registered in `harness.tasks.TASKS`, named as
`task.name=package.module:Class`, or installed under the entry-point group `coldclimb.tasks`.
"""

from __future__ import annotations

import random
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Optional, Protocol, runtime_checkable

from harness.settings import ConfigError


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
        """A problem, drawn from the harness's seeded stream `rng`."""

    def gold(self, problem: Problem, completion: str) -> float:
        """The verifier's score in [0, 1]; 1.0 is full marks. Called only in a reward worker."""

    def difficulty(self) -> dict:
        """The settings that make the task what it is (they name the pre-trained tiny base)."""


@runtime_checkable
class Demonstrations(Protocol):
    def solve(self, problem: Problem, rng: random.Random) -> str:
        """A correct answer, as a demonstration (sft.source=solver)."""


@runtime_checkable
class HandMadeProxy(Protocol):
    def proxy(self, problem: Problem, completion: str) -> float:
        """The hand-made proxy reward, hackable on purpose (reward over-optimisation)."""


@runtime_checkable
class FormatOnly(Protocol):
    def format_only(self, problem: Problem, rng: random.Random) -> str:
        """An answer in the right form, never checked against the problem: what the tiny base learns."""


@runtime_checkable
class Vocabulary(Protocol):
    def vocabulary(self) -> list[str]:
        """Every word the task's prompts and answers use (a word-level tiny tokenizer)."""


@runtime_checkable
class HeldOutSplit(Protocol):
    def heldout_split(self) -> list[Problem]:
        """The task's own test problems: the held-out set is drawn from these, never from `sample`."""


@dataclass(frozen=True, eq=False)
class Example:
    """A problem given by data (a reasoning-gym entry, a dataset row): a prompt, its reference answer,
    and every other field, which a reward function receives (TRL's keywords, verl's extra_info)."""

    prompt: str
    answer: str
    key: str
    columns: dict = field(default_factory=dict)
    solution: Optional[str] = None  # a worked demonstration, where the data has one


def check_room(cfg, shortest_answer: int) -> None:
    """rollout.max_completion_length leaves room for the task's shortest well-formed answer."""
    if cfg.rollout.max_completion_length <= shortest_answer:
        raise ConfigError("rollout.max_completion_length", cfg.rollout.max_completion_length,
                          f"must be at least {shortest_answer + 1}")


def check_prompt_style(cfg) -> None:
    """Natural-language prompts need a pretrained model: the tiny model knows only the compact symbols."""
    if cfg.task.prompt_style == "natural" and cfg.model.path is None and cfg.model.package is None:
        raise ConfigError("task.prompt_style", "natural", "needs a pretrained model (model.path or "
                          "model.package): the tiny model knows only the compact symbols")
