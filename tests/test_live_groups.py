"""Live groups: the trainer's accounting, and the analysis' theory and measured points, against
1 - p^K - (1 - p)^K and its mixture over prompts."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from analysis import live
from harness.metrics import dead_group_cost, live_groups, reward_metrics
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
    found = live.binary_reward_stages(runs)
    assert found[["run", "stage"]].values.tolist() == [["default", "grpo"], ["r1", "rl"]]
    assert found.K.tolist() == [4, 4] and found.prompts_per_step.tolist() == [8, 8]
    assert live.binary_reward_stages(runs.drop(columns="grpo.prompts_per_step")).empty  # a key missing: no crash


# -- live groups ----------------------------------------------------------------------------------
def test_live_probability_gives_the_seed_figures():
    assert live_probability(0.05, 8) == pytest.approx(0.34, abs=0.005)
    assert live_probability(0.05, 16) == pytest.approx(0.56, abs=0.005)


@pytest.mark.parametrize("live_fraction, pass_rate", [(0.3, 0.05), (0.34, 0.05), (0.5, 0.05), (0.9, 0.5), (0.99, 0.01)])
def test_num_generations_for_is_the_smallest_k_reaching_the_fraction(live_fraction, pass_rate):
    K = live.num_generations_for(live_fraction, pass_rate)
    assert live_probability(pass_rate, K) >= live_fraction
    assert K == 2 or live_probability(pass_rate, K - 1) < live_fraction


def test_the_mixture_prediction_recovers_live_groups_of_prompts_of_mixed_difficulty():
    """Prompts at pass rates p ~ Beta(0.5, 2), 4 held-out samples each: the fitted concentration (a + b =
    2.5) at the mean p gives E[P_live(p, 8)] (about 0.50 here, by 10^6 draws), far below P_live at the
    mean p (0.2: 0.83); prompts all alike give P_live at the mean back."""
    rng = np.random.default_rng(0)
    truth = float(np.mean(live_probability(rng.beta(0.5, 2, 1_000_000), 8)))
    fitted = [live.prompt_concentration(rng.binomial(4, rng.beta(0.5, 2, 400)), 4) for _ in range(8)]
    estimates = [live.mixture_live_probability(0.2, c, 8) for c in fitted]
    assert np.mean(estimates) == pytest.approx(truth, abs=0.03) and np.std(estimates) < 0.05
    assert truth < live_probability(0.2, 8) - 0.25
    assert live.prompt_concentration(np.zeros(50, dtype=int), 4) == np.inf
    assert live.mixture_live_probability(0.2, np.inf, 8) == pytest.approx(live_probability(0.2, 8))
    assert live.mixture_live_probability(0.2, 1e9, 8) == pytest.approx(live_probability(0.2, 8), abs=1e-6)
    assert np.isnan(live.prompt_concentration(np.ones(50, dtype=int), 1))  # one sample shows no spread


def test_num_generations_for_answers_the_seed_question():
    assert live.num_generations_for(0.33, 0.05) == 8  # P_live(0.05, 8) = 0.337, at K = 7 only 0.302
    assert live.num_generations_for(0.5, 0.05) == 14  # 0.95^14 = 0.488 is the first below one half
    with pytest.raises(ValueError, match="pass_rate=0"):
        live.num_generations_for(0.5, 0.0)
    with pytest.raises(ValueError, match="live_fraction=1"):
        live.num_generations_for(1, 0.3)


def _simulated_sweep(rng, ks=(4, 8), steps=300, groups=16):
    """Runs whose every step samples `groups` groups of K Bernoulli(p) rewards, p drifting."""
    runs, history = [], []
    for K in ks:
        run = f"k{K}"
        runs.append({"run": run, "stage": "grpo", "task.reward": "gold", "grpo.num_generations": K,
                     "grpo.prompts_per_step": groups, "grpo.soft_overlong_cache": 0})
        for step in range(1, steps + 1):
            p = 0.02 + 0.9 * step / steps
            reward = (rng.random(groups * K) < p).astype(np.float32)
            live_frac = live_groups(__import__("torch").tensor(reward), K).float().mean().item()
            history.append({"run": run, "stage": "grpo", "step": step, "rewards/gold/mean": p, "reward": p,
                            "live_group_frac": live_frac, "groups": groups})
    return pd.DataFrame(runs), pd.DataFrame(history)


def test_measured_live_points_bracket_the_theory_they_were_simulated_from():
    runs, history = _simulated_sweep(np.random.default_rng(0))
    points = live.measured_live_points(runs, history, bins=10)
    assert sorted(points.K.unique()) == [4, 8] and len(points) == 20
    assert (points.groupby("K")["groups"].sum() == 300 * 16).all()  # every group of every step, once
    inside = (points.low <= points.theory) & (points.theory <= points.high)
    assert inside.mean() >= 0.85  # 95% intervals (the pooled p spreads a little within a bin)
    assert (points.low <= points.live_frac).all() and (points.live_frac <= points.high).all()


def test_proxy_trained_runs_give_no_live_points():
    runs, history = _simulated_sweep(np.random.default_rng(1), ks=(4,), steps=20)
    assert live.measured_live_points(runs.assign(**{"task.reward": "proxy"}), history).empty


def test_runs_with_a_length_penalty_give_no_live_points():
    """Gold plus DAPO's overlong penalty is not binary: its groups live by length, not success."""
    runs, history = _simulated_sweep(np.random.default_rng(1), ks=(4, 8), steps=20)
    penalised = runs.assign(**{"grpo.soft_overlong_cache": [0, 4]})
    assert set(live.measured_live_points(penalised, history).K) == {4}


def test_live_points_of_the_explore_stage_use_its_own_group_size():
    runs, history = _simulated_sweep(np.random.default_rng(2), ks=(4,), steps=20)
    explore = runs.rename(columns=lambda c: c.replace("grpo.", "explore.")).assign(
        stage="explore", **{"explore.reward": "gold", "explore.num_generations": 16, "task.reward": "proxy"})
    points = live.measured_live_points(pd.concat([runs, explore]), pd.concat([history, history.assign(
        stage="explore")]))
    assert sorted(points.K.unique()) == [4, 16]


def test_live_points_take_the_pass_rate_of_the_training_reward():
    runs, history = _simulated_sweep(np.random.default_rng(3), ks=(4,), steps=50)
    points = live.measured_live_points(runs, history.assign(**{"rewards/gold/mean": 0.5}))
    assert points.pass_rate.nunique() > 1  # from `reward`, not the (here constant) gold column
