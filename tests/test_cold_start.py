"""Cold start against pure RL (analysis.cold_start): a run with no SFT stage is the size-0 arm, the
steps to a threshold are read off the evaluations, and the live fraction at GRPO's start meets
the theory it was simulated from."""

import numpy as np
import pandas as pd
import pytest
import torch

from analysis import cold_start
from analysis.cold_start import EXAMPLES
from harness.metrics import live_groups
from harness.theory import live_probability

K, GROUPS = 8, 64


def sweep(start: dict, evals: dict, training: dict, seed: int = 0):
    """Runs named by cold-start size (0: no SFT stage), each with GRPO evaluations at the given steps
    (step 0 is the start) and 10 training steps of GROUPS groups of K Bernoulli rewards. For its first
    5 steps a run's groups pass at `training[run]`: one rate, or a list of rates its groups cycle
    through (prompts of mixed difficulty); after them, at 0.5."""
    rng = np.random.default_rng(seed)
    runs, history = [], []
    for name, size in start.items():
        config = {"run": name, "seed": int(name[-1]), "task.reward": "gold", "grpo.num_generations": K,
                  "grpo.prompts_per_step": GROUPS, "grpo.soft_overlong_cache": 0,
                  "sft.cold_start_size": size or 1000}  # the none arm keeps the default, never used
        runs.append({**config, "stage": "grpo", "status": "finished"})
        if size:
            runs.append({**config, "stage": "sft", "status": "finished"})
        for step, value in evals[name].items():
            history.append({"run": name, "stage": "grpo", "step": step, "eval/gold_pass@1": value})
        for step in range(1, 11):
            rates = np.resize(np.atleast_1d(training[name] if step <= 5 else 0.5), GROUPS).repeat(K)
            reward = torch.tensor((rng.random(GROUPS * K) < rates).astype(np.float32))
            history.append({"run": name, "stage": "grpo", "step": step, "reward": reward.mean().item(),
                            "live_group_frac": live_groups(reward, K).float().mean().item(), "groups": GROUPS})
    history = pd.DataFrame(history).groupby(["run", "stage", "step"], as_index=False).first()
    return pd.DataFrame(runs), history


RUNS = {"none-0": 0, "none-1": 0, "n10-0": 10, "n10-1": 10, "n100-0": 100, "n100-1": 100}
EVALS = {"none-0": {0: 0.0, 5: 0.0, 10: 0.02}, "none-1": {0: 0.01, 5: 0.0, 10: 0.2},
         "n10-0": {0: 0.05, 5: 0.2, 10: 0.3}, "n10-1": {0: 0.05, 5: 0.1, 10: 0.25},
         "n100-0": {0: 0.3, 5: 0.4, 10: 0.5}, "n100-1": {0: 0.3, 5: 0.45, 10: 0.5}}
TRAINING = {"none-0": 0.02, "none-1": 0.02, "n10-0": 0.05, "n10-1": 0.05, "n100-0": 0.3, "n100-1": 0.3}


def test_a_run_with_no_sft_stage_is_the_size_0_arm_whatever_its_sft_config_says():
    runs, history = sweep(RUNS, EVALS, TRAINING)
    examples = cold_start.with_examples(runs).set_index("run")[EXAMPLES]
    assert examples.to_dict() == RUNS and cold_start.is_cold_start_sweep(runs)
    table = cold_start.start_and_end(runs, history).set_index("run")
    assert table.loc["n10-1", ["start", "final"]].tolist() == [0.05, 0.25]
    both = cold_start.summary(table.reset_index()).set_index(EXAMPLES)
    assert both.mean_end.tolist() == pytest.approx([0.11, 0.275, 0.5]) and (both.runs == 2).all()


def test_steps_to_threshold_is_the_first_evaluation_at_or_above_it_and_says_which_never_got_there():
    runs, history = sweep(RUNS, EVALS, TRAINING)
    steps = cold_start.steps_to_threshold(cold_start.start_and_end(runs, history), history,
                                          threshold=0.2).set_index(EXAMPLES)
    assert steps.steps_by_seed.to_dict() == {0: ">10, 10", 10: "5, 10", 100: "0, 0"}
    assert steps.reached.tolist() == [1, 2, 2]
    assert steps.median_step.isna().tolist() == [True, False, False]  # half never reached it: no median
    assert steps.loc[10, "median_step"] == 7.5


def test_the_live_fraction_at_the_start_meets_the_theory_at_the_training_pass_rate():
    training = {"none-0": 0.015, "none-1": 0.015, "n10-0": 0.05, "n10-1": 0.05, "n100-0": 0.3, "n100-1": 0.3}
    runs, history = sweep(RUNS, EVALS, training)  # held-out says otherwise: the theory is about training's p
    points = cold_start.live_at_start_points(runs, history, first_steps=5)
    assert (points.groups == 5 * GROUPS).all()  # steps 6-10 (p = 0.5) are not the start
    assert points.heldout_start.tolist() == [EVALS[run][0] for run in points.run]
    assert points.pass_rate.tolist() == pytest.approx([training[run] for run in points.run], abs=0.01)
    assert points.theory.tolist() == pytest.approx([live_probability(p, K) for p in points.pass_rate])
    table = cold_start.live_at_start(points).set_index(EXAMPLES)
    # 640 groups per arm: the binomial SE of a live fraction is at most 0.02
    assert table.live_frac.tolist() == pytest.approx(table.theory.tolist(), abs=0.06)
    assert (table.low < table.live_frac).all() and (table.live_frac < table.high).all()
    assert table.live_frac.is_monotonic_increasing  # more examples, a higher start, more live groups


def test_prompts_of_mixed_difficulty_keep_fewer_groups_live_than_their_mean_pass_rate_predicts():
    """Half the prompts never solved, half solved 40% of the time: a mean p of 0.2, where
    P_live(0.2, 8) = 0.83, but only the solvable half is ever live (0.5 x P_live(0.4, 8) = 0.49)."""
    runs, history = sweep(RUNS, EVALS, {run: [0.0, 0.4] for run in RUNS})
    table = cold_start.live_at_start(cold_start.live_at_start_points(runs, history))
    assert table.live_frac.tolist() == pytest.approx([0.5 * live_probability(0.4, K)] * 3, abs=0.06)
    assert (table.high < table.theory).all() and table.theory.tolist() == pytest.approx([0.83] * 3, abs=0.03)
