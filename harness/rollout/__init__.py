from transformers import PreTrainedModel, PreTrainedTokenizerBase

from harness.config import RolloutConfig
from harness.registry import ENGINES, load
from harness.rollout.base import Rollout, RolloutEngine, SamplingParams
from harness.rollout.hf import HFEngine

__all__ = ["HFEngine", "Rollout", "RolloutEngine", "SamplingParams", "make_engine"]


def make_engine(rollout_cfg: RolloutConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                seed: int) -> RolloutEngine:
    """The engine rollout.engine names (harness.registry.ENGINES), for this policy."""
    return load(ENGINES[rollout_cfg.engine]).for_run(model, tokenizer, rollout_cfg, seed)
