from harness.rollout.base import Rollout, RolloutEngine, SamplingParams
from harness.rollout.hf import HFEngine

__all__ = ["HFEngine", "Rollout", "RolloutEngine", "SamplingParams", "make_engine"]


def make_engine(rollout_cfg, model, tokenizer) -> RolloutEngine:
    engines = {"hf": HFEngine}
    return engines[rollout_cfg.engine](model, tokenizer)
