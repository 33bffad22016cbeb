"""The rollout engine interface: prompts in, K completions per prompt out, as token tensors.

HF `generate` (`hf.py`) and vLLM (`vllm_engine.py`) implement it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional, Protocol

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
    engine_logprobs: Optional[torch.Tensor] = None  # [N, C]: the sampler's own log-probs, if it gives them

    def to(self, device) -> "Rollout":
        return Rollout(**{f.name: value.to(device) if isinstance(value := getattr(self, f.name), torch.Tensor)
                          else value for f in fields(self)})

    @property
    def num_tokens(self) -> int:
        return int(self.prompt_mask.sum() + self.completion_mask.sum())

    def select(self, rows: list[int]) -> "Rollout":
        index = torch.tensor(rows, dtype=torch.long)
        return Rollout(self.prompt_ids[index], self.prompt_mask[index], self.completion_ids[index],
                       self.completion_mask[index], [self.texts[i] for i in rows], self.truncated[index],
                       None if self.engine_logprobs is None else self.engine_logprobs[index])

    @staticmethod
    def concat(parts: list["Rollout"], pad_token_id: int) -> "Rollout":
        return Rollout(
            pad_concat([r.prompt_ids for r in parts], pad_token_id, left=True),
            pad_concat([r.prompt_mask for r in parts], 0, left=True),
            pad_concat([r.completion_ids for r in parts], pad_token_id, left=False),
            pad_concat([r.completion_mask for r in parts], 0, left=False),
            [text for r in parts for text in r.texts],
            torch.cat([r.truncated for r in parts]),
            None if parts[0].engine_logprobs is None else pad_concat([r.engine_logprobs for r in parts], 0, left=False),
        )


@dataclass
class SamplingParams:
    temperature: float
    top_p: float
    max_completion_length: int
    group_seeds: bool = False  # each group from a seed of its own (rollout.group_seeds)

    @classmethod
    def of(cls, rollout_cfg) -> "SamplingParams":
        """A stage's sampling, as rollout.* sets it (evaluation sets its own temperature)."""
        return cls(rollout_cfg.temperature, rollout_cfg.top_p, rollout_cfg.max_completion_length,
                   rollout_cfg.group_seeds)

    def seeds(self, groups: int, generator: Optional[torch.Generator] = None) -> Optional[list[int]]:
        """A seed for each of `groups` groups, drawn from `generator` (torch's default: the stage's stream), when
        sampling takes group seeds; else None, and nothing is drawn."""
        return torch.randint(2**31 - 1, (groups,), generator=generator).tolist() if self.group_seeds else None


class RolloutEngine(Protocol):
    pad_token_id: int

    @classmethod
    def for_run(cls, model, tokenizer, rollout_cfg, seed: int) -> "RolloutEngine":
        """The engine for a stage's policy, as harness.rollout.make_engine builds it."""

    def generate(self, prompts: list[str], num_generations: int, sampling: SamplingParams,
                 seeds: Optional[list[int]] = None) -> Rollout:
        """K completions per prompt; with `seeds`, each prompt's group sampled from its own seed (whatever
        else is in the batch)."""

    def sync_weights(self) -> None:
        """Make the engine sample from the policy's current weights."""

    def close(self) -> None:
        """Free what the engine holds beyond the policy."""


def pad_concat(tensors: list[torch.Tensor], value: int, left: bool) -> torch.Tensor:
    """Concatenate [n_i, w_i] tensors along rows, padding each to the widest on one side."""
    width = max(t.size(1) for t in tensors)
    sides = [(width - t.size(1), 0) if left else (0, width - t.size(1)) for t in tensors]
    return torch.cat([torch.nn.functional.pad(t, side, value=value) for t, side in zip(tensors, sides)])


def completion_mask(completion_ids: torch.Tensor, eos_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask through the first eos, and which rows never produced one."""
    is_eos = completion_ids == eos_token_id
    has_eos = is_eos.any(dim=1)
    first_eos = torch.where(has_eos, is_eos.int().argmax(dim=1), completion_ids.size(1))
    positions = torch.arange(completion_ids.size(1), device=completion_ids.device)
    return (positions[None, :] <= first_eos[:, None]).long(), ~has_eos
