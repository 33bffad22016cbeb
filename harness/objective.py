"""The GRPO objective as pure functions of tensors: advantages, the KL estimator, the loss.

    J = E[ agg_{i,t} { min(r_it A_i, clip(r_it, 1 - eps_low, 1 + eps_high) A_i) - beta KL_it } ]

with r_it = pi_theta / pi_old per token, A_i the group-relative advantage of completion i,
KL_it Schulman's k3 estimator, and agg one of four aggregations (`loss_type`). With
importance_sampling_level="sequence" (GSPO) every token of o_i shares one ratio,
s_i = exp(mean_t log r_it). The loss returned is -J, so that an optimiser minimises it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from harness.losses import SCALINGS, loss_aggregation

STD_FLOOR = 1e-4  # added to the std, as TRL does, so a zero-variance group gives A = 0


def compute_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str,
                       std_floor: float = 0.0) -> torch.Tensor:
    """A_i = (R_i - mean of its group) / (max(std, std_floor) + 1e-4); std of the group, of the
    batch, or no scaling at all.

    Rows are grouped contiguously: rows g*K .. g*K+K-1 share a prompt. std uses Bessel's
    correction. With std_floor = 0 this is TRL's formula; a floor keeps a group whose rewards
    differ only by float noise from being scaled up into a full-size advantage.
    """
    if scale_rewards not in SCALINGS:
        raise ValueError(f"scale_rewards={scale_rewards!r}: one of {', '.join(SCALINGS)}")
    grouped = rewards.view(-1, num_generations)
    centred = (grouped - grouped.mean(dim=1, keepdim=True)).view(-1)
    if SCALINGS[scale_rewards] is None:
        return centred
    return centred / (SCALINGS[scale_rewards](rewards, grouped).clamp(min=std_floor) + STD_FLOOR)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 per-token estimate of KL(pi || pi_ref): exp(d) - d - 1 with d = ref - logp, >= 0."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1


@dataclass
class LossOutput:
    loss: torch.Tensor
    kl: Optional[torch.Tensor]  # mean k3 over completion tokens, when beta > 0
    clip_low: torch.Tensor  # fraction of tokens clipped below (ratio < 1 - eps_low, A < 0)
    clip_high: torch.Tensor  # fraction clipped above (ratio > 1 + eps_high, A > 0)
    clip_region: torch.Tensor  # either


@dataclass(frozen=True)
class LossSpec:
    """What the loss reads of a stage's GRPOConfig (LossSpec.of), in place of a dozen keyword arguments."""

    loss_type: str
    epsilon: float
    epsilon_high: Optional[float] = None  # None: epsilon
    beta: float = 0.0
    importance_sampling_level: str = "token"
    max_completion_length: Optional[int] = None  # dr_grpo's constant denominator

    @classmethod
    def of(cls, cfg, max_completion_length: int) -> "LossSpec":
        return cls(cfg.loss_type, cfg.epsilon, cfg.epsilon_high, cfg.beta, cfg.importance_sampling_level,
                   max_completion_length)


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              spec: LossSpec, *, ref_logp: Optional[torch.Tensor] = None,
              num_items_in_batch: Optional[float] = None) -> LossOutput:
    """The clipped GRPO surrogate, aggregated as `loss_type` says.

    logp, old_logp, ref_logp, mask: [B, T] over completion tokens; advantages: [B].
    - grpo:    mean over sequences of each sequence's token mean
    - bnpo:    token mean over this micro-batch
    - dr_grpo: token sum / (B * max_completion_length)
    - dapo:    token sum / num_items_in_batch, the completion tokens of the whole generation
               batch, so that micro-batches add up to one token mean
    """
    epsilon = spec.epsilon
    epsilon_high = epsilon if spec.epsilon_high is None else spec.epsilon_high
    mask = mask.to(logp.dtype)
    log_ratio = logp - old_logp
    if spec.importance_sampling_level == "sequence":  # [B, 1]: one ratio per completion, broadcast over its tokens
        log_ratio = ((log_ratio * mask).sum(1) / mask.sum(1).clamp(min=1.0)).unsqueeze(1)
    elif spec.importance_sampling_level != "token":
        raise ValueError(f"importance_sampling_level={spec.importance_sampling_level!r}")
    ratio = torch.exp(log_ratio)
    adv = advantages.unsqueeze(1)
    surrogate = torch.min(ratio * adv, torch.clamp(ratio, 1 - epsilon, 1 + epsilon_high) * adv)
    per_token = -surrogate
    kl = None
    if spec.beta != 0.0:
        per_token_kl = kl_k3(logp, ref_logp)
        per_token = per_token + spec.beta * per_token_kl
        kl = _masked_mean(per_token_kl, mask)

    loss = loss_aggregation(spec.loss_type).loss(per_token * mask, mask, spec.max_completion_length,
                                                 num_items_in_batch)

    with torch.no_grad():
        low = ((ratio < 1 - epsilon) & (adv < 0)).to(mask.dtype)
        high = ((ratio > 1 + epsilon_high) & (adv > 0)).to(mask.dtype)
        return LossOutput(
            loss=loss, kl=kl,
            clip_low=_clipped_fraction(low, mask), clip_high=_clipped_fraction(high, mask),
            clip_region=_clipped_fraction(torch.maximum(low, high), mask),
        )


def micro_batch_share(loss_type: str, mask: torch.Tensor, batch) -> float:
    """The weight of a micro-batch's own loss (mask: its rows) in the loss of the whole batch (its
    harness.distributed.BatchSize)."""
    return loss_aggregation(loss_type).share(mask, batch)


def _clipped_fraction(flags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Of tokens, or of completions when the ratio is per sequence (flags [B, 1]), as TRL counts."""
    return flags.mean() if flags.size(1) == 1 else _masked_mean(flags, mask)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values.detach() * mask).sum() / mask.sum().clamp(min=1.0)
