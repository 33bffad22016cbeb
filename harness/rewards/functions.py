"""Reward functions by reference (task.gold, task.proxy): what a reward worker builds and calls.

A spec is small and picklable: a worker calls `spec.build()` once, then `fn(problem, completion,
completion_ids) -> float` per completion (harness.rewards.pool). A user's function is named as
`module:function`, `path/to/file.py:function`, or a built-in's name (`math_verify`: harness.registry), and is
called the way TRL or verl call theirs, so a function written for either works unchanged:
  - trl: f(prompts=[...], completions=[...], completion_ids=[...], **{column: [...]}) -> [score or None],
    called with lists of one (None: not applicable, scored 0);
  - verl: compute_score(data_source, solution_str, ground_truth, extra_info) -> score or {"score": ...}.
Without a function, a spec builds the task and calls its own `gold` or `proxy`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from harness.registry import BUILTIN_REWARDS, REWARD_STYLES, load
from harness.rewards.references import load_function, one_line, source_digest
from harness.tasks import make_task, task_class

__all__ = ["FunctionReward", "TaskReward", "check_reward", "load_function", "reward_spec", "source_digest"]
CHECKED_PROBLEMS = 20  # reference answers each reward is tried on before any model loads
Score = Callable[[object, str, list], float]  # (problem, completion, completion_ids) -> score


def trl_style(function: Callable, ref: str) -> Score:
    def score(problem, completion: str, completion_ids: list) -> float:
        columns = {name: [value] for name, value in getattr(problem, "columns", {}).items()}
        scores = function(prompts=[problem.prompt], completions=[completion], completion_ids=[completion_ids],
                          trainer_state=None, log_extra=_ignored, log_metric=_ignored, **columns)
        if not isinstance(scores, (list, tuple)):
            raise TypeError(f"{ref} returned {type(scores).__name__}, not a list of one score per completion")
        if len(scores) != 1:
            raise ValueError(f"{ref} returned {len(scores)} scores for 1 completion")
        return 0.0 if scores[0] is None else _as_score(scores[0], ref)
    return score


def _ignored(*args, **kwargs) -> None:
    """TRL's log_extra and log_metric: a reward worker has no tracker to log to."""


def verl_style(function: Callable, ref: str) -> Score:
    def score(problem, completion: str, completion_ids: list) -> float:
        columns = dict(getattr(problem, "columns", {}))
        result = function(data_source=columns.get("data_source", "coldclimb"), solution_str=completion,
                          ground_truth=getattr(problem, "answer", None), extra_info=columns)
        if isinstance(result, dict):
            if "score" not in result:
                raise ValueError(f"{ref} returned a dict without 'score' (keys: {', '.join(map(str, result))})")
            result = result["score"]
        return _as_score(result, ref)
    return score


def _as_score(value, ref: str) -> float:
    """A user's score, checked: a number in [0, 1]."""
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{ref} returned {value!r}, not a number") from None
    if not 0.0 <= score <= 1.0:  # NaN fails too
        raise ValueError(f"{ref} returned {score}, not a score in [0, 1]")
    return score


@dataclass(frozen=True)
class FunctionReward:
    """A user's function (or a built-in, always TRL-style), called as `style` says."""

    ref: str
    style: str
    name: str  # e.g. task.gold=rewards.py:score
    stop_when_most_fail = True  # harness.rewards.worker.RewardSpec

    def build(self) -> Score:
        if self.style not in REWARD_STYLES:
            raise ValueError(f"{self.name}: no calling convention {self.style!r} (one of {', '.join(REWARD_STYLES)})")
        function = load_function(self.ref)
        if self.ref in BUILTIN_REWARDS:  # the reference answer, whatever column task.answer_key names
            return lambda problem, completion, completion_ids: function([completion], [problem.answer])[0]
        return load(REWARD_STYLES[self.style])(function, self.ref)


@dataclass(frozen=True)
class TaskReward:
    """The task's own verifier or hand-made proxy, the task built in the worker from its config."""

    task_cfg: object = field(hash=False)  # a TaskConfig: it holds a dict, so it is compared, never hashed
    which: str
    name: str
    stop_when_most_fail = False  # harness.rewards.worker.RewardSpec

    def build(self) -> Score:
        judge = getattr(make_task(self.task_cfg), self.which)
        return lambda problem, completion, completion_ids: judge(problem, completion)


def reward_spec(task_cfg, which: str) -> Optional[FunctionReward | TaskReward]:
    """task.gold or task.proxy's spec: the function it names, else the task's own method; None for a
    proxy the task does not have."""
    if which not in ("gold", "proxy"):
        raise ValueError(f"no reward {which!r}: gold or proxy")
    ref = getattr(task_cfg, which)
    if ref is not None:
        return FunctionReward(ref, task_cfg.gold_style, f"task.{which}={ref}")
    if which == "gold" or callable(getattr(task_class(task_cfg.name), "proxy", None)):
        return TaskReward(task_cfg, which, f"{task_cfg.name}.{which}")
    return None


def check_reward(fn: Score, problems: list, which: str, name: str) -> Optional[str]:
    """Try a built reward on the reference answers of up to 20 problems (the user's own data, scored in
    process). ValueError in one line naming `name` when it raises, returns other than one score, or scores
    outside [0, 1]. For gold, a warning when fewer than half the reference answers get full marks.
    A problem without an `answer` is tried on an empty completion and left out of that rate."""
    sample = problems[:CHECKED_PROBLEMS]
    scores = [_reference_score(fn, problem, name) for problem in sample]
    graded = [score for problem, score in zip(sample, scores) if hasattr(problem, "answer")]
    full_marks = sum(score == 1.0 for score in graded)  # as pass@1 counts (harness.metrics.full_marks)
    if which == "gold" and graded and full_marks < len(graded) / 2:
        return (f"{name} gives full marks to only {full_marks} of {len(graded)} reference answers "
                f"({full_marks / len(graded):.0%}): does it read the right column?")
    return None


def _reference_score(fn: Score, problem, name: str) -> float:
    try:
        score = fn(problem, getattr(problem, "answer", ""), [])
    except Exception as error:  # whatever the user's function raises: finding that is this check's purpose
        raise ValueError(f"{name} raised {one_line(error)} on a reference answer") from None
    if not 0.0 <= score <= 1.0:  # NaN fails too
        raise ValueError(f"{name} scored a reference answer {score}: scores must be in [0, 1]")
    return score
