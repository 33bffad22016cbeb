"""Per-token log-probabilities: the head runs only on completion positions, with the same result."""

import torch

from harness.config import ModelConfig
from harness.logprobs import completion_logprobs
from harness.models import build_tiny_model, build_tokenizer
from harness.rollout.base import Rollout


def test_completion_logprobs_equal_a_full_forward_pass_on_left_padded_prompts():
    tokenizer = build_tokenizer([f"w{i}" for i in range(20)])
    model = build_tiny_model(ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64),
                             tokenizer, seed=0).eval()
    torch.manual_seed(0)
    prompt_ids = torch.randint(4, 24, (3, 5))
    prompt_mask = torch.ones_like(prompt_ids)
    prompt_mask[0, :2] = 0  # left padding
    completion_ids = torch.randint(4, 24, (3, 4))
    rollout = Rollout(prompt_ids, prompt_mask, completion_ids, torch.ones_like(completion_ids), ["x"] * 3,
                      torch.zeros(3, dtype=torch.bool))
    logp, entropy = completion_logprobs(model, rollout, temperature=0.7)

    ids = torch.cat([prompt_ids, completion_ids], 1)
    attention = torch.cat([prompt_mask, torch.ones_like(completion_ids)], 1)
    full = model(input_ids=ids, attention_mask=attention, position_ids=(attention.cumsum(1) - 1).clamp(min=0)).logits
    expected = torch.log_softmax(full[:, 4:-1].float() / 0.7, -1)
    assert torch.allclose(logp, expected.gather(-1, completion_ids[..., None]).squeeze(-1), atol=1e-6)
    assert torch.allclose(entropy, -(expected.exp() * expected).sum(-1), atol=1e-6)
