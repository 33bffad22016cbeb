"""Options that name an implementation, as "module:attribute" paths imported only when a run uses one:
the config reads their names (its `choices`) without importing torch, transformers or vllm."""

from __future__ import annotations

import importlib

# rollout.engine -> its RolloutEngine (vllm is an optional extra: imported only when named)
ENGINES = {"hf": "harness.rollout.hf:HFEngine", "vllm": "harness.rollout.vllm_engine:VLLMEngine"}

# trial.data_parallel -> how the ranks share the GRPO update: model -> the model as the update trains it
DATA_PARALLEL = {"ddp": "harness.distributed:ddp", "fsdp": "harness.distributed:fsdp"}

# task.gold_style -> how a user's reward function is called: (function, its reference) -> score(problem,
# completion, completion_ids)
REWARD_STYLES = {"trl": "harness.rewards.functions:trl_style", "verl": "harness.rewards.functions:verl_style"}

# task.gold / task.proxy by name: the built-in reward functions, with the distribution each needs. Each is
# called f([completion], [reference answer]) -> [score] (the reference: the column task.answer_key names)
BUILTIN_REWARDS = {"math_verify": ("harness.rewards.references:math_verify_reward", "math-verify")}


def load(path: str):
    """The attribute a "module:attribute" path names."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)
