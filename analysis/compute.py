"""Contrasts at equal compute: where two arms differ in cost (dynamic sampling resamples, a larger K
rolls out more), the paired difference at equal steps can be bought by the compute alone.

For each contrast whose arms' mean costs differ by more than `COST_RATIO`, every shared seed's
costlier run is read at the cheaper run's final cost, in rollout tokens (`num_tokens`, what generation costs) or in training
seconds (rollout and update, evaluations left out): each held-out prompt's result interpolated
linearly between the two evaluations around that cost (the start's evaluation is cost 0). Then the
same paired contrast as at equal steps (analysis.contrast), with its own Holm family. A cost beyond
the costlier run's first evaluation after its start is needed, else the seed is left out: with few
evaluations the read is coarse, and more `eval.eval_every` makes it finer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.ablation import COST_RATIO, METRIC, with_train_seconds
from analysis.contrast import arm_pairs, label, paired_difference, shared_seeds, verdicts
from analysis.load import has_per_prompt

COSTS = {"rollout tokens": "num_tokens", "training seconds": "train_seconds"}
DESCRIPTION = (f"\nThe same contrasts at equal compute, where the arms' mean costs differ by more than {COST_RATIO}x: "
               "in each seed, the costlier run read at the cheaper one's final rollout tokens or training seconds (`budget`, "
               "mean over seeds), each held-out prompt interpolated between the evaluations around it; Holm's "
               "correction per cost:\n")


def cost_curves(history: pd.DataFrame, stage: str = "grpo", metric: str = METRIC) -> pd.DataFrame:
    """(run, step, num_tokens, train_seconds, per_prompt) at each held-out evaluation of `stage`, the
    costs being those spent by that step (0 at the start's evaluation)."""
    steps = with_train_seconds(history[history.stage == stage])
    column = f"{metric}/per_prompt"
    if column not in steps or not set(COSTS.values()) <= set(steps):
        return pd.DataFrame(columns=["run", "step", *COSTS.values(), "per_prompt"])
    spent = steps[["run", "step", *COSTS.values()]].sort_values(["run", "step"])
    spent[list(COSTS.values())] = spent.groupby("run")[list(COSTS.values())].ffill()
    spent.loc[spent.step == 0, list(COSTS.values())] = 0.0  # the start's evaluation; a cost never logged stays NaN
    evals = steps.loc[has_per_prompt(steps[column]), ["run", "step", column]]
    return evals.rename(columns={column: "per_prompt"}).merge(spent, on=["run", "step"])


def at_cost(curve: pd.DataFrame, cost: str, budget: float) -> np.ndarray | None:
    """One run's per-prompt results at `budget` of `cost`, interpolated between its evaluations; None
    where the budget falls before its first evaluation after the start, or past its last."""
    curve = curve.sort_values(cost)
    spent, results = curve[cost].to_numpy(dtype=float), np.asarray(curve.per_prompt.tolist(), dtype=float)
    if budget == spent[-1]:  # the cheaper run itself: its final results
        return results[-1]
    if len(spent) < 2 or not spent[1] <= budget < spent[-1]:
        return None
    after = int(np.searchsorted(spent, budget))
    if spent[after] == budget:
        return results[after]
    weight = (budget - spent[after - 1]) / (spent[after] - spent[after - 1])
    return (1 - weight) * results[after - 1] + weight * results[after]


def seed_differences(a: pd.DataFrame, b: pd.DataFrame, curves: pd.DataFrame, cost: str) -> tuple[list, list]:
    """b - a per prompt, seed by seed (runs matched row by row), the costlier run of each seed read at
    the cheaper one's final cost; and that budget per seed. A seed with a cost not logged, or a read
    outside the costlier run's curve, is left out. None when the arms' mean costs are alike."""
    pairs = [(curves[curves.run == x], curves[curves.run == y]) for x, y in zip(a.run, b.run)]
    finals = np.array([(ca[cost].max(), cb[cost].max()) for ca, cb in pairs], dtype=float).reshape(-1, 2)
    valid = np.isfinite(finals).all(1) & (finals > 0).all(1)
    means = finals[valid].mean(0) if valid.any() else None
    if means is None or means.max() < COST_RATIO * means.min():
        return [], []
    differences, budgets = [], []
    for (curve_a, curve_b), budget in zip(pairs, finals.min(1)):
        reads = [at_cost(curve, cost, budget) for curve in (curve_a, curve_b)] if budget > 0 else [None]
        if all(r is not None and len(r) == len(reads[0]) for r in reads):
            differences.append(reads[1] - reads[0])
            budgets.append(budget)
    return differences, budgets


def equal_cost_contrasts(table: pd.DataFrame, history: pd.DataFrame, by: str, values: list,
                         others: list[str] = ()) -> pd.DataFrame:
    """Each contrast of `by` (arm_pairs) at equal rollout tokens and at equal training seconds, where
    its arms' costs differ: one row per (contrast, cost), Holm-corrected per cost."""
    curves, parts = cost_curves(history), []
    for cost_name, cost in COSTS.items():
        rows = []
        for fixed, name, arm_a, arm_b in arm_pairs(table, by, values, others):
            matched = shared_seeds(arm_a, arm_b)
            differences, budgets = seed_differences(*matched, curves, cost) if matched else ([], [])
            if len(differences) > 1:
                rows.append({"contrast": label(fixed, name), "at equal": cost_name, "budget": float(np.mean(budgets)),
                             **paired_difference(np.vstack(differences))})
        if rows:
            parts.append(verdicts(pd.DataFrame(rows)))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
