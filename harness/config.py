"""Structured configs, one dataclass per concern: the one source of every default. A package's own group
may live beside it (the task's: harness.tasks.config); this module gathers them into the run's `Config`.

Each field carries its help and its bounds (`harness.settings.setting`); `harness.validation` checks them all in
one loop, before any model loads. The dataclasses are registered as the Hydra groups' default
options; the YAML in `harness/conf/` holds only variants (another model, task, engine) and
presets (`experiment/`, `sweep/`), each saying only what it changes.

    python -m harness.config      # every key, its default and its help
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Dict, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from harness.losses import LOSS_TYPES, SCALINGS
from harness.registry import DATA_PARALLEL, ENGINES
from harness.settings import setting, settings
from harness.stages import DEFAULT_STAGES, StageSpec, default_graph
from harness.store import GOLD
from harness.tasks.config import TASK_REWARDS, TaskConfig



@dataclass
class ModelConfig:
    path: Optional[str] = setting(None, "a Hugging Face causal LM: a local directory or a Hub id; None: the tiny "
                                        "model")
    package: Optional[str] = setting(None, "or a Python package that ships the weights (its directory is the path)")
    gguf_file: Optional[str] = setting(None, "a GGUF file in that directory: dequantised once, cached as "
                                             "safetensors")
    dtype: str = setting("float32", "the weights' dtype", choices=("float32", "bfloat16", "float16"))
    cache_dir: Optional[str] = setting(None, "the tiny model's pre-trained bases and converted GGUF models; None: "
                                             "$COLDCLIMB_CACHE (default ~/.cache/coldclimb)")
    hidden_size: int = setting(128, "the tiny model: a Llama built from these, with a word-level tokenizer", low=1)
    num_layers: int = setting(4, "the tiny model's layers", low=1)
    num_heads: int = setting(4, "the tiny model's attention heads", low=1)
    intermediate_size: int = setting(352, "the tiny model's MLP width", low=1)
    max_position_embeddings: int = setting(128, "the tiny model's context: prompt and completion must fit", low=1)
    pretrain_steps: int = setting(250, "format-only pre-training that makes the tiny base", low=0)
    pretrain_batch_size: int = setting(64, "the tiny base's pre-training batch", low=1)
    pretrain_learning_rate: float = setting(3e-3, "the tiny base's pre-training learning rate", positive=True)
    pretrain_seed: int = setting(0, "the tiny base's initialisation and pre-training seed")


@dataclass
class RolloutConfig:
    engine: str = setting("hf", "hf (transformers' generate) or vllm", choices=tuple(ENGINES))
    temperature: float = setting(1.0, "sampling temperature", positive=True)
    top_p: float = setting(1.0, "nucleus sampling", unit=True)
    max_completion_length: int = setting(12, "tokens per completion at most", low=1)
    vllm_gpu_memory_utilization: float = setting(0.3, "GPU share for vLLM's weights and KV cache; training needs "
                                                      "the rest", unit=True)
    vllm_enforce_eager: bool = setting(True, "no CUDA graphs or torch.compile: starts in seconds, not minutes")
    group_seeds: bool = setting(False, "each group sampled from a seed of its own (drawn from the stage's stream): "
                                       "rollouts that do not depend on how a batch is split over ranks, at one "
                                       "generate call per group")
    vllm_tensor_parallel_size: int = setting(1, "GPUs one vLLM engine spans (a model too large for one)", low=1)
    vllm_max_model_len: Optional[int] = setting(None, "vLLM's context; None: the model's own", low=1)


@dataclass
class SFTConfig:
    cold_start_size: int = setting(1000, "examples the cold start trains on", low=1)
    source: str = setting("seed", "seed: rejection-sampled, the model's own voice; solver: demonstrations",
                          choices=("seed", "solver"))
    seed_path: Optional[str] = setting(None, "a seed.jsonl from an earlier run, when the seed stage is skipped")
    steps: int = setting(300, "optimizer steps, the same for every cold_start_size (equal compute: a smaller set is "
                              "seen more often)", low=0)
    epochs: Optional[float] = setting(None, "a number: that many passes over the set instead of sft.steps (equal "
                                            "epochs, compute growing with the size)", positive=True)
    batch_size: int = setting(64, "examples per optimizer step", low=1)
    learning_rate: float = setting(3e-3, "AdamW's learning rate", positive=True)

    @property
    def num_steps(self) -> int:
        """The optimizer steps the cold start takes; a set smaller than a batch is one batch (sft.finetune)."""
        if self.epochs is None:
            return self.steps
        return math.ceil(self.epochs * self.cold_start_size / min(self.batch_size, self.cold_start_size))


@dataclass
class GRPOConfig:
    num_generations: int = setting(8, "K, completions per prompt", low=2)
    prompts_per_step: int = setting(16, "prompts per generation batch", low=1)
    steps: int = setting(150, "generation batches", low=0)
    beta: float = setting(0.0, "KL weight; 0 loads no reference model", low=0)
    epsilon: float = setting(0.2, "the clip's lower side", low=0)
    epsilon_high: Optional[float] = setting(None, "the clip's upper side (DAPO's clip-higher); None: epsilon")
    num_iterations: int = setting(1, "mu, updates per batch; with 1 every ratio is 1 and clipping never acts",
                                  low=1)
    loss_type: str = setting("dapo", "how token losses are aggregated", choices=tuple(LOSS_TYPES))
    importance_sampling_level: str = setting("token", "sequence: GSPO's one ratio per completion",
                                             choices=("token", "sequence"))
    scale_rewards: str = setting("group", "the std that divides advantages", choices=tuple(SCALINGS))
    advantage_std_floor: float = setting(1e-3, "a std below this counts as this: float noise gets no full-size "
                                               "advantage; 0: TRL's (R - mean) / (std + 1e-4) exactly", low=0)
    mask_truncated_completions: bool = setting(False, "completions cut at the length limit get no loss")
    soft_overlong_cache: int = setting(0, "DAPO's soft overlong punishment over the last this many tokens; 0: off",
                                       low=0)
    learning_rate: float = setting(2e-4, "AdamW's learning rate", positive=True)
    max_grad_norm: float = setting(1.0, "gradient clipping", positive=True)
    micro_batch_size: int = setting(0, "sequences per backward pass; 0: the whole generation batch", low=0)
    bf16: bool = setting(False, "mixed precision: the update's forward and backward passes under bfloat16 autocast, "
                                "weights and optimizer in float32 (fast where the CPU has avx512_bf16 or AMX)")
    dynamic_sampling: bool = setting(False, "DAPO: train only on live groups, sampling more prompts to fill the "
                                            "batch")
    dynamic_sampling_max_rounds: int = setting(4, "generation rounds per step at most", low=1)


@dataclass
class ExploreConfig(GRPOConfig):
    """The explore stage: GRPO on the base, mining for rare good trajectories. Its own knobs, so
    that a sweep over grpo.* changes nothing before the GRPO stage (explorer, seed set, cold start)."""

    steps: int = setting(40, "generation batches of the explorer", low=0)
    reward: str = setting("gold", "the reward the explorer trains on (task.reward is the GRPO stage's; a learned one "
                                  "exists only after the cold start)", choices=TASK_REWARDS)


@dataclass
class RewardModelConfig:
    """The learned proxy of task.reward=learned (Gao et al. 2022): a classifier on the GRPO stage's
    start, trained on gold labels of that policy's own completions."""

    # Measured on the default task: 300 steps at 1e-3 learn nothing beyond the base rate (held-out AUC 0.55
    # at N = 2000); 4000 steps at 3e-4 on N = 20000 completions reach an AUC of about 0.8.
    train_size: int = setting(20000, "N: gold-labelled completions of the GRPO stage's start it trains on", low=1)
    samples_per_prompt: int = setting(4, "completions per training prompt (and per held-out prompt, to judge it)",
                                      low=1)
    steps: int = setting(4000, "optimizer steps of binary cross-entropy on the gold labels", low=0)
    batch_size: int = setting(64, "completions per optimizer step", low=1)
    learning_rate: float = setting(3e-4, "AdamW's learning rate", positive=True)


