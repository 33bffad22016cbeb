"""Per-token log-probabilities: the head runs only on completion positions and each distinct prompt
once, with the same values and gradients as one forward pass over every whole sequence."""

from types import SimpleNamespace

import pytest
import torch

from harness.config import ModelConfig
from harness.logprobs import completion_logprobs
from harness.models import build_tiny_model, build_tokenizer
from harness.rollout.base import Rollout


def tiny():
    tokenizer = build_tokenizer([f"w{i}" for i in range(20)])
    config = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    return tokenizer, build_tiny_model(config, tokenizer, seed=0)


def whole_sequences(model, prompt_ids, prompt_mask, completion_ids):
    """The logits of one forward pass over every whole sequence, left padding numbered as generate does."""
    ids = torch.cat([prompt_ids, completion_ids], 1)
    attention = torch.cat([prompt_mask, torch.ones_like(completion_ids)], 1)
    return model(input_ids=ids, attention_mask=attention, position_ids=(attention.cumsum(1) - 1).clamp(min=0)).logits


def test_completion_logprobs_equal_a_full_forward_pass_on_left_padded_prompts():
    tokenizer, model = tiny()
    model.eval()
    torch.manual_seed(0)
    prompt_ids = torch.randint(4, 24, (3, 5))
    prompt_mask = torch.ones_like(prompt_ids)
    prompt_mask[0, :2] = 0  # left padding
    completion_ids = torch.randint(4, 24, (3, 4))
    rollout = Rollout(prompt_ids, prompt_mask, completion_ids, torch.ones_like(completion_ids), ["x"] * 3,
                      torch.zeros(3, dtype=torch.bool))
    logp, entropy = completion_logprobs(model, rollout, temperature=0.7)

    full = whole_sequences(model, prompt_ids, prompt_mask, completion_ids)
    expected = torch.log_softmax(full[:, 4:-1].float() / 0.7, -1)
    assert torch.allclose(logp, expected.gather(-1, completion_ids[..., None]).squeeze(-1), atol=1e-6)
    assert torch.allclose(entropy, -(expected.exp() * expected).sum(-1), atol=1e-6)


def test_a_group_sharing_its_prompt_gets_the_values_and_gradients_of_whole_sequences():
    tokenizer, model = tiny()
    torch.manual_seed(0)
    prompts = torch.randint(4, 24, (2, 5))
    prompt_mask = torch.ones(6, 5, dtype=torch.long)
    prompt_mask[3:, :2] = 0  # the second group's prompt is left-padded
    prompt_ids = prompts.repeat_interleave(3, dim=0)  # two groups of K = 3
    completion_ids = torch.randint(4, 24, (6, 4))
    rollout = Rollout(prompt_ids, prompt_mask, completion_ids, torch.ones_like(completion_ids), ["x"] * 6,
                      torch.zeros(6, dtype=torch.bool))
    weights = torch.randn(6, 4)

    def gradient(logp):
        model.zero_grad()
        (logp * weights).sum().backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    shared, _ = completion_logprobs(model, rollout, temperature=1.0)
    full = whole_sequences(model, prompt_ids, prompt_mask, completion_ids)
    whole = torch.log_softmax(full[:, 4:-1].float(), -1).gather(-1, completion_ids[..., None]).squeeze(-1)
    torch.testing.assert_close(shared, whole, rtol=0, atol=1e-6)
    expected = gradient(whole)
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(gradient(shared), expected, rtol=1e-5, atol=1e-6)
    one_row, _ = completion_logprobs(model, rollout, temperature=1.0, rows=slice(4, 5))  # a group cut by a slice
    torch.testing.assert_close(one_row, whole[4:5], rtol=0, atol=1e-6)


def test_completions_of_one_token_are_scored_from_the_prompt_alone():
    tokenizer, model = tiny()
    model.eval()
    torch.manual_seed(0)
    prompt_ids = torch.randint(4, 24, (4, 5))
    completion_ids = torch.full((4, 1), tokenizer.eos_token_id)  # every completion ended at once
    rollout = Rollout(prompt_ids, torch.ones_like(prompt_ids), completion_ids, torch.ones_like(completion_ids),
                      [""] * 4, torch.zeros(4, dtype=torch.bool))
    logp, _ = completion_logprobs(model, rollout, temperature=1.0)
    full = torch.log_softmax(whole_sequences(model, prompt_ids, torch.ones_like(prompt_ids), completion_ids)[:, -2], -1)
    assert logp.shape == (4, 1)
    torch.testing.assert_close(logp[:, 0], full.gather(-1, completion_ids).squeeze(-1), rtol=0, atol=1e-6)


def test_a_model_without_a_shareable_cache_is_named_in_one_line():
    def no_cache(input_ids, **_):
        return SimpleNamespace(logits=torch.zeros(input_ids.size(0), 1, 8), past_key_values=None)

    rollout = Rollout(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long),
                      torch.ones(2, 2, dtype=torch.long), torch.ones(2, 2), ["", ""], torch.zeros(2, dtype=torch.bool))
    with pytest.raises(TypeError, match="^function returns no key-value cache .* gave NoneType"):
        completion_logprobs(no_cache, rollout, temperature=1.0)
