from transformers import PreTrainedModel, PreTrainedTokenizerBase

from harness.config import RolloutConfig
from harness.rollout.base import Rollout, RolloutEngine, SamplingParams
from harness.rollout.hf import HFEngine

__all__ = ["HFEngine", "Rollout", "RolloutEngine", "SamplingParams", "make_engine"]


def make_engine(rollout_cfg: RolloutConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                seed: int) -> RolloutEngine:
    if rollout_cfg.engine == "vllm":
        from harness.rollout.vllm_engine import VLLMEngine  # vllm is an optional extra

        return VLLMEngine(model, tokenizer, rollout_cfg, seed)
    return HFEngine(model, tokenizer)
