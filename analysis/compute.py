"""Contrasts at equal compute and at equal distance: where two arms differ in cost (dynamic sampling
resamples, a larger K rolls out more), the paired difference at equal steps can be bought by the
compute alone; where they move the policy by different amounts (a KL weight, a proxy hacked sooner),
a difference at the end compares policies at different distances from their start.

For each contrast whose arms' means differ by more than `COST_RATIO` on an axis, every shared seed's
run that went further is read where the other ended: in rollout tokens (`num_tokens`, what
generation costs), training seconds (rollout and update, evaluations left out), or d = sqrt(KL to
the stage's start) (Gao et al.'s axis: gold at a fixed d, not at the end), each held-out prompt's
result interpolated linearly between the two evaluations where the run first reached it (the
start's evaluation is 0). Then the same paired contrast as at equal steps (analysis.contrast), with
its own Holm family per axis. A value beyond the run's first evaluation after its start is needed,
else the seed is left out: with few evaluations the read is coarse, and more `eval.eval_every`
makes it finer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.ablation import COST_RATIO, with_train_seconds
from analysis.contrast import arm_pairs, label, paired_difference, shared_seeds, verdicts
from analysis.load import has_per_prompt
from harness.store import FINAL_STAGE, GOLD, KL, PER_PROMPT

COSTS = {"rollout tokens": "num_tokens", "training seconds": "train_seconds"}  # spent by each step
DISTANCE = "d"  # d = sqrt(KL to the stage's start), at each evaluation
AXES = {**COSTS, "d = sqrt(KL)": DISTANCE}
DESCRIPTION = (f"\nThe same contrasts at equal compute and at equal distance, where the arms' means differ by more than "
               f"{COST_RATIO}x: in each seed, both runs read where they first reached the nearer one's end, in rollout "
               "tokens, training seconds or d = sqrt(KL to the start) (`budget`, mean over seeds; d only for runs that "
               "start from one policy), each held-out prompt interpolated between the evaluations around it; `seeds` "
               "counts the seeds that could be read. Holm's correction per axis, none across axes or looks: descriptive, "
               "beside the contrasts above:\n")


def cost_curves(history: pd.DataFrame, stage: str = FINAL_STAGE, metric: str = GOLD) -> pd.DataFrame:
    """(run, step, num_tokens, train_seconds, d, per_prompt) at each held-out evaluation of `stage`, in
    step order: the costs spent by that step and d there (0 at the start's evaluation; NaN where never
    logged)."""
    steps = with_train_seconds(history[history.stage == stage])
    column = metric + PER_PROMPT
    if column not in steps:
        return pd.DataFrame(columns=["run", "step", *AXES.values(), "per_prompt"])
    steps = steps.assign(**{name: steps[name] if name in steps else np.nan for name in [*COSTS.values(), KL]})
    spent = steps[["run", "step", *COSTS.values()]].sort_values(["run", "step"])
    spent[list(COSTS.values())] = spent.groupby("run")[list(COSTS.values())].ffill()
    spent.loc[spent.step == 0, list(COSTS.values())] = 0.0  # the start's evaluation; a cost never logged stays NaN
    evals = steps.loc[has_per_prompt(steps[column]), ["run", "step", column, KL]]
    evals[DISTANCE] = np.sqrt(evals.pop(KL).astype(float).clip(lower=0))  # an estimate a hair below 0 is 0
    evals.loc[evals.step == 0, DISTANCE] = 0.0
    return evals.rename(columns={column: "per_prompt"}).merge(spent, on=["run", "step"]).sort_values(["run", "step"])


def at_cost(curve: pd.DataFrame, cost: str, budget: float) -> np.ndarray | None:
    """One run's per-prompt results where its `cost` first reached `budget` (costs only grow; d may
    fall back, and both runs of a contrast are read at their first passage), interpolated between
    the evaluations around it; None where the budget falls before its first evaluation after the
    start, or is never reached. Evaluations without a value are skipped."""
    curve = curve.dropna(subset=[cost]).sort_values("step")
    spent, results = curve[cost].to_numpy(dtype=float), np.asarray(curve.per_prompt.tolist(), dtype=float)
    reached = np.flatnonzero(spent[1:] >= budget) + 1  # evaluations after the start that got there
    if len(spent) < 2 or budget < spent[1] or not len(reached):
        return None
    after = int(reached[0])
    weight = (budget - spent[after - 1]) / (spent[after] - spent[after - 1])
    return (1 - weight) * results[after - 1] + weight * results[after]


def _final(curve: pd.DataFrame, axis: str) -> float:
    """Where a run ended on `axis` (its curve is in step order): d may end below its furthest."""
    return curve[axis].iloc[-1] if len(curve) else np.nan


def _same_start(curve_a: pd.DataFrame, curve_b: pd.DataFrame) -> bool:
    """Whether two runs start from one policy (the same start evaluation): d is from each run's own start."""
    starts = [curve.loc[curve.step == 0, "per_prompt"] for curve in (curve_a, curve_b)]
    return all(len(start) for start in starts) and np.array_equal(*(np.asarray(start.iloc[0]) for start in starts))


def seed_differences(a: pd.DataFrame, b: pd.DataFrame, curves: pd.DataFrame, cost: str) -> tuple[list, list]:
    """b - a per prompt, seed by seed (runs matched row by row), the run of each seed that went further
    read at the other's final value of `cost`; and that budget per seed. A seed with a value not
    logged, or a read outside the further run's curve, is left out. None when the arms' means are alike."""
    pairs = [(curves[curves.run == x], curves[curves.run == y]) for x, y in zip(a.run, b.run)]
    finals = np.array([(_final(ca, cost), _final(cb, cost)) for ca, cb in pairs], dtype=float).reshape(-1, 2)
    valid = np.isfinite(finals).all(1) & (finals > 0).all(1)
    means = finals[valid].mean(0) if valid.any() else None
    if means is None or means.max() < COST_RATIO * means.min():
        return [], []
    differences, budgets = [], []
    for (curve_a, curve_b), budget in zip(pairs, finals.min(1)):
        comparable = budget > 0 and (cost != DISTANCE or _same_start(curve_a, curve_b))
        reads = [at_cost(curve, cost, budget) for curve in (curve_a, curve_b)] if comparable else [None]
        if all(r is not None and len(r) == len(reads[0]) for r in reads):
            differences.append(reads[1] - reads[0])
            budgets.append(budget)
    return differences, budgets


def equal_cost_contrasts(table: pd.DataFrame, history: pd.DataFrame, by: str, values: list,
                         others: list[str] = ()) -> pd.DataFrame:
    """Each contrast of `by` (arm_pairs) at equal rollout tokens, training seconds and d, where its
    arms differ on that axis: one row per (contrast, axis), Holm-corrected per axis."""
    curves, parts = cost_curves(history), []
    for cost_name, cost in AXES.items():
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
