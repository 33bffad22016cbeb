"""Seeds until resolved: looks at a sweep's contrasts as seeds are added, valid under optional stopping.

Testing at the full alpha after every batch of seeds and stopping at the first resolved contrast
resolves a null contrast far more often than alpha: each look is another chance (about 10% with four
looks, tests/test_sequential.py). So the plan is fixed before the first look (the most seeds, the
batch, a spending function f) and is a group-sequential design (Lan & DeMets 1983): by the look at
information fraction t = seeds / max_seeds, the chance of having resolved a null contrast is f(t),
and f(1) = alpha. Each look's nominal level (the p-value a contrast must beat there) comes from the
looks' joint law under no effect, the canonical one of a mean over seeds (Jennison & Turnbull 2000,
ch. 7) with each look's test a t-test on its seeds, found by simulating it with a fixed seed; the look's interval is the repeated confidence
interval at that level, which covers at every look at once with probability 1 - alpha. Several
contrasts: Holm's step-down with each hypothesis's boundaries recomputed at its local alpha (alpha/m,
alpha/(m - 1), ...), the group-sequential Holm of Maurer & Bretz 2013. A contrast resolved stays
resolved; the sweep stops adding seeds once none is open.

The held-out prompts are the same at every seed (eval.seed), which makes the looks more alike than the
canonical law assumes: that only makes the design conservative. Their part of the error does not
shrink as seeds are added, so a contrast the prompts hide stays open to the last look (more held-out
prompts, not seeds, would resolve it: analysis.power says which). The first look should be planned
before its verdicts are read: starting to add seeds because a fixed-sample report looked close is a
look the design does not count.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats

from analysis.contrast import ALPHA

DEFAULT_SPENDING = "obrien_fleming"
PLAN_FILE = "resolve.json"  # in the sweep's directory: the plan, the original command, the verdicts
PATHS = 400_000  # simulated looks under no effect: a nominal level of 0.001 to within about 5%
SPENDING = {  # alpha spent by information fraction t in [0, 1]
    # Pocock-like: spends early, where a seed costs the most to add
    "pocock": lambda t, alpha: alpha * math.log(1 + (math.e - 1) * t),
    # O'Brien-Fleming-like: almost nothing early, nearly all of alpha at the last look
    "obrien_fleming": lambda t, alpha: 2 - 2 * stats.norm.cdf(stats.norm.ppf(1 - alpha / 2) / math.sqrt(t)),
}


@dataclass(frozen=True)
class Plan:
    """Fixed before the first look: changing it afterwards voids the guarantee."""

    first_seeds: int  # the seeds of the sweep when the plan was made: the first look
    max_seeds: int
    batch: int
    alpha: float = ALPHA
    spending: str = DEFAULT_SPENDING
    contrasts: tuple[str, ...] = ()  # the family, named at the first call (empty: every contrast)

    def __post_init__(self):
        if self.spending not in SPENDING:
            raise ValueError(f"spending={self.spending!r}: choose one of {', '.join(SPENDING)}")
        if not 2 <= self.first_seeds <= self.max_seeds or self.batch < 1:
            raise ValueError(f"seeds: first {self.first_seeds}, most {self.max_seeds}, batch {self.batch}: "
                             "need 2 <= first <= most and a batch of at least 1")

    def looks(self) -> list[int]:
        """The seed counts at which the plan looks."""
        return [*range(self.first_seeds, self.max_seeds, self.batch), self.max_seeds]

    def spent(self, seeds: int, alpha: float | None = None) -> float:
        """Alpha spent by the look at `seeds` seeds."""
        return SPENDING[self.spending](min(1.0, seeds / self.max_seeds), alpha or self.alpha)

    def nominal(self, look: int, alpha: float | None = None) -> float:
        """The two-sided p-value a contrast must beat at the look-th look (0-based), for a family
        alpha of `alpha` (default the plan's)."""
        looks = tuple(self.looks())
        return nominal_levels(looks, tuple(self.spent(n, alpha) for n in looks))[look]

    def to_dict(self) -> dict:
        return {**asdict(self), "contrasts": list(self.contrasts)}


@functools.lru_cache(maxsize=256)
def nominal_levels(looks: tuple[int, ...], spent: tuple[float, ...]) -> tuple[float, ...]:
    """Each look's nominal two-sided level such that, under no effect, the chance of a first crossing
    by look k is spent[k]. The looks' tests simulated as what they are on the seeds: a one-sample t-test
    on the first n_k of a run of independent seeds' normal differences, n_k - 1 degrees of freedom (its
    estimated spread is shared between looks too, which the z's canonical law leaves out: that law let
    5.7% of simulated null sweeps resolve). A fixed seed, so every call agrees."""
    seeds = np.asarray(looks)
    draws = np.random.default_rng(0).standard_normal((PATHS, seeds[-1]))
    sums, squares = np.cumsum(draws, axis=1)[:, seeds - 1], np.cumsum(draws ** 2, axis=1)[:, seeds - 1]
    variance = np.maximum(squares - sums ** 2 / seeds, 1e-300) / (seeds - 1)
    p = 2 * stats.t.sf(np.abs(sums / seeds) / np.sqrt(variance / seeds), seeds - 1)
    alive, levels = np.ones(PATHS, dtype=bool), []
    for k, cumulative in enumerate(spent):
        if k == 0:  # one look is one t-test: exact
            level = cumulative
        else:
            crossing = int(round(cumulative * PATHS)) - int((~alive).sum())  # first crossings this look may add
            level = float(np.sort(p[alive, k])[crossing - 1]) if crossing > 0 else 0.0
        alive &= p[:, k] > level
        levels.append(float(level))
    return tuple(levels)


def step_down(p_values: pd.Series, plan: Plan, look: int, family: int) -> tuple[pd.Series, pd.Series]:
    """Holm's step-down at one look over the contrasts not yet resolved (`family` of them: one with no
    p-value this look still counts, its alpha is not passed on): the smallest p-value against the
    look's level for alpha/m, the next against alpha/(m - 1), ..., stopping at the first that fails.
    Returns which resolved, and the level each was held to."""
    tested = p_values.dropna().sort_values()
    resolved = pd.Series(False, index=p_values.index)
    held_to = pd.Series(plan.nominal(look, plan.alpha / family), index=p_values.index)
    for j, (name, p) in enumerate(tested.items()):
        held_to[name] = plan.nominal(look, plan.alpha / (family - j))
        if p > held_to[name]:
            break
        resolved[name] = True
    return resolved, held_to


def sequential(plan: Plan, contrasts_at: Callable[[int, float], pd.DataFrame],
               add_seeds: Callable[[int], None] = lambda seeds: None, stop_at: int | None = None) -> pd.DataFrame:
    """Look at each of the plan's seed counts in turn: `add_seeds(seeds)` brings the sweep to that
    many seeds, `contrasts_at(seeds, confidence)` gives the contrasts on them (a `contrast` label,
    `p`, `seeds`, the interval at that confidence). Stops once every contrast is resolved, or at the
    last look, or at look `stop_at` (1-based: the looks after it forgone, which costs power and never
    the error rate). Returns each contrast's row at the look that settled it, with `look` (1-based),
    `level` (the nominal level at the family's alpha: the interval's), `holm_level` (the level its
    p-value was held to), `seeds_added_to` and a `verdict`."""
    settled, looks = {}, plan.looks()[:stop_at]
    for look, seeds in enumerate(looks):
        if look:
            add_seeds(seeds)
        level, last = plan.nominal(look, plan.alpha), look == len(looks) - 1
        rows = contrasts_at(seeds, 1 - level).set_index("contrast", drop=False)
        open_rows = rows[~rows.index.isin(list(settled))]
        one_seed = open_rows.seeds < 2  # the held-out prompts' error alone: no verdict (contrast.verdicts)
        resolved, held_to = step_down(open_rows.p.astype(float).where(~one_seed), plan, look, len(open_rows))
        for name, row in open_rows[resolved | last].iterrows():
            verdict = ("resolved" if resolved[name] else "one seed: none" if one_seed[name]
                       else "not resolved" if not math.isnan(row.p) else "no spread")
            settled[name] = {**row.to_dict(), "verdict": verdict, "look": look + 1, "level": level,
                             "holm_level": held_to[name], "seeds_added_to": seeds}
        if len(settled) == len(rows):
            break
    return pd.DataFrame(list(settled.values()))


def describe(result: pd.DataFrame, plan: Plan, stopped_at: int | None = None) -> str:
    """The sequential verdicts as Markdown: what each contrast took, and how to read the table."""
    if result.empty:
        return "## Seeds until resolved\n\nNo contrast: no two arms share a finished seed.\n"
    shown = result[["contrast", "difference", "low", "high", "p", "holm_level", "level", "seeds", "seeds_added_to",
                    "look", "per_seed", "verdict"]]
    return (f"## Seeds until resolved\n\nA group-sequential plan fixed at the first look: {plan.first_seeds} "
            f"seeds, then {plan.batch} more per look up to {plan.max_seeds} (looks at {plan.looks()}), alpha "
            f"{plan.alpha} spent by {plan.spending.replace('_', '-')}'s function over the contrasts "
            f"{', '.join(plan.contrasts) if plan.contrasts else 'of every swept key'}. Each contrast's row is "
            "the look that settled it: resolved there (Holm's step-down against the look's nominal levels: "
            "`holm_level` is the one its p-value was held to), or not resolved at the last look. The interval "
            "is at 1 - `level` (the nominal level for the family's alpha): a repeated confidence interval for "
            "that contrast, valid however many looks were taken. `seeds` are those finished in both arms; "
            "`seeds_added_to` the seeds the sweep had then. The fixed-sample contrasts elsewhere in the report "
            "ignore the looks: where they disagree, these hold."
            + (f" **The plan was stopped at look {stopped_at} of {len(plan.looks())}** (sweeps.resolve --stop): the "
               "looks after it were not taken, so a contrast not resolved there is not resolved at this budget, and "
               "the verdicts keep their error rate." if stopped_at else "") + "\n\n"
            + shown.to_markdown(index=False, floatfmt=".4g") + "\n")


def section(sweep_dir) -> list[str]:
    """The report's section for a sweep that sweeps.resolve grew, else none."""
    path = Path(sweep_dir) / PLAN_FILE
    if not path.exists():
        return []
    kept = json.loads(path.read_text())
    if "result" not in kept:
        return ["## Seeds until resolved\n\nsweeps.resolve was started on this sweep and has not finished a look.\n"]
    return [describe(pd.DataFrame(kept["result"]), Plan(**kept["plan"]), kept.get("stopped_at"))]
