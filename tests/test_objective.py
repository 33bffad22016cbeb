import math

import pytest
import torch

from harness.objective import STD_FLOOR, LossSpec, compute_advantages, grpo_loss, kl_k3


def test_advantage_is_reward_minus_group_mean():
    """The seed example: rewards 0.9, 0.6, 0.4, 0.1 give 0.4, 0.1, -0.1, -0.4 before std scaling."""
    rewards = torch.tensor([0.9, 0.6, 0.4, 0.1])
    assert compute_advantages(rewards, 4, "none").tolist() == pytest.approx([0.4, 0.1, -0.1, -0.4])


def test_group_scaling_divides_by_bessel_std_of_each_group():
    rewards = torch.tensor([0.9, 0.6, 0.4, 0.1, 1.0, 0.0, 0.0, 0.0])
    adv = compute_advantages(rewards, 4, "group")
    std1 = math.sqrt((0.4**2 + 0.1**2 + 0.1**2 + 0.4**2) / 3)
    std2 = math.sqrt((0.75**2 + 3 * 0.25**2) / 3)
    expected = [x / (std1 + STD_FLOOR) for x in (0.4, 0.1, -0.1, -0.4)]
    expected += [x / (std2 + STD_FLOOR) for x in (0.75, -0.25, -0.25, -0.25)]
    assert adv.tolist() == pytest.approx(expected, rel=1e-5)


def test_batch_scaling_uses_one_std_for_the_whole_batch():
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    adv = compute_advantages(rewards, 2, "batch")
    std = rewards.std().item()
    assert adv.tolist() == pytest.approx([0.5 / (std + STD_FLOOR), -0.5 / (std + STD_FLOOR), 0.0, 0.0], rel=1e-5)


def test_dead_group_has_zero_advantage():
    assert compute_advantages(torch.ones(4), 4, "group").abs().max() == 0


def test_kl_k3_matches_its_formula_and_is_never_negative():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.5, -1.0, -0.5])
    expected = [math.exp(r - p) - (r - p) - 1 for p, r in zip(logp.tolist(), ref.tolist())]
    assert kl_k3(logp, ref).tolist() == pytest.approx(expected)
    assert kl_k3(logp, ref)[2] == 0
    assert (kl_k3(torch.randn(1000), torch.randn(1000)) >= 0).all()


# A hand-worked batch: two completions of lengths 2 and 1 (one padding token), eps = 0.2.
#   completion 0, A = +1: ratios e^0.1 = 1.105 (inside), e^0.5 = 1.649 (clipped at 1.2)
#   completion 1, A = -1: ratio e^-0.5 = 0.607 (clipped at 0.8: min(-0.607, -0.8) = -0.8)
LOGP = torch.tensor([[-1.0, -0.5, -3.0], [-2.0, 0.0, 0.0]])
OLD = torch.tensor([[-1.1, -1.0, -3.0], [-1.5, 0.0, 0.0]])
ADV = torch.tensor([1.0, -1.0])
MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])
TOKEN_LOSS = [-math.exp(0.1), -1.2, 0.8]  # -min(r A, clip(r) A) per real token


@pytest.mark.parametrize("loss_type, expected", [
    ("grpo", ((TOKEN_LOSS[0] + TOKEN_LOSS[1]) / 2 + TOKEN_LOSS[2]) / 2),
    ("bnpo", sum(TOKEN_LOSS) / 3),
    ("dr_grpo", sum(TOKEN_LOSS) / (2 * 3)),
    ("dapo", sum(TOKEN_LOSS) / 3),
])
def test_each_loss_type_matches_hand_computation(loss_type, expected):
    out = grpo_loss(LOGP, OLD, ADV, MASK, LossSpec(loss_type=loss_type, epsilon=0.2, max_completion_length=3))
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)


def test_dapo_divides_by_the_whole_generation_batch_tokens():
    out = grpo_loss(LOGP, OLD, ADV, MASK, LossSpec(loss_type="dapo", epsilon=0.2), num_items_in_batch=6)
    assert out.loss.item() == pytest.approx(sum(TOKEN_LOSS) / 6, rel=1e-6)


def test_clip_ratios_count_tokens_clipped_low_and_high():
    out = grpo_loss(LOGP, OLD, ADV, MASK, LossSpec(loss_type="bnpo", epsilon=0.2))
    assert out.clip_high.item() == pytest.approx(1 / 3)  # e^0.5 with A > 0
    assert out.clip_low.item() == pytest.approx(1 / 3)  # e^-0.5 with A < 0
    assert out.clip_region.item() == pytest.approx(2 / 3)


def test_epsilon_high_widens_only_the_upper_clip():
    out = grpo_loss(LOGP, OLD, ADV, MASK, LossSpec(loss_type="bnpo", epsilon=0.2, epsilon_high=0.7))
    assert out.clip_high.item() == 0  # 1.649 < 1.7: no longer clipped
    assert out.loss.item() == pytest.approx((-math.exp(0.1) - math.exp(0.5) + 0.8) / 3, rel=1e-6)


def test_beta_adds_the_k3_penalty_per_token():
    ref = torch.tensor([[-1.2, -0.7, 0.0], [-1.9, 0.0, 0.0]])
    out = grpo_loss(LOGP, OLD, ADV, MASK, LossSpec(loss_type="bnpo", epsilon=0.2, beta=0.1), ref_logp=ref)
    kl = kl_k3(LOGP, ref)
    kl_tokens = [kl[0, 0].item(), kl[0, 1].item(), kl[1, 0].item()]
    assert out.kl.item() == pytest.approx(sum(kl_tokens) / 3, rel=1e-6)
    assert out.loss.item() == pytest.approx(sum(t + 0.1 * k for t, k in zip(TOKEN_LOSS, kl_tokens)) / 3, rel=1e-6)


def test_on_policy_gradient_pushes_up_positive_advantage_tokens():
    """With pi_old = pi (num_iterations = 1) the gradient is -A/|tokens| on each token's logp."""
    logp = LOGP.clone().requires_grad_(True)
    grpo_loss(logp, logp.detach(), ADV, MASK, LossSpec(loss_type="bnpo", epsilon=0.2)).loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-1 / 3, -1 / 3, 0.0], [1 / 3, 0.0, 0.0]]))


def test_padding_does_not_change_the_loss():
    padded = grpo_loss(LOGP, OLD, ADV, MASK, LossSpec(loss_type="grpo", epsilon=0.2))
    noisy = LOGP.clone()
    noisy[0, 2] = 50.0  # garbage under the mask
    assert grpo_loss(noisy, OLD, ADV, MASK, LossSpec(loss_type="grpo", epsilon=0.2)).loss.item() == pytest.approx(
        padded.loss.item())
