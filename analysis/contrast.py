"""Paired contrasts: does this arm beat that one, by how much, and is it resolved.

The arms of a grid share their seeds: one seed gives every arm the same held-out prompts (eval.seed)
and, for arms that differ after it, the same cold start. So the difference between two arms is
measured seed by seed and prompt by prompt, d[s, i] = B[s, i] - A[s, i], and what is common to both
arms (a hard prompt, a lucky seed) cancels. The mean difference's error has two sources, the seeds and
the held-out prompts they share, and `Spread` estimates both from d itself (as `pass_rate_interval`
does for one arm's level, there with Welch-Satterthwaite's degrees of freedom). With 3 to 10 seeds
a bootstrap over seeds under-covers (it cannot see a spread its few seeds did not show); a t-interval on the seeds' degrees of freedom holds its
coverage there (tests/test_contrast.py simulates it). The same two parts give each contrast's power:
the smallest difference its seeds would resolve 4 times in 5, and the seeds that would resolve the
difference observed.

A family of contrasts is corrected by Holm's step-down method: a contrast is resolved when its
Holm-adjusted p-value is below alpha. The interval printed beside it is each contrast's own 95%
interval. Arms that share no seed fall back to Welch's test over per-seed finals, and say so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from analysis.ablation import arm_label, arms, per_prompt_results, per_run, swept
from analysis.load import load_sweep
from harness.store import FINAL_STAGE

ALPHA = 0.05
FLOAT_NOISE = 1e-20  # a mean's variance below this is rounding, not spread
POWER = 0.8  # the planning convention: a true effect of that size resolved 4 times in 5


@dataclass(frozen=True)
class Spread:
    """A (seeds, prompts) array's mean and the two parts of its error, for a crossed design: every seed
    sees the same prompts, so the mean's error is the seeds' (the spread of the seeds' means, each
    with its own prompt noise) plus the prompts' shared offset (the spread of the prompts' means less
    what the seed x prompt noise puts there: its moment estimate, floored at 0)."""

    mean: float
    seed_var: float  # the variance of one seed's mean (0 with one seed: unknown)
    prompt_part: float  # the held-out prompts' share of the mean's variance, whatever the seeds
    seeds: int
    prompts: int

    @classmethod
    def of(cls, values) -> "Spread":
        values = np.atleast_2d(np.asarray(values, dtype=float))
        n_seeds, n_prompts = values.shape
        prompt_spread = values.mean(0).var(ddof=1) if n_prompts > 1 else 0.0
        if n_seeds > 1 and n_prompts > 1:  # the seed x prompt noise's share of the prompts' spread
            residual = values - values.mean(1, keepdims=True) - values.mean(0, keepdims=True) + values.mean()
            noise = (residual ** 2).sum() / ((n_seeds - 1) * (n_prompts - 1))
            prompt_spread = max(0.0, prompt_spread - noise / n_seeds)
        seed_var = values.mean(1).var(ddof=1) if n_seeds > 1 else 0.0
        return cls(float(values.mean()), seed_var, prompt_spread / n_prompts, n_seeds, n_prompts)

    def variance(self, seeds: int | None = None) -> float:
        """The mean's variance at `seeds` seeds (default: as measured)."""
        return self.seed_var / (seeds or self.seeds) + self.prompt_part

    def dof(self, seeds: int | None = None) -> float:
        """The seeds' degrees of freedom: a contrast on 3 seeds is a paired t-test on 3 seeds, widened
        by the prompts' share, never narrowed by lending it their degrees of freedom (Welch-
        Satterthwaite's resolved up to 6.4% of simulated null contrasts at 3 seeds). One seed:
        the prompts'."""
        seeds = seeds or self.seeds
        return seeds - 1 if seeds > 1 else self.prompts - 1 if self.prompts > 1 else math.inf

    def detectable(self, seeds: int | None = None, alpha: float = ALPHA, power: float = POWER) -> float:
        """The smallest true difference that `seeds` seeds resolve (two-sided, at alpha) with probability
        `power`, if the seeds and prompts spread as measured."""
        dof = self.dof(seeds)
        return (stats.t.ppf(1 - alpha / 2, dof) + stats.t.ppf(power, dof)) * math.sqrt(self.variance(seeds))

    def seeds_to_resolve(self, effect: float, most: int = 1000) -> float:
        """The fewest seeds that resolve `effect` with probability POWER (detectable falls as seeds grow:
        a bisection); inf when even `most` would not (the prompts' share alone is too wide: more held-out
        prompts, not seeds). A planning number: the spread it assumes is measured on few seeds."""
        if abs(effect) == 0 or self.detectable(most) > abs(effect):
            return math.inf
        low, high = 1, most  # detectable(low) > |effect| >= detectable(high); 1 seed resolves nothing
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if self.detectable(middle) <= abs(effect) else (middle, high)
        return high


