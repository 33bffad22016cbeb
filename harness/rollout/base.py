"""The rollout engine interface: prompts in, K completions per prompt out, as token tensors.

HF `generate` implements it today; a vLLM engine implements the same two methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class Rollout:
    """Completions for prompts repeated K times each, groups contiguous (prompt i: rows iK..iK+K-1)."""

    prompt_ids: torch.Tensor  # [N, P], left-padded
    prompt_mask: torch.Tensor  # [N, P]
    completion_ids: torch.Tensor  # [N, C], right-padded
    completion_mask: torch.Tensor  # [N, C], 1 up to and including the first eos
    texts: list[str]  # decoded completions, special tokens dropped
    truncated: torch.Tensor  # [N] bool: hit the length limit without eos

    @property
    def num_tokens(self) -> int:
        return int(self.prompt_mask.sum() + self.completion_mask.sum())


@dataclass
class SamplingParams:
    temperature: float
    top_p: float
    max_completion_length: int


class RolloutEngine(Protocol):
    def generate(self, prompts: list[str], num_generations: int, sampling: SamplingParams) -> Rollout: ...

    def sync_weights(self) -> None:
        """Make the engine sample from the policy's current weights."""


def completion_mask(completion_ids: torch.Tensor, eos_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask through the first eos, and which rows never produced one."""
    is_eos = completion_ids == eos_token_id
    has_eos = is_eos.any(dim=1)
    first_eos = torch.where(has_eos, is_eos.int().argmax(dim=1), completion_ids.size(1))
    positions = torch.arange(completion_ids.size(1), device=completion_ids.device)
    return (positions[None, :] <= first_eos[:, None]).long(), ~has_eos