@dataclass
class PipelineConfig:
    """The recipe (harness.stages): its stage instances, and the ones a run goes through."""

    stages: list[str] = setting(list(DEFAULT_STAGES), "the instances of pipeline.graph a run goes through, in "
                                                      "order; drop one to skip it")
    graph: Dict[str, StageSpec] = field(default_factory=default_graph, metadata=setting(
        None, "each stage instance: its type, its config group, and the instances it starts from").metadata)


@dataclass
class SeedSetConfig:
    """The seed stage (harness.seed_set): verified outputs of the explorer, rejection-sampled in rounds."""

    size: int = setting(1000, "verified examples the seed stage keeps at most", low=1)
    samples_per_prompt: int = setting(8, "samples per prompt", low=1)
    prompts_per_round: int = setting(128, "prompts per round", low=1)
    max_rounds: int = setting(40, "rounds at most", low=1)


@dataclass
class EvalConfig:
    eval_every: int = setting(25, "steps between held-out evaluations (and a pruner's rungs)", low=1)
    num_prompts: int = setting(200, "held-out prompts, never trained on", low=1)
    num_samples: int = setting(4, "samples per held-out prompt for pass@1", low=1)
    temperature: float = setting(1.0, "the held-out samples' temperature", positive=True)
    kl_to_initial: bool = setting(True, "keep the stage's initial policy to measure KL to it")
    best_of_n: int = setting(16, "samples per held-out prompt from GRPO's initial policy (the best-of-n "
                                 "baseline); 0: none", low=0)
    seed: int = setting(1234, "fixes the held-out set")


