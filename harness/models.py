"""The policy and its tokenizer: the built-in tiny Llama, or any Hugging Face causal LM on disk.

The tiny model gets a real `transformers` tokenizer over the task's vocabulary, and its "base"
is a short pre-training on format-only data (well-formed, unconstrained answers), cached on
disk by a hash of everything that made it, so only the first run of a sweep pays for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from harness.sft import finetune

SPECIAL = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
BASE_FORMAT_VERSION = 1  # bump when the pre-training data or recipe changes meaning


def build_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer: one token per whitespace-separated word, BOS prepended."""
    vocab = {token: i for i, token in enumerate([*SPECIAL.values(), *words])}
    core = Tokenizer(models.WordLevel(vocab, unk_token=SPECIAL["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    bos = SPECIAL["bos_token"]
    core.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, vocab[bos])])
    return PreTrainedTokenizerFast(tokenizer_object=core, padding_side="left", **SPECIAL)


def build_tiny_model(model_cfg, tokenizer, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=model_cfg.hidden_size,
        intermediate_size=model_cfg.intermediate_size,
        num_hidden_layers=model_cfg.num_layers,
        num_attention_heads=model_cfg.num_heads,
        num_key_value_heads=model_cfg.num_heads,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config)


def base_recipe(model_cfg, task) -> dict:
    """Everything that determines the tiny base; its hash names the cache entry."""
    arch = {k: v for k, v in asdict(model_cfg).items() if k not in ("path", "dtype", "cache_dir")}
    return {"version": BASE_FORMAT_VERSION, "model": arch, "task": task.name,
            "num_items": task.num_items, "num_constraints": task.num_constraints, "vocabulary": task.vocabulary()}


def tiny_base(model_cfg, task) -> Path:
    """The cached base for this recipe, pre-training it first if no run has yet."""
    recipe = base_recipe(model_cfg, task)
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    target = Path(model_cfg.cache_dir).expanduser() / "base" / f"tiny-{digest}"
    if (target / "recipe.json").exists():
        return target
    tokenizer = build_tokenizer(task.vocabulary())
    model = build_tiny_model(model_cfg, tokenizer, model_cfg.pretrain_seed)
    rng = random.Random(model_cfg.pretrain_seed)
    problems = [task.sample(rng) for _ in range(model_cfg.pretrain_steps * model_cfg.pretrain_batch_size)]
    examples = [(p.prompt, task.format_only(p, rng)) for p in problems]
    finetune(model, tokenizer, examples, steps=model_cfg.pretrain_steps, batch_size=model_cfg.pretrain_batch_size,
             learning_rate=model_cfg.pretrain_learning_rate, seed=model_cfg.pretrain_seed, desc="base pre-training")
    # Written aside then renamed, so parallel trials never see half a model.
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".building-"))
    save_policy(model, tokenizer, staging)
    (staging / "recipe.json").write_text(json.dumps(recipe, indent=2))
    try:
        os.rename(staging, target)
    except OSError:  # another process finished first; its copy is identical
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_policy(path, dtype: str, device: str):
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device)
    model.eval()
    return model, tokenizer


def save_policy(model, tokenizer, path) -> None:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
