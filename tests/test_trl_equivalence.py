"""This project's objective equals TRL's (trl==1.16.0, pinned in the test extra).

TRL computes its loss inside `GRPOTrainer._compute_loss`, from per-token log-probabilities that
it gets from the model. The tests build a bare trainer, hand it the same log-probabilities,
old and reference log-probabilities, masks and advantages as this project's `grpo_loss`, and
compare loss, gradient and the logged clip and KL metrics.
"""

import itertools
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from trl.trainer.grpo_trainer import GRPOTrainer
from trl.trainer.utils import nanstd

from harness.objective import STD_FLOOR, LossSpec, compute_advantages, grpo_loss

B, T = 6, 5
TOLERANCE = dict(rtol=0, atol=1e-6)


class OneProcess:
    """What TRL asks of accelerate on a single process."""

    num_processes = 1
    sync_gradients = True

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def reduce(self, x, reduction="sum"):
        return x


def trl_loss(logp, inputs, *, loss_type, epsilon, epsilon_high, beta, level, max_completion_length):
    trainer = GRPOTrainer.__new__(GRPOTrainer)
    trainer.__dict__.update(
        beta=beta, epsilon_low=epsilon, epsilon_high=epsilon if epsilon_high is None else epsilon_high,
        loss_type=loss_type, importance_sampling_level=level, max_completion_length=max_completion_length,
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, use_vllm=False,
        vllm_importance_sampling_correction=False, aux_loss_enabled=False, _entropy_bonus_enabled=False,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        accelerator=OneProcess(), model=SimpleNamespace(training=True), current_gradient_accumulation_steps=1,
        _metrics={"train": defaultdict(list)},
    )
    trainer._get_per_token_logps_and_entropies = lambda *args, **kwargs: (logp, torch.zeros_like(logp), None)
    loss = trainer._compute_loss(None, inputs)
    return loss, {k: v[-1] for k, v in trainer._metrics["train"].items()}


def batch(seed: int):
    """Log-probabilities off the old policy (so clipping acts), padding of varied length."""
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    logp = old + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.3
    ref = old + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.2
    lengths = torch.tensor([5, 3, 1, 4, 5, 2])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    advantages = torch.randn(B, generator=g, dtype=torch.float64)
    return logp, old, ref, mask, advantages


CASES = list(itertools.product(["grpo", "bnpo", "dr_grpo", "dapo"], ["token", "sequence"], [0.0, 0.04], [None, 0.28]))


@pytest.mark.parametrize("loss_type, level, beta, epsilon_high", CASES)
def test_loss_and_gradient_equal_trl(loss_type, level, beta, epsilon_high):
    logp, old, ref, mask, advantages = batch(seed=len(loss_type) + int(beta * 100))
    epsilon = 0.2 if level == "token" else 3e-4
    epsilon_high = None if epsilon_high is None else (epsilon_high if level == "token" else 4e-4)

    ours_logp = logp.clone().requires_grad_(True)
    spec = LossSpec(loss_type=loss_type, epsilon=epsilon, epsilon_high=epsilon_high, beta=beta,
                    max_completion_length=T, importance_sampling_level=level)
    ours = grpo_loss(ours_logp, old, advantages, mask, spec, ref_logp=ref, num_items_in_batch=mask.sum().item())
    ours.loss.backward()

    trl_logp = logp.clone().requires_grad_(True)
    inputs = {"prompt_ids": torch.zeros(B, 1, dtype=torch.long), "prompt_mask": torch.ones(B, 1, dtype=torch.long),
              "completion_ids": torch.zeros(B, T, dtype=torch.long), "completion_mask": mask,
              "advantages": advantages, "old_per_token_logps": old, "ref_per_token_logps": ref,
              "num_items_in_batch": mask.sum()}
    theirs, metrics = trl_loss(trl_logp, inputs, loss_type=loss_type, epsilon=epsilon, epsilon_high=epsilon_high,
                               beta=beta, level=level, max_completion_length=T)
    theirs.backward()

    torch.testing.assert_close(ours.loss, theirs, **TOLERANCE)
    torch.testing.assert_close(ours_logp.grad, trl_logp.grad, **TOLERANCE)
    assert ours_logp.grad.abs().sum() > 0
    for key, value in [("clip_ratio/low_mean", ours.clip_low), ("clip_ratio/high_mean", ours.clip_high),
                       ("clip_ratio/region_mean", ours.clip_region)]:
        assert value.item() == pytest.approx(metrics[key], abs=1e-6), key
    if beta:
        assert ours.kl.item() == pytest.approx(metrics["kl"], abs=1e-6)


def test_the_cases_really_clip():
    """Guard against a vacuous comparison: the batches above put ratios outside the clip range."""
    logp, old, _, mask, advantages = batch(seed=3)
    out = grpo_loss(logp, old, advantages, mask, LossSpec(loss_type="bnpo", epsilon=0.2))
    assert 0 < out.clip_region.item() < 1


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
def test_advantages_equal_trl(scale_rewards):
    """TRL computes advantages inline in `_generate_and_score_completions`; its expression, over its
    own `nanstd` (Bessel-corrected), is reproduced here as the reference."""
    K = 4
    rewards = torch.tensor([0.9, 0.6, 0.4, 0.1, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    mean = rewards.view(-1, K).mean(dim=1).repeat_interleave(K)
    std = nanstd(rewards.view(-1, K), dim=1).repeat_interleave(K) if scale_rewards != "batch" else \
        nanstd(rewards).expand_as(rewards)
    expected = rewards - mean
    if scale_rewards != "none":
        expected = expected / (std + STD_FLOOR)
    torch.testing.assert_close(compute_advantages(rewards, K, scale_rewards), expected, **TOLERANCE)
