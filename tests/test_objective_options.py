"""Options around the objective: the std floor, overlong handling, truncated completions."""

import copy
from types import SimpleNamespace

import pytest
import torch
from trl.rewards import get_soft_overlong_punishment

from harness.config import ModelConfig
from harness.grpo import policy_update
from harness.losses import LOSS_TYPES
from harness.models import build_tiny_model, build_tokenizer
from harness.objective import STD_FLOOR, compute_advantages, micro_batch_share
from harness.rollout.base import Rollout, SamplingParams, completion_mask
from harness.sampling import soft_overlong_punishment


def test_std_floor_keeps_float_noise_from_becoming_a_full_advantage():
    """This project's formula (differs from TRL only when std < floor): A = (R - mean) / (max(std, floor) + 1e-4)."""
    noise = torch.tensor([0.5, 0.5 + 1e-4, 0.5, 0.5])
    signal = torch.tensor([1.0, 0.0, 0.0, 0.0])
    rewards = torch.cat([noise, signal])
    trl_like = compute_advantages(rewards, 4, "group")  # floor 0: TRL's (R - mean) / (std + 1e-4)
    floored = compute_advantages(rewards, 4, "group", std_floor=1e-3)
    assert trl_like[:4].abs().max() > 0.4  # noise 1e-4 scaled up to half a unit
    assert floored[:4].abs().max() < 0.1
    centred = noise - noise.mean()
    torch.testing.assert_close(floored[:4], centred / (1e-3 + STD_FLOOR))
    torch.testing.assert_close(floored[4:], trl_like[4:])  # real signal untouched


@pytest.mark.parametrize("max_len, cache", [(12, 4), (20, 20), (8, 1)])
def test_soft_overlong_punishment_equals_trl(max_len, cache):
    lengths = torch.arange(0, max_len + 3)
    theirs = get_soft_overlong_punishment(max_len, cache)([[0] * n for n in lengths.tolist()])
    assert soft_overlong_punishment(lengths, max_len, cache).tolist() == pytest.approx(theirs)


def test_soft_overlong_punishment_off_by_default():
    assert soft_overlong_punishment(torch.tensor([3, 50]), 12, 0).tolist() == [0.0, 0.0]


def test_masked_truncated_completions_give_no_gradient():
    tokenizer = build_tokenizer(["a", "b", "c"])
    model = build_tiny_model(ModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32),
                             tokenizer, seed=0)
    eos = tokenizer.eos_token_id
    completions = torch.tensor([[4, 5, 6, 4], [5, eos, 0, 0], [6, 4, eos, 0]])  # row 0 never ends
    mask, truncated = completion_mask(completions, eos)
    rollout = Rollout(torch.tensor([[1, 4]] * 3), torch.ones(3, 2, dtype=torch.long), completions, mask,
                      ["", "", ""], truncated)
    cfg = SimpleNamespace(micro_batch_size=0, mask_truncated_completions=True, num_iterations=1, beta=0.0,
                          loss_type="grpo", epsilon=0.2, epsilon_high=None, importance_sampling_level="token",
                          max_grad_norm=1e9, bf16=False)
    sampling = SamplingParams(1.0, 1.0, 4)

    def gradient(advantages):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        policy_update(model, optimizer, rollout, torch.tensor(advantages), None, cfg, sampling)
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    assert truncated.tolist() == [True, False, False]
    torch.testing.assert_close(gradient([5.0, 1.0, -1.0]), gradient([-5.0, 1.0, -1.0]))
    cfg.mask_truncated_completions = False
    assert not torch.allclose(gradient([5.0, 1.0, -1.0]), gradient([-5.0, 1.0, -1.0]))


