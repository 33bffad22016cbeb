"""The recipe as a declared graph. Each stage *type* is declared once here (the config it reads, the
file it writes); a pipeline's stage *instances* are configuration (pipeline.graph: each one's type,
config group and the instances it starts from), and pipeline.stages picks the ones a run goes
through, in order. Cache keys, the run's order, resume, pipeline.stages' choices and the report's
stage order all come from these. No torch here: the config and analysis read it.

The default recipe (pipeline=recipe), and DeepSeek-R1's (pipeline=r1) adds three instances:

  explore  grpo on the base, mining for rare good trajectories      -> explore/checkpoint
  seed     seed: rejection-sample verified outputs of the explorer  -> seed/seed.jsonl
  sft      sft: cold-start the *base* on cold_start_size examples   -> sft/checkpoint
           of the seed set (or the task solver's: sft.source=solver)
  reward_model  with task.reward=learned only: a reward model on gold labels of the
           cold-started policy's completions, the proxy GRPO trains on -> reward_model/checkpoint
  grpo     grpo for real, from the cold-started policy               -> grpo/checkpoint
           (first sampling eval.best_of_n completions per held-out prompt -> grpo/best_of_n.jsonl)

An instance left out of pipeline.stages passes its start on (a policy stage: what it starts from; a
seed set: none, so SFT reads sft.seed_path or the solver). The last stage of a run is its *final*
stage: the sweeper sees its evaluations, and it alone runs with the run's seed (start_seed's
stages before it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

BASE = "base"  # what a stage with no stage before it starts from: the model config's policy
CHECKPOINT = "checkpoint"


@dataclass(frozen=True)
class StageType:
    """What every instance of one kind of stage shares."""

    compute: str  # harness.pipeline.Pipeline's method that computes an instance, given its name
    output: str  # what the stages after it load, in its directory
    reads: tuple[str, ...]  # config beyond its own group (whole groups, or single keys)
    group: str  # the dataclass its config group must be (harness.config)


# Groups and keys read by the GRPO type, whatever its group: the task's reward is read unless the group
# names its own (explore.reward), and task.partial_credit either way.
STAGE_TYPES = {
    "grpo": StageType("grpo", CHECKPOINT, ("model", "task", "task.partial_credit", "rollout", "eval", "seed",
                                           "device", "threads"), "GRPOConfig"),
    # the held-out set (eval.*) is what its problem stream skips
    "seed": StageType("seed_set", "seed.jsonl", ("task", "rollout", "eval.num_prompts", "eval.seed", "seed", "device",
                                                 "threads"), "SeedSetConfig"),
    "sft": StageType("sft", CHECKPOINT, ("model", "task", "rollout", "eval", "seed", "device", "threads"), "SFTConfig"),
    # it samples held-out problems (eval.*) to judge itself, and its stream skips them
    "reward_model": StageType("reward_model", CHECKPOINT, ("model", "task", "rollout", "eval.num_prompts", "eval.seed",
                                                          "seed", "device", "threads"), "RewardModelConfig"),
}
# Not a stage: the final GRPO stage's first evaluation and best-of-n samples (the cache's grpo_start entry),
# the same for any grpo.*: its start key names the cold start, and with task.reward=learned the reward model.
START = "grpo_start"
START_READS = ("model", "task", "rollout", "eval", "seed", "device", "threads")
# The default recipe's stages draw their problems from numbered streams, as before the graph, so that its
# numbers stay what they were; every other instance's stream is named by the instance.
NUMBERED_STREAMS = ("explore", "seed", "sft", "grpo")


@dataclass
class StageSpec:
    """One stage instance of pipeline.graph."""

    type: str
    config: str  # its config group
    start: str = BASE  # the instance whose output it loads (an sft instance starts from the base)
    data: list[str] = field(default_factory=list)  # sft: the seed sets it draws its examples from
    reward_model: Optional[str] = None  # grpo: the reward model it trains on when its reward is `learned`


def default_graph() -> dict[str, StageSpec]:
    return {"explore": StageSpec("grpo", "explore"),
            "seed": StageSpec("seed", "seed_set", start="explore"),
            "sft": StageSpec("sft", "sft", data=["seed"]),
            "reward_model": StageSpec("reward_model", "reward_model", start="sft"),
            "grpo": StageSpec("grpo", "grpo", start="sft", reward_model="reward_model")}


DEFAULT_STAGES = ("explore", "seed", "sft", "grpo")
# The default graph's instances in the order a run meets them: how the report orders a run's stages.
STAGE_ORDER = tuple(default_graph())


def trains_on(cfg, name: str) -> Optional[str]:
    """The reward a GRPO instance trains on: its group's own (explore.reward), else task.reward."""
    return getattr(getattr(cfg, cfg.pipeline.graph[name].config), "reward", cfg.task.reward)