def paired(before, after, confidence: float = 0.95, power: bool = True) -> dict:
    """`after` - `before`, both (seeds, prompts) arrays in the same seed and prompt order: see
    `paired_difference`."""
    diff = np.atleast_2d(np.asarray(after, dtype=float)) - np.atleast_2d(np.asarray(before, dtype=float))
    return paired_difference(diff, confidence, power)


def paired_difference(diff, confidence: float = 0.95, power: bool = True) -> dict:
    """A (seeds, prompts) array of paired differences: their mean, its interval, the two-sided
    p-value, each seed's mean difference, the smallest difference these seeds would resolve with 80%
    power, and the seeds that would resolve the one observed (`power=False`: not computed, for
    simulations of thousands of sweeps)."""
    diff = np.atleast_2d(np.asarray(diff, dtype=float))
    spread = Spread.of(diff)
    variance, dof = spread.variance(), spread.dof()
    measurable = power and variance > FLOAT_NOISE and spread.seeds > 1  # one seed: the prompts' error alone
    if variance <= FLOAT_NOISE:  # every difference equal (often all 0), to float rounding: no spread to measure
        low = high = p = math.nan
    else:
        half = stats.t.ppf((1 + confidence) / 2, dof) * math.sqrt(variance)
        low, high = spread.mean - half, spread.mean + half
        p = float(2 * stats.t.sf(abs(spread.mean) / math.sqrt(variance), dof))
    return {"difference": spread.mean, "low": low, "high": high, "p": p, "seeds": spread.seeds,
            "per_seed": [round(float(d), 4) for d in diff.mean(1)],
            "detectable_80": spread.detectable() if measurable else math.nan,
            "seeds_to_resolve": spread.seeds_to_resolve(spread.mean) if measurable else math.nan}


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


def run_differences(before: pd.DataFrame, after: pd.DataFrame, before_column: str = "final",
                    after_column: str = "final") -> np.ndarray:
    """`after` - `before` over runs matched row by row (one seed each), per prompt where both have them."""
    a, b = per_prompt_results(before, before_column), per_prompt_results(after, after_column)
    if a.shape != b.shape:  # prompts logged on one side only: the runs' values alone
        a, b = before[before_column].to_numpy(dtype=float)[:, None], after[after_column].to_numpy(dtype=float)[:, None]
    return b - a