@dataclass
class TrackingConfig:
    mode: str = setting("offline", "Weights & Biases' mode", choices=("offline", "online", "disabled"))
    project: str = setting("coldclimb", "the W&B project")
    entity: Optional[str] = setting(None, "the W&B entity; None: yours")
    group: Optional[str] = setting(None, "the W&B group; None: the run name")
    log_completions_every: int = setting(10, "steps of a GRPO stage (explore, grpo) between completions tables sent "
                                             "to the tracker, after the first step's", low=1)


@dataclass
class CheckpointConfig:
    every: int = setting(25, "GRPO steps between a stage's resumable checkpoints (model, optimizer, RNG); 0: none",
                         low=0)
    keep: str = setting("final", "what a finished run keeps: all (every stage's: branch GRPO runs off one cold "
                                 "start), final (the last stage's: a long sweep cannot fill the disk), none",
                        choices=("all", "final", "none"))


@dataclass
class CacheConfig:
    stages: bool = setting(True, "reuse stage outputs that an identical config already made (harness.cache)")
    dir: Optional[str] = setting(None, "None: $COLDCLIMB_CACHE/stages (COLDCLIMB_CACHE defaults to "
                                       "~/.cache/coldclimb)")
    max_size_gb: float = setting(20.0, "the stage cache's size at most: past it, after each stage, the least "
                                       "recently used entries go (an entry in use stays); 0: no limit", low=0)


