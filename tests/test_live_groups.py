"""Live-group accounting: measured against 1 - p^K - (1 - p)^K."""

import math

import pytest
import torch

from harness.metrics import dead_group_cost, reward_metrics
from harness.theory import live_probability
from harness.rollout.base import Rollout


def test_seed_article_figures():
    assert live_probability(0.05, 8) == pytest.approx(0.34, abs=0.01)
    assert live_probability(0.05, 16) == pytest.approx(0.56, abs=0.01)
    assert live_probability(0.5, 8) == pytest.approx(1 - 2 ** (1 - 8))


@pytest.mark.parametrize("p, K", [(0.05, 8), (0.3, 4), (0.5, 2), (0.9, 16)])
def test_measured_live_fraction_matches_theory_within_binomial_error(p, K):
    groups = 4000
    rewards = torch.bernoulli(torch.full((groups * K,), p), generator=torch.Generator().manual_seed(K))
    metrics = reward_metrics(rewards, rewards, rewards, K)
    expected = live_probability(p, K)
    sigma = math.sqrt(expected * (1 - expected) / groups)
    assert abs(metrics["live_group_frac"] - expected) < 4 * sigma
    # With one difficulty for every prompt, the prediction from the batch pass rate agrees too.
    assert abs(metrics["live_group_frac/predicted"] - expected) < 4 * sigma


def test_mixed_difficulty_keeps_fewer_groups_alive_than_the_mean_pass_rate_predicts():
    K, groups = 8, 4000
    g = torch.Generator().manual_seed(0)
    easy = torch.bernoulli(torch.full((groups // 2 * K,), 0.9), generator=g)
    hard = torch.bernoulli(torch.full((groups // 2 * K,), 0.02), generator=g)
    rewards = torch.cat([easy, hard])
    metrics = reward_metrics(rewards, rewards, rewards, K)
    assert metrics["live_group_frac"] < metrics["live_group_frac/predicted"] - 0.2


def test_dead_groups_cost_is_their_share_of_rollout_tokens():
    K = 2
    reward = torch.tensor([1.0, 1.0, 0.0, 1.0])  # group 0 dead, group 1 live
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]])
    rollout = Rollout(prompt_ids=torch.zeros(4, 1), prompt_mask=torch.ones(4, 1), completion_ids=torch.zeros(4, 4),
                      completion_mask=mask, texts=[""] * 4, truncated=torch.zeros(4, dtype=torch.bool))
    cost = dead_group_cost(reward, rollout, K)
    assert cost["rollout_tokens/dead"] == 4 and cost["rollout_tokens/dead_frac"] == pytest.approx(4 / 10)


def test_rewards_equal_but_for_float_noise_make_a_dead_group():
    """Rewards (float32, as the trainer holds them) one and two ulps apart: no signal, no live group."""
    third = torch.tensor(1 / 3, dtype=torch.float32)
    noisy = torch.stack([third, torch.nextafter(third, torch.tensor(1.0)), third,
                         torch.nextafter(torch.nextafter(third, torch.tensor(0.0)), torch.tensor(0.0))])
    assert noisy.std() > 1e-8  # above TRL's isclose tolerance
    metrics = reward_metrics(noisy, noisy, noisy, 4)
    assert metrics["live_group_frac"] == 0.0 and metrics["frac_reward_zero_std"] == 1.0
    small_but_real = torch.tensor([0.5, 0.5, 0.5, 0.5 + 1e-4])  # one rule of ten thousand: a signal
    assert reward_metrics(small_but_real, small_but_real, small_but_real, 4)["live_group_frac"] == 1.0


def test_prediction_is_from_the_training_reward_and_only_when_it_is_binary():
    K = 4
    gold = torch.tensor([1.0, 0.0, 0.0, 0.0] * 2)
    proxy_binary = torch.tensor([1.0, 1.0, 0.0, 1.0] * 2)  # a binary training reward that is not the gold one
    metrics = reward_metrics(gold, proxy_binary, proxy_binary, K)
    assert metrics["live_group_frac/predicted"] == pytest.approx(live_probability(0.75, K))
    graded = torch.tensor([0.5, 1.0, 0.25, 1.0] * 2)  # a graded proxy, or gold plus a length penalty
    assert "live_group_frac/predicted" not in reward_metrics(gold, graded, graded, K)


def test_the_stages_on_a_binary_reward_are_read_from_each_runs_own_graph():
    """r1's two RL stages count as the default recipe's grpo does; a learned reward, an overlong penalty,
    a stage of another type, and a run logged before its group's keys existed do not."""
    import pandas as pd

    from analysis.live import binary_reward_stages

    grpo = {"grpo.num_generations": 4, "grpo.prompts_per_step": 8, "grpo.soft_overlong_cache": 0}
    runs = pd.DataFrame([
        {"run": "default", "stage": "grpo", "task.reward": "gold", **grpo},  # logged before the graph was recorded
        {"run": "r1", "stage": "rl", "task.reward": "gold", "pipeline.graph.rl.type": "grpo",
         "pipeline.graph.rl.config": "grpo", **grpo},
        {"run": "r1", "stage": "sft_final", "task.reward": "gold", "pipeline.graph.sft_final.type": "sft",
         "pipeline.graph.sft_final.config": "sft", **grpo},
        {"run": "learned", "stage": "grpo", "task.reward": "learned", **grpo},
        {"run": "penalised", "stage": "grpo", "task.reward": "gold", **grpo, "grpo.soft_overlong_cache": 4},
        {"run": "old", "stage": "explore", "task.reward": "gold", **grpo},  # no explore.* keys: skipped
    ])
    found = binary_reward_stages(runs)
    assert found[["run", "stage"]].values.tolist() == [["default", "grpo"], ["r1", "rl"]]
    assert found.K.tolist() == [4, 4] and found.prompts_per_step.tolist() == [8, 8]
    assert binary_reward_stages(runs.drop(columns="grpo.prompts_per_step")).empty  # a key missing: no crash