def shared_seeds(base: pd.DataFrame, other: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Both arms' runs on the seeds both finished, in one order; None when they share fewer than two
    (of more): then only an unpaired test applies."""
    base, other = base.drop_duplicates("seed").set_index("seed"), other.drop_duplicates("seed").set_index("seed")
    shared = sorted(set(base.index) & set(other.index))
    if len(shared) > 1 or (len(shared) == 1 and len(base) == len(other) == 1):  # one of several: Welch says more
        return base.loc[shared], other.loc[shared]
    return None


def arm_contrast(base: pd.DataFrame, other: pd.DataFrame, column: str = "final", confidence: float = 0.95) -> dict:
    """`other` - `base` over the seeds both arms finished (paired), or, when they share fewer than two
    (of more), Welch's test over per-seed means (unpaired)."""
    matched = shared_seeds(base, other)
    if matched is not None:
        return {**paired_difference(run_differences(*matched, column, column), confidence), "paired": True}
    base, other = base.drop_duplicates("seed"), other.drop_duplicates("seed")
    a, b = base[column].to_numpy(dtype=float), other[column].to_numpy(dtype=float)
    welch = stats.ttest_ind(b, a, equal_var=False) if min(len(a), len(b)) > 1 else None
    low, high = welch.confidence_interval(confidence) if welch is not None else (math.nan, math.nan)
    return {"difference": b.mean() - a.mean(), "low": low, "high": high,
            "p": welch.pvalue if welch is not None else math.nan, "seeds": min(len(a), len(b)),
            "per_seed": [], "detectable_80": math.nan, "seeds_to_resolve": math.nan, "paired": False}


def arm_pairs(table: pd.DataFrame, by: str, values: list, others: list[str] = (), adjacent: bool = True):
    """(the `others` keys' values, "b - a", arm a's runs, arm b's runs) for each contrast of one swept key
    within each combination of the others: every value against the first (the baseline), and, with
    `adjacent`, each value against the one before it (an ordered key, a cumulative ablation), once."""
    pairs = [(values[0], v) for v in values[1:]]
    if adjacent:
        pairs += [(a, b) for a, b in zip(values[1:], values[2:])]
    others = list(others)
    for fixed, part in (table.groupby(others, observed=True) if others else [((), table)]):
        fixed = dict(zip(others, fixed if isinstance(fixed, tuple) else (fixed,)))
        for a, b in pairs:
            arm_a, arm_b = part[part[by] == a], part[part[by] == b]
            if len(arm_a) and len(arm_b):
                yield fixed, f"{arm_label(b)} - {arm_label(a)}", arm_a, arm_b


def arm_contrasts(table: pd.DataFrame, by: str, values: list, others: list[str] = (),
                  column: str = "final", adjacent: bool = True, confidence: float = 0.95) -> pd.DataFrame:
    """`arm_pairs`' contrasts, Holm-corrected over the family."""
    rows = [{**fixed, "contrast": label, **arm_contrast(a, b, column, confidence)}
            for fixed, label, a, b in arm_pairs(table, by, values, others, adjacent)]
    return verdicts(pd.DataFrame(rows, columns=[*others, "contrast", "difference", "low", "high", "p", "seeds",
                                                "per_seed", "detectable_80", "seeds_to_resolve", "paired"]))


def label(fixed: dict, contrast: str) -> str:
    """A contrast named apart from its twins under the other keys' values: "grpo.beta=0.1: proxy - gold"."""
    where = ", ".join(f"{k}={arm_label(v)}" for k, v in fixed.items())
    return f"{where}: {contrast}" if where else contrast


def sweep_contrasts(table: pd.DataFrame, keys: list[str], confidence: float = 0.95) -> pd.DataFrame:
    """Every swept key's contrasts, each labelled by `label`. Their `p_holm` and `verdict` are each
    key's family's (arm_contrasts); sweeps.resolve tests the rows it keeps as one family."""
    parts = []
    for key in keys:
        others = [k for k in keys if k != key]
        part = arm_contrasts(table, key, arms(table[key]), others, confidence=confidence)
        parts.append(part.assign(contrast=[label(dict(row[others]), row.contrast) for _, row in part.iterrows()]))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["contrast", "p", "seeds"])


def sweep_finals(sweep_dir) -> tuple[pd.DataFrame, list[str]]:
    """A sweep's finished GRPO runs with their final held-out results (per prompt where logged), and
    the keys it swept."""
    sweep = load_sweep(sweep_dir)
    return per_run(sweep.runs, sweep.history, stage=FINAL_STAGE), swept(sweep.runs)


def describe(contrasts: pd.DataFrame) -> str:
    """What a contrast table's columns mean, for a report."""
    unpaired = "" if contrasts.paired.all() else (" Rows with paired = False compare arms that share no seed: "
                                                  "Welch's test over per-seed finals, held-out prompts left out.")
    return ("Paired by seed (one seed: the same held-out prompts and, for arms that differ after it, the same "
            "start): the mean difference, its 95% interval over seeds and held-out prompts, each seed's "
            f"difference, and a verdict at alpha {ALPHA} after Holm's correction over this table's "
            f"{len(contrasts)} contrast{'' if len(contrasts) == 1 else 's'} (p_holm). Power at alpha {ALPHA} "
            f"(uncorrected): `detectable_80` is the smallest difference these seeds would resolve with {POWER:.0%} "
            "probability, `seeds_to_resolve` the seeds that would resolve the difference observed (inf: not seeds "
            f"but more held-out prompts).{unpaired}\n")
