"""What is measured from a batch of rollouts. Names follow TRL where the concept is the same."""

from __future__ import annotations

import torch

from harness.distributed import all_max, all_sum
from harness.rollout.base import Rollout
from harness.theory import live_probability


LIVE_STD = 1e-6  # a group's reward std at or below this is float rounding, not signal


def live_groups(reward: torch.Tensor, num_generations: int) -> torch.Tensor:
    """[groups] bool: the group's training rewards are not all equal, so it carries gradient.
    Equal within a tolerance, as TRL's `frac_reward_zero_std` counts: rewards summed in another
    order (a proxy's fractions, a length penalty) differ in their last float32 bits (a std of a
    few 1e-8, above TRL's 1e-8), which carries no signal; any real difference is far above 1e-6."""
    return reward.view(-1, num_generations).std(dim=1) > LIVE_STD


def full_marks(gold: torch.Tensor) -> torch.Tensor:
    """1 where the gold score is full marks, else 0: what pass@1 counts. Exactly 1, in float64: a verifier
    summing partial credit may give a wrong answer 1 + 2e-16 (reasoning-gym's spell_backward does)."""
    return (gold == 1.0).float()


def is_binary(reward: torch.Tensor) -> bool:
    """Every reward is 0 or 1: the case the live-group theory is about."""
    return bool(((reward == 0) | (reward == 1)).all())


def reward_metrics(gold: torch.Tensor, proxy: torch.Tensor, reward: torch.Tensor, num_generations: int) -> dict:
    """Rewards, group liveness and per-prompt pass rates for one generation batch.

    A group is live when its training rewards are not all equal: only then does it carry gradient.
    `live_group_frac/predicted` is P_live at the batch's pass rate on the training reward (the
    one that defines liveness), logged only when that reward is binary: what the measured
    fraction would be if every prompt were equally hard. Prompts of mixed difficulty keep fewer
    groups alive than that (P_live is concave), so the gap measures the spread of difficulty.
    (A prompt's own pass rate cannot predict its own group: it is estimated from that group.)
    """
    group_std = reward.view(-1, num_generations).std(dim=1)
    live = live_groups(reward, num_generations).float()
    pass_rates = full_marks(gold).view(-1, num_generations).mean(dim=1)
    return {
        "reward": reward.mean().item(),
        "reward_std": group_std.mean().item(),
        "rewards/gold/mean": gold.mean().item(),
        "rewards/gold/std": gold.std().item(),
        "rewards/proxy/mean": proxy.mean().item(),
        "rewards/proxy/std": proxy.std().item(),
        "frac_reward_zero_std": 1.0 - live.mean().item(),
        "live_group_frac": live.mean().item(),
        **({"live_group_frac/predicted": live_probability(reward.mean().item(), num_generations)}
           if is_binary(reward) else {}),
        "pass_rate/mean": pass_rates.mean().item(),
        "pass_rate/solved_frac": (pass_rates == 1).float().mean().item(),
        "pass_rate/unsolved_frac": (pass_rates == 0).float().mean().item(),
        "pass_rate/per_prompt": pass_rates.tolist(),
    }


def dead_group_cost(reward: torch.Tensor, rollout: Rollout, num_generations: int) -> dict:
    """Rollout tokens spent on groups that carry no gradient."""
    dead = ~live_groups(reward, num_generations)
    tokens = rollout.completion_mask.sum(dim=1).view(-1, num_generations).sum(dim=1).float()
    spent = tokens[dead].sum()
    return {"rollout_tokens/dead": spent.item(), "rollout_tokens/dead_frac": (spent / tokens.sum()).item()}


def completion_metrics(rollout: Rollout) -> dict:
    lengths = rollout.completion_mask.sum(dim=1).float()
    finished = lengths[~rollout.truncated]
    return {
        "completions/mean_length": lengths.mean().item(),
        "completions/min_length": lengths.min().item(),
        "completions/max_length": lengths.max().item(),
        "completions/clipped_ratio": rollout.truncated.float().mean().item(),
        "completions/mean_terminated_length": finished.mean().item() if len(finished) else 0.0,
    }


def sample_rows(prompts: list[str], rollout: Rollout, gold: torch.Tensor, proxy: torch.Tensor, count: int) -> list[dict]:
    """The first `count` completions of a batch, for the completions table."""
    return [
        {"prompt": prompts[i], "completion": rollout.texts[i], "gold": gold[i].item(), "proxy": proxy[i].item()}
        for i in range(min(count, len(rollout.texts)))
    ]


def logprob_gap(rollout: Rollout, trainer_logp: torch.Tensor) -> dict:
    """Mean and max |engine log-prob - trainer log-prob| over completion tokens (of every rank's rows)."""
    gap = (rollout.engine_logprobs - trainer_logp).abs()[rollout.completion_mask.bool()]
    total, count = all_sum([gap.double().sum().item(), gap.numel()])
    largest = gap.max().item() if gap.numel() else 0.0  # a rank may hold no token (harness.grpo.stand_in)
    return {"rollout/logprob_gap_mean": total / count, "rollout/logprob_gap_max": all_max(largest)}
