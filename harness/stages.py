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

from dataclasses import dataclass, field, fields
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
    # the ranks its batch and evaluations are split over, and how they share the update (float sums depend on both)
    "grpo": StageType("grpo", CHECKPOINT, ("model", "task", "task.partial_credit", "rollout", "eval", "seed",
                                           "device", "threads", "trial.processes", "trial.data_parallel"),
                      "GRPOConfig"),
    # the held-out set (eval.*) is what its problem stream skips
    "seed": StageType("seed_set", "seed.jsonl", ("task", "rollout", "eval.num_prompts", "eval.seed", "seed", "device",
                                                 "threads"), "SeedSetConfig"),
    "sft": StageType("sft", CHECKPOINT, ("model", "task", "rollout", "eval", "seed", "device", "threads",
                                         "trial.processes"), "SFTConfig"),
    # it samples held-out problems (eval.*) to judge itself, and its stream skips them
    "reward_model": StageType("reward_model", CHECKPOINT, ("model", "task", "rollout", "eval.num_prompts", "eval.seed",
                                                          "seed", "device", "threads"), "RewardModelConfig"),
}
# Not a stage: the final GRPO stage's first evaluation and best-of-n samples (the cache's grpo_start entry),
# the same for any grpo.*: its start key names the cold start, and with task.reward=learned the reward model.
START = "grpo_start"
START_READS = ("model", "task", "rollout", "eval", "seed", "device", "threads", "trial.processes")
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
    the stages before it. The final GRPO stage's start (grpo_start) is keyed by start_seed: it is the
    start's evaluation, which samples from eval.seed's own stream whatever the run's seed."""
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


def loads(cfg, name: str) -> list[str]:
    """The instances whose outputs `name` loads in this run (resolved: skipped ones stand for their start),
    the base left out: its start, an sft's seed sets (source=seed), a GRPO stage's learned reward model."""
    spec = cfg.pipeline.graph[name]
    wanted = [spec.start]
    if spec.type == "sft" and getattr(cfg, spec.config).source == "seed":
        wanted += spec.data
    if spec.type == "grpo" and trains_on(cfg, name) == "learned":
        wanted.append(spec.reward_model)
    return [made for made in (resolve(cfg, other) for other in wanted) if made not in (None, BASE)]


def unused(cfg) -> list[str]:
    """The stages of the run, but its final one, whose output no later stage loads."""
    order = run_order(cfg)
    return [name for i, name in enumerate(order[:-1]) if not any(name in loads(cfg, s) for s in order[i + 1:])]


def check_graph(cfg) -> Optional[tuple[str, object, str]]:
    """The first fault of pipeline.graph and pipeline.stages, as (key, value, requirement); None if sound:
    each instance's type and group agree and its edges name instances of the right type, no chain of edges
    comes back to where it began, and every stage runs after the stages it loads, once."""
    graph = cfg.pipeline.graph
    for name, spec in graph.items():
        if (fault := _check_instance(cfg, name, spec)) is not None:
            return fault
    for name in graph:
        if (cycle := _cycle(graph, name, ())) is not None:
            return f"pipeline.graph.{name}", " -> ".join(cycle), "its edges (start, data, reward_model) form a cycle"
    for name in cfg.pipeline.stages:
        if name not in graph:
            return "pipeline.stages", name, f"must be one of {', '.join(graph)}"
    order = run_order(cfg)
    for i, name in enumerate(order):
        if name in order[:i]:
            return "pipeline.stages", list(cfg.pipeline.stages), f"{name} would run twice (a reward model a GRPO " \
                                                                 f"stage trains on runs before it unasked)"
        for made in loads(cfg, name):
            if made not in order[:i]:
                return "pipeline.stages", list(cfg.pipeline.stages), f"{name} loads {made}'s output, which must " \
                                                                     f"come before it"
    return None


POLICIES = ("grpo", "sft")  # the types whose output is a policy another stage may start from


def _check_instance(cfg, name: str, spec: StageSpec) -> Optional[tuple[str, object, str]]:
    graph, key = cfg.pipeline.graph, f"pipeline.graph.{name}"
    group = getattr(cfg, spec.config, None) if spec.config in {f.name for f in fields(cfg)} else None
    if name == BASE:
        return key, name, f"{BASE!r} names the model config's policy, not a stage"
    if spec.type not in STAGE_TYPES:
        return f"{key}.type", spec.type, f"must be one of {', '.join(STAGE_TYPES)}"
    if STAGE_TYPES[spec.type].group not in {c.__name__ for c in type(group).__mro__}:
        return f"{key}.config", spec.config, f"must name a config group of a {spec.type} stage " \
                                             f"({STAGE_TYPES[spec.type].group})"
    if spec.start != BASE and graph.get(spec.start, StageSpec("", "")).type not in POLICIES:
        return f"{key}.start", spec.start, f"must be {BASE!r} or a {' or '.join(POLICIES)} instance of pipeline.graph"
    if (spec.data and spec.type != "sft") or any(graph.get(d, StageSpec("", "")).type != "seed" for d in spec.data):
        return f"{key}.data", spec.data, "only an sft instance has data: seed instances of pipeline.graph"
    if spec.reward_model is not None and (spec.type != "grpo" or
                                          graph.get(spec.reward_model, StageSpec("", "")).type != "reward_model"):
        return f"{key}.reward_model", spec.reward_model, "a grpo instance's, naming a reward_model instance"
    if spec.type == "grpo" and spec.reward_model is None and trains_on(cfg, name) == "learned":
        return f"{key}.reward_model", None, "must name the reward model its learned reward is"
    return None


def _cycle(graph: dict, name: str, path: tuple) -> Optional[tuple]:
    """A chain of edges from `name` back to a stage on `path`, if there is one."""
    if name in path:
        return (*path[path.index(name):], name)
    spec = graph[name]
    for other in (spec.start, *spec.data, spec.reward_model):
        if other is not None and other != BASE and (cycle := _cycle(graph, other, (*path, name))) is not None:
            return cycle
    return None
