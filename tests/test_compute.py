"""Contrasts at equal compute: the costlier arm read at the cheaper one's final cost."""

import numpy as np
import pandas as pd
import pytest

from analysis.compute import at_cost, cost_curves, equal_cost_contrasts

PER_PROMPT = "eval/gold_pass@1/per_prompt"


def _sweep(rng, seeds=4, prompts=60):
    """Arm a spends 150 tokens (1.5 s) a step, b 200 (1 s); both evaluated at steps 0, 5 and 10. Per
    prompt, a passes at 0.2, 0.3, 0.4 and b at 0.2, 0.5, 0.6 (plus a seed's offset shared by both arms, and each evaluation's noise): at equal steps b
    leads by 0.2; at a's 1500 tokens b is halfway from step 5 to 10 (0.55), 0.15 ahead; at b's 10
    seconds a is at step 6.67 (0.333), so b leads by 0.267."""
    history, table = [], []
    for seed in range(seeds):
        offset = rng.normal(0, 0.05, prompts)
        for arm, tokens, seconds, levels in (("a", 150, 1.5, (0.2, 0.3, 0.4)), ("b", 200, 1.0, (0.2, 0.5, 0.6))):
            run = f"{arm}{seed}"
            for step in range(1, 11):
                history.append({"run": run, "stage": "grpo", "step": step, "num_tokens": tokens * step, "step_time": seconds})
            for step, level in zip((0, 5, 10), levels):
                results = level + offset + rng.normal(0, 0.02, prompts)  # each evaluation's own noise
                history.append({"run": run, "stage": "grpo", "step": step, PER_PROMPT: list(results)})
            table.append({"run": run, "seed": seed, "arm": arm, "final": results.mean(), "final_per_prompt": list(results)})
    history = pd.DataFrame(history).groupby(["run", "stage", "step"], as_index=False).first()
    return pd.DataFrame(table), history


def test_the_costlier_arm_is_read_at_the_cheaper_ones_final_cost():
    table, history = _sweep(np.random.default_rng(0))
    curves = cost_curves(history)
    b0 = curves[curves.run == "b0"]
    assert b0.num_tokens.tolist() == [0, 1000, 2000] and b0.train_seconds.tolist() == [0, 5, 10]
    step5, step10 = (np.asarray(b0.per_prompt.iloc[k]) for k in (1, 2))
    assert at_cost(b0, "num_tokens", 1500) == pytest.approx((step5 + step10) / 2)
    assert at_cost(b0, "num_tokens", 400) is None  # before its first evaluation after the start
    result = equal_cost_contrasts(table, history, "arm", ["a", "b"]).set_index("at equal")
    assert result.loc["rollout tokens", "difference"] == pytest.approx(0.15, abs=0.01)
    assert result.loc["rollout tokens", "budget"] == pytest.approx(1500)
    assert result.loc["training seconds", "difference"] == pytest.approx(0.6 - (0.3 + 0.1 / 3), abs=0.01)
    assert result.loc["training seconds", "budget"] == pytest.approx(10)
    assert (result.verdict == "resolved").all() and (result.seeds == 4).all()


def test_arms_of_equal_cost_get_no_equal_cost_row():
    table, history = _sweep(np.random.default_rng(1))
    history.loc[history.run.str.startswith("a"), "num_tokens"] = history.num_tokens * 200 / 150
    history["step_time"] = 1.0
    assert equal_cost_contrasts(table, history, "arm", ["a", "b"]).empty


def test_a_cost_never_logged_gives_no_equal_cost_row_and_the_costlier_arm_may_change_by_seed():
    table, history = _sweep(np.random.default_rng(2))
    assert equal_cost_contrasts(table, history.assign(num_tokens=np.nan, step_time=np.nan), "arm", ["a", "b"]).empty
    swapped = history.copy()  # in seed 0 a is the costlier (2100 tokens): read at b0's final 2000
    swapped.loc[swapped.run == "a0", "num_tokens"] = swapped.num_tokens * 1.4
    result = equal_cost_contrasts(table, swapped, "arm", ["a", "b"]).set_index("at equal").loc["rollout tokens"]
    a0 = cost_curves(swapped).query("run == 'a0'")
    assert at_cost(a0, "num_tokens", 2000) is not None and result.seeds == 4
    assert result.per_seed[0] == pytest.approx(np.mean(table.final_per_prompt[1]) - np.mean(at_cost(a0, "num_tokens", 2000)), abs=1e-4)


def test_gold_is_read_where_the_run_that_moved_further_first_reached_the_others_final_d():
    """b moves further (d 1, 2, then back to 1.5) and its gold falls; a ends at d = 1. At equal d, b is
    read where it first got to d = 1 (its step 5, gold 0.4), not at the end (0.0) nor at its later 1.5."""
    rng, history, table = np.random.default_rng(1), [], []
    for seed in range(4):
        offset, start = rng.normal(0, 0.05, 40), 0.2 + rng.normal(0, 0.05, 40)  # both arms start from one policy
        for arm, points in (("a", [(0, 0, 0.2), (5, 0.25, 0.25), (10, 1.0, 0.3)]),
                            ("b", [(0, 0, 0.2), (5, 1.0, 0.4), (10, 4.0, 0.1), (15, 2.25, 0.0)])):
            for step, kl, level in points:
                results = start if step == 0 else level + offset + rng.normal(0, 0.02, 40)
                history.append({"run": f"{arm}{seed}", "stage": "grpo", "step": step, "eval/kl_to_initial": kl,
                                PER_PROMPT: list(results)})
            table.append({"run": f"{arm}{seed}", "seed": seed, "arm": arm, "final_per_prompt": list(results)})
    table, history = pd.DataFrame(table), pd.DataFrame(history)
    result = equal_cost_contrasts(table, history, "arm", ["a", "b"])
    assert result["at equal"].tolist() == ["d = sqrt(KL)"]  # no cost was logged: no row at equal compute
    assert result.budget.iloc[0] == pytest.approx(1.0)
    assert result.difference.iloc[0] == pytest.approx(0.1, abs=0.02) and result.verdict.iloc[0] == "resolved"
    b_starts = history.run.str.startswith("b") & (history.step == 0)  # b from another policy: d is from another start
    history.loc[b_starts, PER_PROMPT] = history.loc[b_starts, PER_PROMPT].map(lambda p: [x + 0.1 for x in p])
    assert equal_cost_contrasts(table, history, "arm", ["a", "b"]).empty


def test_a_read_between_evaluations_after_a_dip_skips_a_missing_value():
    curve = pd.DataFrame({"step": [0, 5, 10, 15, 20], "d": [0, 0.5, np.nan, 0.2, 2.0],
                          "per_prompt": [[0.0], [1.0], [9.0], [2.0], [4.0]]})
    assert at_cost(curve, "d", 1.1) == pytest.approx([2.0 + 2.0 * 0.5])  # first past 1.1 between d 0.2 and 2.0
    assert at_cost(curve, "d", 0.4) is None  # before the first evaluation after the start
    assert at_cost(curve, "d", 2.5) is None  # never reached
    assert at_cost(curve.iloc[:0], "d", 1.0) is None
