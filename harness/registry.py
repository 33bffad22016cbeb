"""Options that name an implementation, as "module:attribute" paths imported only when a run uses one:
the config reads their names (its `choices`) without importing torch, transformers or vllm."""

from __future__ import annotations

import importlib

# rollout.engine -> its RolloutEngine (vllm is an optional extra: imported only when named)
ENGINES = {"hf": "harness.rollout.hf:HFEngine", "vllm": "harness.rollout.vllm_engine:VLLMEngine"}


def load(path: str):
    """The attribute a "module:attribute" path names."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)
