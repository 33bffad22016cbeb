"""Paired contrasts: does this arm beat that one, by how much, and is it resolved.

The arms of a grid share their seeds: one seed gives every arm the same held-out prompts (eval.seed)
and, for arms that differ after it, the same cold start. So the difference between two arms is
measured seed by seed and prompt by prompt, d[s, i] = B[s, i] - A[s, i], and what is common to both
arms (a hard prompt, a lucky seed) cancels. The mean difference's error has two sources, the seeds and
the held-out prompts they share, and `two_way` estimates both from d itself, as `pass_rate_interval`
does for one arm's level. With 3 to 10 seeds a bootstrap over seeds under-covers (it cannot see
a spread its few seeds did not show); a t-interval with Welch-Satterthwaite degrees of freedom holds
its coverage there (tests/test_contrast.py simulates it).

A family of contrasts is corrected by Holm's step-down method: a contrast is resolved when its
Holm-adjusted p-value is below alpha. The interval printed beside it is each contrast's own 95%
interval. Arms that share no seed fall back to Welch's test over per-seed finals, and say so.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from analysis.ablation import arm_label

ALPHA = 0.05


def two_way(values) -> tuple[float, float, float]:
    """The mean of a (seeds, prompts) array, its variance and the degrees of freedom of that variance,
    for a crossed design: every seed sees the same prompts, so the grand mean's error is the seeds'
    (with each seed's own prompt noise: the spread of the seeds' means over the seeds, seeds - 1
    degrees of freedom) plus the prompts' shared offset (the spread of the prompts' means less what
    the seed x prompt noise puts there, over the prompts; its moment estimate, floored at 0).
    The degrees of freedom are the seeds' (seeds - 1): a contrast on 3 seeds is a paired t-test on 3
    seeds, widened by the prompts' share, never narrowed by lending it their degrees of freedom
    (Welch-Satterthwaite's sum resolved 5.3-6.4% of simulated null contrasts at 3 seeds). One row
    is prompts alone."""
    values = np.atleast_2d(np.asarray(values, dtype=float))
    n_seeds, n_prompts = values.shape
    seed_part = values.mean(1).var(ddof=1) / n_seeds if n_seeds > 1 else 0.0
    prompt_spread = values.mean(0).var(ddof=1) if n_prompts > 1 else 0.0
    if n_seeds > 1 and n_prompts > 1:  # the seed x prompt noise's share of the prompts' spread
        residual = values - values.mean(1, keepdims=True) - values.mean(0, keepdims=True) + values.mean()
        prompt_spread = max(0.0, prompt_spread - (residual ** 2).sum() / ((n_seeds - 1) * (n_prompts - 1)) / n_seeds)
    prompt_part = prompt_spread / n_prompts
    dof = n_seeds - 1 if n_seeds > 1 else n_prompts - 1 if n_prompts > 1 else math.inf
    return float(values.mean()), seed_part + prompt_part, dof


def paired(before, after, confidence: float = 0.95) -> dict:
    """`after` - `before`, both (seeds, prompts) arrays in the same seed and prompt order: the mean
    difference, its interval, the two-sided p-value, and each seed's mean difference."""
    diff = np.atleast_2d(np.asarray(after, dtype=float)) - np.atleast_2d(np.asarray(before, dtype=float))
    mean, variance, dof = two_way(diff)
    if variance == 0:  # every difference equal (often all 0): no spread to measure
        low = high = p = math.nan
    else:
        half = stats.t.ppf((1 + confidence) / 2, dof) * math.sqrt(variance)
        low, high = mean - half, mean + half
        p = float(2 * stats.t.sf(abs(mean) / math.sqrt(variance), dof))
    return {"difference": mean, "low": low, "high": high, "p": p, "seeds": diff.shape[0],
            "per_seed": [round(float(d), 4) for d in diff.mean(1)]}


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment: the i-th smallest of m p-values times (m - i), made monotone,
    capped at 1. A NaN (no test) stays NaN and does not count towards m."""
    p = np.asarray(p_values, dtype=float)
    adjusted, tested = np.full_like(p, np.nan), np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested])]
    m = len(order)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return adjusted


def verdicts(rows: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Holm-adjusted p-values over the family of `rows` and a verdict for each. A contrast on one seed
    gets none: its interval holds the held-out prompts' error only, and says nothing of another seed."""
    one_seed = (rows.seeds < 2).to_numpy() if "seeds" in rows else np.zeros(len(rows), dtype=bool)
    adjusted = holm(np.where(one_seed, np.nan, rows.p.to_numpy(dtype=float))) if len(rows) else np.array([])
    verdict = ["one seed: none" if single else "resolved" if q < alpha else "not resolved" if not np.isnan(q)
               else "no spread" for q, single in zip(adjusted, one_seed)]
    return rows.assign(p_holm=adjusted, verdict=verdict)


def results(part: pd.DataFrame, column: str) -> np.ndarray:
    """An arm's `column`, one row per run in `part`'s order: per held-out prompt where every run logged
    them (`<column>_per_prompt`, equally many), else the run's value alone."""
    detail = part.get(f"{column}_per_prompt")
    if detail is not None and all(isinstance(d, (list, np.ndarray)) for d in detail) \
            and len({len(d) for d in detail}) == 1:
        return np.asarray(detail.tolist(), dtype=float)
    return part[column].to_numpy(dtype=float)[:, None]


def paired_runs(before: pd.DataFrame, after: pd.DataFrame, before_column: str = "final",
                after_column: str = "final") -> dict:
    """`paired` over runs matched row by row (one seed each), per prompt where both have them."""
    a, b = results(before, before_column), results(after, after_column)
    if a.shape != b.shape:  # prompts logged on one side only: the runs' values alone
        a, b = before[before_column].to_numpy(dtype=float)[:, None], after[after_column].to_numpy(dtype=float)[:, None]
    return paired(a, b)


def arm_contrast(base: pd.DataFrame, other: pd.DataFrame, column: str = "final") -> dict:
    """`other` - `base` over the seeds both arms finished (paired), or, when they share none, Welch's
    test over per-seed means (unpaired)."""
    base, other = base.drop_duplicates("seed").set_index("seed"), other.drop_duplicates("seed").set_index("seed")
    shared = sorted(set(base.index) & set(other.index))
    if shared:
        return {**paired_runs(base.loc[shared], other.loc[shared], column, column), "paired": True}
    a, b = base[column].to_numpy(dtype=float), other[column].to_numpy(dtype=float)
    welch = stats.ttest_ind(b, a, equal_var=False) if min(len(a), len(b)) > 1 else None
    low, high = welch.confidence_interval() if welch is not None else (math.nan, math.nan)
    return {"difference": b.mean() - a.mean(), "low": low, "high": high,
            "p": welch.pvalue if welch is not None else math.nan, "seeds": min(len(a), len(b)),
            "per_seed": [], "paired": False}


def arm_contrasts(table: pd.DataFrame, by: str, values: list, others: list[str] = (),
                  column: str = "final", adjacent: bool = True) -> pd.DataFrame:
    """The contrasts of one swept key within each combination of the `others` keys: every value
    against the first (the baseline), and, with `adjacent`, each value against the one before it
    (an ordered key, a cumulative ablation), a pair counted once. Holm-corrected over the family."""
    pairs = [(values[0], v) for v in values[1:]]
    if adjacent:
        pairs += [(a, b) for a, b in zip(values[1:], values[2:])]
    others, rows = list(others), []
    for fixed, part in (table.groupby(others, observed=True) if others else [((), table)]):
        fixed = dict(zip(others, fixed if isinstance(fixed, tuple) else (fixed,)))
        for a, b in pairs:
            arm_a, arm_b = part[part[by] == a], part[part[by] == b]
            if len(arm_a) and len(arm_b):
                rows.append({**fixed, "contrast": f"{arm_label(b)} - {arm_label(a)}", **arm_contrast(arm_a, arm_b, column)})
    return verdicts(pd.DataFrame(rows, columns=[*others, "contrast", "difference", "low", "high", "p", "seeds",
                                                "per_seed", "paired"]))


def describe(contrasts: pd.DataFrame) -> str:
    """What a contrast table's columns mean, for a report."""
    unpaired = "" if contrasts.paired.all() else (" Rows with paired = False compare arms that share no seed: "
                                                  "Welch's test over per-seed finals, held-out prompts left out.")
    return ("Paired by seed (one seed: the same held-out prompts and, for arms that differ after it, the same "
            "start): the mean difference, its 95% interval over seeds and held-out prompts, each seed's "
            f"difference, and a verdict at alpha {ALPHA} after Holm's correction over this table's "
            f"{len(contrasts)} contrast{'' if len(contrasts) == 1 else 's'} (p_holm).{unpaired}\n")
