"""The rewards a stage measures and trains on, passed once: gold (the verifier), the proxy (a function,
the task's formula, or a learned reward model) and which of them trains.

Completions are scored in reward worker processes (harness.rewards.pool): model text is untrusted, some
verifiers `eval` it, and a user's function may hang or crash. A learned reward model reads tokens, not
text, and runs in the trainer. Gold scores may give partial credit (reasoning-gym does): pass@1 counts
full marks only, and the training reward is full marks unless task.partial_credit says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import torch

from harness.rewards.functions import reward_spec
from harness.metrics import full_marks
from harness.rewards.pool import RewardPool
from harness.rollout.base import Rollout

# A learned proxy scores a batch: (one problem per completion, the completions) -> one score each.
LearnedScores = Callable[[list, list[str]], torch.Tensor]
FAILURE_KINDS = ("errors", "timeouts", "crashes")


class Measured(NamedTuple):
    gold: torch.Tensor
    proxy: torch.Tensor
    failures: dict  # {errors, timeouts, crashes}: completions whose scoring failed, each scored 0


def summed_failures(parts: list[dict]) -> dict:
    """Failure counts of several scorings (rounds, ranks) added up, kind by kind."""
    return {kind: sum(part[kind] for part in parts) for kind in parts[0]}


def failure_metrics(failures: dict, prefix: str = "rewards") -> dict:
    return {f"{prefix}/{kind}": count for kind, count in failures.items()}


@dataclass
class Reward:
    pool: RewardPool
    gold_spec: object  # a harness.rewards.worker.RewardSpec
    proxy_spec: Optional[object] = None  # None: the task has no proxy; its scores are NaN
    learned: Optional[LearnedScores] = None  # a reward model measured as the proxy, in proxy_spec's place
    trains_on: str = "gold"  # gold | proxy | learned
    partial_credit: bool = False

    @classmethod
    def for_task(cls, pool: RewardPool, task_cfg, trains_on: str = "gold",
                 learned: Optional[LearnedScores] = None) -> "Reward":
        if trains_on == "learned" and learned is None:  # the formula must never stand in for the reward model
            raise ValueError("a reward that trains on a learned proxy needs the reward model")
        return cls(pool, reward_spec(task_cfg, "gold"), reward_spec(task_cfg, "proxy"), learned, trains_on,
                   task_cfg.partial_credit)

    def measure(self, problems: list, rollout: Rollout) -> Measured:
        """Gold and proxy scores of a rollout's completions, len(texts) / len(problems) consecutive ones
        per problem, and how many scorings failed."""
        repeated = [p for p in problems for _ in range(len(rollout.texts) // len(problems))]
        ids = [row[mask.bool()].tolist() for row, mask in zip(rollout.completion_ids, rollout.completion_mask)]
        failures = dict.fromkeys(FAILURE_KINDS, 0)
        gold = self._scored(self.gold_spec, repeated, rollout.texts, ids, failures, torch.float64)
        if self.learned is not None:
            proxy = self.learned(repeated, rollout.texts)
        elif self.proxy_spec is None:
            proxy = torch.full_like(gold, float("nan"))
        else:
            proxy = self._scored(self.proxy_spec, repeated, rollout.texts, ids, failures, torch.float32)
        return Measured(gold, proxy, failures)

    @property
    def has_proxy(self) -> bool:
        return self.learned is not None or self.proxy_spec is not None

    def training(self, gold: torch.Tensor, proxy: torch.Tensor) -> torch.Tensor:
        """The score GRPO's advantages are computed from."""
        if self.trains_on != "gold":
            return proxy
        return gold.float() if self.partial_credit else full_marks(gold)

    def _scored(self, spec, problems: list, texts: list[str], ids: list[list[int]], failures: dict,
                dtype: torch.dtype) -> torch.Tensor:
        scored = self.pool.score(spec, problems, texts, ids)
        for kind in FAILURE_KINDS:
            failures[kind] += getattr(scored, kind)
        return torch.tensor(scored.scores, dtype=dtype)
