"""A step's generation batch: prompts -> K completions each -> gold and proxy rewards.

The proxy is the task's hand-made formula, or any `ProxyReward` passed in: a learned reward model
(harness.reward_model) with task.reward=learned.

With DAPO's dynamic sampling, groups whose training rewards are all equal (dead: zero
advantage, zero gradient) are dropped and more prompts are sampled, for at most
`dynamic_sampling_max_rounds` rounds, until `prompts_per_step` live groups are in hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from harness.config import GRPOConfig
from harness.metrics import live_groups
from harness.rollout.base import Rollout, RolloutEngine, SamplingParams
from harness.tasks import Problem, ProblemStream, Task

# A proxy reward scores a batch: (one problem per completion, the completions) -> one score each.
ProxyReward = Callable[[list, list[str]], torch.Tensor]


@dataclass
class Groups:
    """Scored completions, K consecutive rows per prompt."""

    problems: list[Problem]  # one per group
    rollout: Rollout
    gold: torch.Tensor
    proxy: torch.Tensor
    reward: torch.Tensor  # the one that trains: gold or proxy (the formula or a learned one)
    num_generations: int

    @property
    def prompts(self) -> list[str]:
        return [p.prompt for p in self.problems for _ in range(self.num_generations)]

    def live_indices(self) -> list[int]:
        """The groups whose training rewards differ (the rest get zero advantage)."""
        return live_groups(self.reward, self.num_generations).nonzero().flatten().tolist()

    @staticmethod
    def concat(parts: list["Groups"], pad_token_id: int) -> "Groups":
        if len(parts) == 1:
            return parts[0]
        return Groups([p for g in parts for p in g.problems], Rollout.concat([g.rollout for g in parts], pad_token_id),
                      *(torch.cat([getattr(g, name) for g in parts]) for name in ("gold", "proxy", "reward")),
                      parts[0].num_generations)

    def select(self, groups: list[int]) -> "Groups":
        K = self.num_generations
        rows = [g * K + k for g in groups for k in range(K)]
        return Groups([self.problems[g] for g in groups], self.rollout.select(rows), self.gold[rows],
                      self.proxy[rows], self.reward[rows], K)


def soft_overlong_punishment(lengths: torch.Tensor, max_completion_length: int, cache: int) -> torch.Tensor:
    """DAPO's length penalty: 0 up to L_max - cache tokens, then falling linearly to -1 at L_max."""
    if cache == 0:
        return torch.zeros(lengths.shape)
    over = (lengths.float() - (max_completion_length - cache)).clamp(min=0)
    return torch.where(lengths > max_completion_length, -1.0, -over / cache)


def task_rewards(task: Task, problems: list[Problem], texts: list[str],
                 proxy: Optional[ProxyReward] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Gold and proxy rewards of completions, len(texts) / len(problems) consecutive ones per problem.
    The proxy is `proxy`'s scores when given, else the task's own formula."""
    repeated = [p for p in problems for _ in range(len(texts) // len(problems))]
    gold = torch.tensor([task.gold(p, t) for p, t in zip(repeated, texts)])
    if proxy is not None:
        return gold, proxy(repeated, texts)
    return gold, torch.tensor([task.proxy(p, t) for p, t in zip(repeated, texts)])


def score(task: Task, problems: list[Problem], rollout: Rollout, cfg: GRPOConfig, max_completion_length: int,
          reward_name: str, proxy: Optional[ProxyReward] = None) -> Groups:
    """Gold and proxy rewards (task_rewards); the training reward is gold, or else the proxy (task.reward
    proxy or learned), plus any length penalty."""
    if reward_name == "learned" and proxy is None:  # the formula must never stand in for the reward model
        raise ValueError("reward_name='learned' needs the reward model as `proxy`")
    K = cfg.num_generations
    gold, proxy = task_rewards(task, problems, rollout.texts, proxy)
    penalty = soft_overlong_punishment(rollout.completion_mask.sum(dim=1), max_completion_length,
                                       cfg.soft_overlong_cache)
    return Groups(problems, rollout, gold, proxy, (gold if reward_name == "gold" else proxy) + penalty, K)


def sample_groups(engine: RolloutEngine, task: Task, problems: ProblemStream, cfg: GRPOConfig,
                  sampling: SamplingParams, reward_name: str,
                  proxy: Optional[ProxyReward] = None) -> tuple[Groups, Groups, int]:
    """(every group sampled this step, the groups the update trains on, generation rounds used)."""
    K = cfg.num_generations
    parts, live = [], 0
    while True:
        batch = problems.take(cfg.prompts_per_step)
        rollout = engine.generate([p.prompt for p in batch], K, sampling)
        parts.append(score(task, batch, rollout, cfg, sampling.max_completion_length, reward_name, proxy))
        if not cfg.dynamic_sampling:
            return parts[0], parts[0], 1
        live += len(parts[-1].live_indices())
        if live >= cfg.prompts_per_step or len(parts) >= cfg.dynamic_sampling_max_rounds:
            sampled = Groups.concat(parts, engine.pad_token_id)
            return sampled, sampled.select(sampled.live_indices()[: cfg.prompts_per_step]), len(parts)