@dataclass
class TrialConfig:
    """The processes a run trains on, and (set by the Optuna sweeper, sweeps/) where it reports held-out values."""

    processes: int = setting(1, "ranks the run trains on, data parallel (harness.launch): torchrun's processes here, "
                                "a SLURM job's tasks there; each samples whole groups of a step's prompts", low=1)
    data_parallel: str = setting("ddp", "how the ranks share the GRPO update: ddp (each holds the whole model, "
                                        "gradients all-reduced) or fsdp (FSDP2's fully_shard: weights, gradients "
                                        "and optimizer state split over the ranks, gathered whole for rollouts "
                                        "and evaluations)", choices=tuple(DATA_PARALLEL))

    storage: Optional[str] = setting(None, "the study's Optuna storage URL")
    study_name: Optional[str] = setting(None, "the study's name")
    trial_id: Optional[int] = setting(None, "this run's trial")
    objective: str = setting(GOLD, "reported at every evaluation of the final GRPO stage")
    heartbeat_interval: int = setting(10, "seconds between the running job's heartbeats to its trial", low=1)
    number: Optional[int] = setting(None, "this trial's number in the study")
    study: Optional[str] = setting(None, "the study's search space, objectives and directions, as JSON: what "
                                         "rebuilds the study from its runs alone (analysis.study)")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    explore: ExploreConfig = field(default_factory=ExploreConfig)
    seed_set: SeedSetConfig = field(default_factory=SeedSetConfig)
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    trial: TrialConfig = field(default_factory=TrialConfig)
    seed: int = setting(0, "the run's seed (every stage's sampling and training, unless start_seed is set)")
    start_seed: Optional[int] = setting(None, "the seed of every stage before the final one (the cold start, and "
                                              "task.reward=learned's reward model); None: the run's seed. Fixed, "
                                              "it gives several seeds' final GRPO one start and one reward model")
    resume: bool = setting(False, "go on with the interrupted run in output_dir (or hydra.run.dir), from its last "
                                  "checkpoint")
    device: str = setting("cpu", "cpu | cuda (a GPU no other job holds: harness.gpus) | cuda:N")
    jobs_per_gpu: int = setting(1, "device=cuda: jobs of this machine that may share one GPU", low=1)
    # Float sums depend on how they are split, so a trial gives the same numbers under any launcher
    # only with the same count.
    threads: int = setting(0, "torch's CPU threads (of each rank); 0: the CPUs this process may use, shared among "
                                  "trial.processes ranks (recorded as run)", low=0)
    arm: Optional[str] = setting(None, "this run's arm in an ablation preset (ablation/*): the report keeps, orders "
                                       "and labels arms by it, in place of the keys each arm sets")
    run_name: Optional[str] = setting(None, "None: the run directory's name")
    output_dir: Optional[str] = setting(None, "None: Hydra's run directory")


def as_tree(cfg) -> dict:
    """A config as plain JSON values (tuples as lists, a free-key dict as a dict, whether Hydra built the
    config or Python did): what stage keys and recorded configs are made of."""
    def plain(value):
        return OmegaConf.to_container(value) if isinstance(value, DictConfig) else str(value)
    return json.loads(json.dumps(asdict(cfg), default=plain))


def group_defaults() -> dict[str, str]:
    """Each config group's default option, as the defaults list of conf/config.yaml names it."""
    defaults = OmegaConf.load(Path(__file__).parent / "conf" / "config.yaml").defaults
    groups = {f.name for f in fields(Config) if f.default is MISSING}
    return {group: option for entry in defaults if isinstance(entry, DictConfig)
            for group, option in entry.items() if group in groups}


def register_configs() -> None:
    """The dataclasses as the groups' default options: the YAML beside them holds only variants."""
    store = ConfigStore.instance()
    store.store(name="schema", node=Config)
    groups = {f.name: f.default_factory for f in fields(Config)}
    for group, option in group_defaults().items():
        store.store(group=group, name=option, node=groups[group])


def describe() -> str:
    """Every key with its default and its help, one per line: the run's, then the Optuna sweeper's."""
    from sweeps.settings import SweeperSettings  # optuna, for the sweeper's sampler and pruner names

    def default(f: Field):
        return f.default_factory() if f.default is MISSING else f.default
    keys = [*settings(Config), *settings(SweeperSettings, "hydra.sweeper.")]
    return "\n".join(f"{key} = {default(f)!r}  # {f.metadata['help']}" for key, f in keys)


if __name__ == "__main__":
    print(describe())