@pytest.mark.parametrize("loss_type", list(LOSS_TYPES))  # a new loss type is tested as it is registered
def test_uneven_micro_batches_give_the_full_batch_gradient(loss_type):
    """Dynamic sampling keeps any number of live groups: 10 rows in micro-batches of 4 are
    slices 4/4/2, and every row must weigh what it weighs in one full-batch backward."""
    tokenizer = build_tokenizer(["a", "b", "c"])
    model = build_tiny_model(ModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32),
                             tokenizer, seed=0)
    g = torch.Generator().manual_seed(0)
    completions = torch.randint(4, 7, (10, 5), generator=g)
    completions[torch.arange(10), torch.randint(1, 5, (10,), generator=g)] = tokenizer.eos_token_id  # lengths vary
    mask, truncated = completion_mask(completions, tokenizer.eos_token_id)
    rollout = Rollout(torch.tensor([[1, 4]] * 10), torch.ones(10, 2, dtype=torch.long), completions, mask,
                      [""] * 10, truncated)
    advantages = torch.randn(10, generator=g)
    sampling = SamplingParams(1.0, 1.0, 5)

    def gradient(micro_batch_size):
        cfg = SimpleNamespace(micro_batch_size=micro_batch_size, mask_truncated_completions=False, num_iterations=1,
                              beta=0.0, loss_type=loss_type, epsilon=0.2, epsilon_high=None,
                              importance_sampling_level="token", max_grad_norm=1e9, bf16=False)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        metrics = policy_update(model, optimizer, rollout, advantages, None, cfg, sampling)
        return torch.cat([p.grad.flatten() for p in model.parameters()]), metrics["loss"]

    full, full_loss = gradient(0)
    sliced, sliced_loss = gradient(4)
    assert full.abs().max() > 1e-3  # a gradient worth comparing
    torch.testing.assert_close(sliced, full, atol=1e-6, rtol=0)
    assert sliced_loss == pytest.approx(full_loss, abs=1e-6)


def test_an_unknown_loss_type_or_scaling_is_refused_not_given_a_default():
    mask = torch.ones(2, 3)
    with pytest.raises(ValueError, match="loss_type='token_sum'"):
        micro_batch_share("token_sum", mask, mask)
    with pytest.raises(ValueError, match="scale_rewards='max'"):
        compute_advantages(torch.ones(4), 2, "max")


def test_bf16_autocast_update_matches_float32_within_bfloat16_precision():
    """grpo.bf16 runs the update's passes in bfloat16: a different gradient, within bfloat16's
    precision of float32's, and so are the loss and the KL after the first pass has moved pi."""
    tokenizer = build_tokenizer(["a", "b", "c"])
    initial = build_tiny_model(ModelConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128),
                               tokenizer, seed=0)
    g = torch.Generator().manual_seed(1)
    completions = torch.randint(4, 7, (8, 6), generator=g)
    mask, truncated = completion_mask(completions, tokenizer.eos_token_id)
    rollout = Rollout(torch.tensor([[1, 4, 5]] * 8), torch.ones(8, 3, dtype=torch.long), completions, mask,
                      [""] * 8, truncated)
    advantages = torch.randn(8, generator=g)
    sampling = SamplingParams(1.0, 1.0, 6)

    def update(bf16):
        cfg = SimpleNamespace(micro_batch_size=0, mask_truncated_completions=False, num_iterations=2, beta=0.04,
                              loss_type="dapo", epsilon=0.2, epsilon_high=None, importance_sampling_level="token",
                              max_grad_norm=1e9, bf16=bf16)
        model = copy.deepcopy(initial)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        metrics = policy_update(model, optimizer, rollout, advantages, initial, cfg, sampling)
        return torch.cat([p.grad.flatten() for p in model.parameters()]), metrics

    full, full_metrics = update(False)
    half, half_metrics = update(True)
    assert not torch.equal(half, full)  # the passes really ran in bfloat16
    assert ((half - full).norm() / full.norm()).item() < 0.05
    assert full_metrics["kl"] > 1e-4  # the second pass saw a policy that had moved
    for key in ("loss", "kl"):
        assert half_metrics[key] == pytest.approx(full_metrics[key], rel=0.05)
