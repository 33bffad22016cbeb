"""Supervised fine-tuning with a completion-only loss. It makes the tiny model's base (on
format-only data) and runs the cold-start (on the seed set or on solver demonstrations); its loop,
with another loss, trains the reward model (harness.reward_model)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from harness.chat import chat_format
from harness.faults import require_finite

IGNORE = -100  # label that cross-entropy skips


def encode_examples(tokenizer, examples: list[tuple[str, str]], device: str) -> dict[str, torch.Tensor]:
    """Right-padded prompt+completion+eos, with labels only on the completion and its eos."""
    rows, labels = [], []
    prompts, special = chat_format(tokenizer, [prompt for prompt, _ in examples])
    for prompt, (_, completion) in zip(prompts, examples):
        prompt_ids = tokenizer(prompt, add_special_tokens=special)["input_ids"]
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(prompt_ids + completion_ids)
        labels.append([IGNORE] * len(prompt_ids) + completion_ids)
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    return {
        "input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device),
        "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device),
        "labels": torch.tensor([r + [IGNORE] * (width - len(r)) for r in labels], device=device),
    }


@dataclass(frozen=True)
class Schedule:
    """How long and how fast finetune trains: AdamW steps, examples per step, peak learning rate."""

    steps: int
    batch_size: int
    learning_rate: float


def finetune(model, tokenizer, examples: list[tuple], schedule: Schedule, *, seed: int,
             log: Optional[Callable[[int, dict], None]] = None, desc: str = "sft",
             encode: Optional[Callable[..., dict]] = None) -> None:
    """`schedule.steps` AdamW steps over shuffled epochs of `examples`, cosine schedule with warmup.
    `encode(tokenizer, examples, device)` makes the batch whose `model(**batch).loss` is minimised;
    None: `encode_examples`, (prompt, completion) pairs under the completion-only language-model loss."""
    steps, batch_size, learning_rate = schedule.steps, schedule.batch_size, schedule.learning_rate
    if steps == 0:
        return
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, max(1, steps // 20), steps)
    order_rng = random.Random(seed)
    order: list[int] = []
    model.train()
    for step in (bar := tqdm(range(1, steps + 1), desc=desc, leave=False, disable=None)):
        if len(order) < batch_size:
            order += order_rng.sample(range(len(examples)), len(examples))
        batch_ids, order = order[:batch_size], order[batch_size:]
        batch = (encode or encode_examples)(tokenizer, [examples[i] for i in batch_ids], device)
        loss = model(**batch).loss
        require_finite(loss, f"the {desc} loss")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        require_finite(grad_norm, f"the {desc} gradient norm")
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if log is not None:
            log(step, {"train/loss": loss.item(), "train/grad_norm": grad_norm.item(),
                       "train/learning_rate": schedule.get_last_lr()[0]})
    model.eval()
