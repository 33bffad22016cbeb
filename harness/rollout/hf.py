"""Rollouts with Hugging Face `generate` on the policy itself (weights are shared, no sync)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Optional

import torch
from transformers import GenerationConfig

from harness.chat import chat_format
from harness.rollout.base import Rollout, SamplingParams, completion_mask, pad_concat


@contextmanager
def model_defaults_ignored(model):
    """An empty `model.generation_config` while `generate` runs, so rollouts sample exactly what `rollout.*` says.

    `generate` fills each field its GenerationConfig leaves unset from the model's own (a repetition penalty, min_p,
    suppressed tokens, stop strings, ...), and transformers 5 has no switch against that. With an empty one, unset
    fields take the global defaults, which leave the logits alone except top_k, which the engine sets."""
    shipped = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = shipped


@contextmanager
def seeded(seed: Optional[int], device: torch.device):
    """torch's generators (the CPU's and the device's) seeded with `seed` for the block, and put back after it;
    None: left as they are."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


class HFEngine:
    @classmethod
    def for_run(cls, model, tokenizer, rollout_cfg, seed: int) -> "HFEngine":
        return cls(model, tokenizer)  # it samples from torch's generators, which the stage seeds

    def __init__(self, model, tokenizer, batch_size: int = 512):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id

    def sync_weights(self) -> None:
        """Nothing to do: generation runs on the training model."""

    def close(self) -> None:
        """Nothing to free."""

    @torch.no_grad()
    def generate(self, prompts: list[str], num_generations: int, sampling: SamplingParams,
                 seeds: Optional[list[int]] = None) -> Rollout:
        texts, special = chat_format(self.tokenizer, prompts)
        repeated = [p for p in texts for _ in range(num_generations)]
        # With seeds, each group alone from its own seed; else batches of rows from torch's generators.
        batches = [([text] * num_generations, seed) for text, seed in zip(texts, seeds)] if seeds is not None else \
            [(repeated[start:start + self.batch_size], None) for start in range(0, len(repeated), self.batch_size)]
        config = GenerationConfig(
            do_sample=True,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=0,  # sample the full distribution, as the objective assumes
            max_new_tokens=sampling.max_completion_length,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        chunks = []
        for rows, seed in batches:
            batch = self.tokenizer(rows, return_tensors="pt", padding=True, add_special_tokens=special).to(device)
            with model_defaults_ignored(self.model), seeded(seed, device):
                out = self.model.generate(**batch, generation_config=config)
            width = batch["input_ids"].size(1)
            chunks.append((batch["input_ids"], batch["attention_mask"], out[:, width:]))
        self.model.train(was_training)
        prompt_ids = pad_concat([c[0] for c in chunks], self.tokenizer.pad_token_id, left=True)
        prompt_mask = pad_concat([c[1] for c in chunks], 0, left=True)
        completion_ids = pad_concat([c[2] for c in chunks], self.tokenizer.pad_token_id, left=False)
        mask, truncated = completion_mask(completion_ids, self.tokenizer.eos_token_id)
        completion_ids = completion_ids.masked_fill(mask == 0, self.tokenizer.pad_token_id)
        texts = self.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        return Rollout(prompt_ids, prompt_mask, completion_ids, mask, texts, truncated)