def run_order(cfg) -> list[str]:
    """The instances a run goes through, in order: pipeline.stages, and before a GRPO stage the reward
    model it trains on when its reward is learned."""
    order = []
    for name in cfg.pipeline.stages:
        spec = cfg.pipeline.graph[name]
        if spec.type == "grpo" and spec.reward_model and trains_on(cfg, name) == "learned" \
                and spec.reward_model not in order:
            order.append(spec.reward_model)
        order.append(name)
    return order


def resolve(cfg, name: str) -> Optional[str]:
    """The instance whose output stands for `name`'s: itself when the run goes through it; else, for a
    policy, what it starts from, down to the base; for a seed set, none."""
    graph, order = cfg.pipeline.graph, run_order(cfg)
    while name != BASE and name not in order:
        if graph[name].type == "seed":
            return None
        name = graph[name].start
    return name


def final_stage(cfg) -> Optional[str]:
    order = run_order(cfg)
    return order[-1] if order else None


def stage_seed(cfg, name: str) -> int:
    """The seed an instance samples and trains with: the run's for the final stage, start_seed (if set) for
    the stages before it and for the final GRPO stage's start (grpo_start)."""
    return cfg.seed if cfg.start_seed is None or name == final_stage(cfg) else cfg.start_seed


def stream_seed(cfg, name: str):
    """The seed of the instance's stream of training problems (harness.tasks.ProblemStream)."""
    seed = stage_seed(cfg, name)
    return seed * len(NUMBERED_STREAMS) + NUMBERED_STREAMS.index(name) if name in NUMBERED_STREAMS \
        else f"{name}/{seed}"


def stage_reads(cfg, name: str) -> tuple[str, ...]:
    """The config an instance's output depends on: its group, its type's reads, and a GRPO stage's reward
    (its group's own, as explore's, or task.reward)."""
    spec = cfg.pipeline.graph[name]
    own_reward = spec.type != "grpo" or hasattr(getattr(cfg, spec.config), "reward")
    return (spec.config, *STAGE_TYPES[spec.type].reads, *(() if own_reward else ("task.reward",)))


def check_graph(cfg) -> Optional[tuple[str, object, str]]:
    """The first fault of pipeline.graph and pipeline.stages, as (key, value, requirement); None if sound.
    Each instance's type and group exist and agree, it starts from an instance before it, and the stages
    run in an order where every start comes first."""
    from dataclasses import fields
    graph, stages = cfg.pipeline.graph, list(cfg.pipeline.stages)
    groups = {f.name: {c.__name__ for c in type(getattr(cfg, f.name)).__mro__} for f in fields(cfg)}
    for name, spec in graph.items():
        key = f"pipeline.graph.{name}"
        if name == BASE:
            return key, name, f"{BASE!r} names the model config's policy, not a stage"
        if spec.type not in STAGE_TYPES:
            return f"{key}.type", spec.type, f"must be one of {', '.join(STAGE_TYPES)}"
        if STAGE_TYPES[spec.type].group not in groups.get(spec.config, ()):
            return f"{key}.config", spec.config, f"must name a config group of a {spec.type} stage " \
                                                 f"({STAGE_TYPES[spec.type].group})"
        for role, other in (("start", spec.start), *(("data", d) for d in spec.data),
                            ("reward_model", spec.reward_model)):
            if other is not None and other != BASE and other not in graph:
                return f"{key}.{role}", other, f"must be {BASE!r} or an instance of pipeline.graph"
        if spec.data and spec.type != "sft" or any(graph[d].type != "seed" for d in spec.data):
            return f"{key}.data", spec.data, "only an sft instance has data, and only seed instances are data"
        if spec.reward_model is not None and (spec.type != "grpo" or graph[spec.reward_model].type != "reward_model"):
            return f"{key}.reward_model", spec.reward_model, "a grpo instance's, naming a reward_model instance"
        if spec.type == "grpo" and spec.reward_model is None and trains_on(cfg, name) == "learned":
            return f"{key}.reward_model", None, "must name the reward model its learned reward is"
        seen = {name}
        while spec.start != BASE and spec.start in graph:  # every chain of starts ends at the base
            if spec.start in seen:
                return f"{key}.start", graph[name].start, "starts a cycle: a chain of starts must end at the base"
            seen.add(spec.start)
            spec = graph[spec.start]
    for i, name in enumerate(stages):
        if name not in graph:
            return "pipeline.stages", name, f"must be one of {', '.join(graph)}"
        spec = graph[name]
        later = [s for s in (spec.start, *spec.data) if s in stages[i:]]
        if later:
            return "pipeline.stages", stages, f"{name} starts from {later[0]}, which must come before it"
    return None
