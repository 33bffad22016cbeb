"""A step's generation batch: prompts -> K completions each -> gold and proxy rewards (harness.rewards).

With DAPO's dynamic sampling, groups whose training rewards are all equal (dead: zero
advantage, zero gradient) are dropped and more prompts are sampled, for at most
`dynamic_sampling_max_rounds` rounds, until `prompts_per_step` live groups are in hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

import torch

from harness.config import GRPOConfig
from harness.distributed import all_gathered, all_sum, my_share, rank, world_size
from harness.metrics import live_groups
from harness.rewards.reward import Reward, summed_failures
from harness.rollout.base import Rollout, RolloutEngine, SamplingParams
from harness.tasks import Problem, ProblemStream


@dataclass
class Groups:
    """Scored completions, K consecutive rows per prompt."""

    problems: list[Problem]  # one per group
    rollout: Rollout
    gold: torch.Tensor
    proxy: torch.Tensor
    reward: torch.Tensor  # the one that trains: gold or proxy (the formula or a learned one)
    num_generations: int
    failures: dict  # scorings that failed (harness.rewards.reward.Measured)

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
                      parts[0].num_generations, summed_failures([g.failures for g in parts]))

    @staticmethod
    def whole(rounds: list["Groups"], pad_token_id: int) -> "Groups":
        """Every rank's groups of a step's sampling rounds, round by round and each round rank by rank: the batch
        in the order one process samples it (what a step's metrics measure); in one process, the rounds'."""
        if world_size() == 1:
            return Groups.concat(rounds, pad_token_id)
        mine = [Groups(g.problems, g.rollout.to("cpu"), g.gold, g.proxy, g.reward, g.num_generations, g.failures)
                for g in rounds]
        everyone = all_gathered(mine)  # [rank][round]
        return Groups.concat([ranks[i] for i in range(len(rounds)) for ranks in everyone], pad_token_id)

    def select(self, groups: list[int]) -> "Groups":
        K = self.num_generations
        rows = [g * K + k for g in groups for k in range(K)]
        return Groups([self.problems[g] for g in groups], self.rollout.select(rows), self.gold[rows],
                      self.proxy[rows], self.reward[rows], K, self.failures)


def soft_overlong_punishment(lengths: torch.Tensor, max_completion_length: int, cache: int) -> torch.Tensor:
    """DAPO's length penalty: 0 up to L_max - cache tokens, then falling linearly to -1 at L_max."""
    if cache == 0:
        return torch.zeros(lengths.shape)
    over = (lengths.float() - (max_completion_length - cache)).clamp(min=0)
    return torch.where(lengths > max_completion_length, -1.0, -over / cache)


def score(reward: Reward, problems: list[Problem], rollout: Rollout, cfg: GRPOConfig,
          max_completion_length: int) -> Groups:
    """Gold and proxy rewards, and the one that trains (Reward.training) plus any length penalty."""
    gold, proxy, failures = reward.measure(problems, rollout)
    penalty = soft_overlong_punishment(rollout.completion_mask.sum(dim=1).cpu(), max_completion_length,
                                       cfg.soft_overlong_cache)
    return Groups(problems, rollout, gold, proxy, reward.training(gold, proxy) + penalty, cfg.num_generations,
                  failures)


@dataclass
class GroupSampler:
    """Where a GRPO stage's groups come from: task -> rollout -> reward."""

    problems: ProblemStream
    engine: RolloutEngine  # samples from the policy (its weights synced after each update)
    reward: Reward  # measures gold and proxy, and says which trains
    sampling: SamplingParams

    def __call__(self, cfg: GRPOConfig) -> tuple[list[Groups], Groups]:
        """(the groups this rank sampled this step, one Groups a generation round; those it trains on). Every
        rank draws the step's prompts from the same stream and samples its share of them (harness.distributed)."""
        K = cfg.num_generations
        parts, live = [], 0
        while True:
            problems = self.problems.take(cfg.prompts_per_step)
            seeds = self.sampling.seeds(len(problems))  # drawn by every rank alike, before the batch is split
            batch = my_share(problems)
            rollout = self.engine.generate([p.prompt for p in batch], K, self.sampling,
                                           seeds=None if seeds is None else my_share(seeds))
            parts.append(score(self.reward, batch, rollout, cfg, self.sampling.max_completion_length))
            if not cfg.dynamic_sampling:
                return parts, parts[0]
            [found] = all_sum([len(parts[-1].live_indices())])  # live groups over every rank
            live += found
            if live >= cfg.prompts_per_step or len(parts) >= cfg.dynamic_sampling_max_rounds:
                sampled = Groups.concat(parts, self.engine.pad_token_id)
                kept = kept_live([len(part.live_indices()) for part in parts], cfg.prompts_per_step)
                starts = accumulate((len(part.problems) for part in parts[:-1]), initial=0)  # each round's first group
                chosen = [start + g for part, start, n in zip(parts, starts, kept) for g in part.live_indices()[:n]]
                return parts, sampled.select(chosen)


def kept_live(live_per_round: list[int], budget: int) -> list[int]:
    """How many of this rank's live groups of each round dynamic sampling keeps: the first `budget` live groups
    of the whole batch, in the order one process would hold them (round by round, then rank by rank)."""
    counts, kept = all_gathered(live_per_round), []
    for round_ in range(len(live_per_round)):
        for other, rank_counts in enumerate(counts):
            take = min(rank_counts[round_], budget)
            budget -= take
            if other == rank():
                kept.append(take)
    return kept
