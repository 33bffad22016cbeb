"""Cold start against pure RL: what a few demonstrations buy GRPO.

RL amplifies what the policy already does. A start that almost never succeeds has almost no live
group (a group of K samples at pass rate p carries gradient with probability 1 - p^K - (1-p)^K),
so almost no gradient. A sweep over the cold start's size, from none (GRPO straight on the base,
no SFT stage) up, shows it three ways: the held-out pass rate at GRPO's start and end, the GRPO
steps each size takes to reach a threshold, and the live fraction of GRPO's first steps against
the theory at their training pass rate.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.ablation import one_per_seed, pass_rate_interval, per_run, scale_axis, summarise, swept
from analysis.contrast import arm_contrasts, paired_difference, run_differences, verdicts
from analysis.live import (
    LIVE,
    PASS_RATE,
    binary_reward_stages,
    eval_concentrations,
    live_counts,
    mixture_live_probability,
    pooled,
)
from harness.theory import live_probability
from harness.store import FINAL_STAGE, GOLD, PER_PROMPT

EXAMPLES = "cold_start_examples"  # sft.cold_start_size, or 0 for a run with no SFT stage (pure RL)


def with_examples(runs: pd.DataFrame) -> pd.DataFrame:
    """The GRPO stage-runs, each with its cold start's size in EXAMPLES. A run with no SFT stage counts
    as pure RL from its model.*: a GRPO run branched off an earlier cold start (model.path=<run>/sft/
    checkpoint) is not one, and does not belong in such a sweep."""
    grpo, had_sft = runs[runs.stage == FINAL_STAGE], set(runs.run[runs.stage == "sft"])
    sizes = [int(size) if run in had_sft else 0 for run, size in zip(grpo.run, grpo["sft.cold_start_size"])]
    return grpo.assign(**{EXAMPLES: sizes})


def is_cold_start_sweep(runs: pd.DataFrame) -> bool:
    return "sft.cold_start_size" in runs and with_examples(runs)[EXAMPLES].nunique() > 1


def _start(history: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Each run's evaluation at GRPO's step 0: its start (the cold-started policy, or the base)."""
    rows = history[(history.stage == FINAL_STAGE) & (history.step == 0)].dropna(subset=[metric])
    return rows.drop_duplicates("run", keep="last").set_index("run")


def start_and_end(runs: pd.DataFrame, history: pd.DataFrame, metric: str = GOLD) -> pd.DataFrame:
    """Per finished run: seed, EXAMPLES, `metric` at GRPO's start and at its end (and the per-prompt
    results behind each, where logged)."""
    table = per_run(runs, history, metric, FINAL_STAGE).merge(with_examples(runs)[["run", EXAMPLES]], on="run")
    start = _start(history, metric)
    table["start"] = table.run.map(start[metric])
    per_prompt = metric + PER_PROMPT
    if per_prompt in start:
        table["start_per_prompt"] = table.run.map(start[per_prompt])
    return table.dropna(subset=["start"])


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per cold-start size: pass rate at GRPO's start and end, mean and interval over seeds and prompts."""
    start, end = summarise(table, EXAMPLES, "start"), summarise(table, EXAMPLES, "final")
    return start.merge(end, on=[EXAMPLES, "runs"], suffixes=("_start", "_end"))


def other_keys(table: pd.DataFrame, runs: pd.DataFrame) -> list[str]:
    """The swept keys that vary within a cold-start size (not the ones that name it, as `arm` does):
    their combinations are kept apart, never pooled."""
    keys = [k for k in swept(runs) if k in table]
    return [k for k in keys if table.groupby(EXAMPLES)[k].nunique().max() > 1]


def climbs(table: pd.DataFrame, others: list[str] = ()) -> pd.DataFrame:
    """Per cold-start size (and combination of the `others` keys), what GRPO added to its start:
    end - start, paired within each run (its seed, the same held-out prompts at both evaluations),
    Holm-corrected over the rows."""
    rows = []
    for values, part in table.groupby([*others, EXAMPLES], observed=True):
        part = one_per_seed(part.sort_values("seed"))
        rows.append({**dict(zip([*others, EXAMPLES], values)), "start": part.start.mean(), "end": part.final.mean(),
                     **paired_difference(run_differences(part, part, "start", "final"))})
    return verdicts(pd.DataFrame(rows))


def against_none(table: pd.DataFrame, others: list[str] = ()) -> pd.DataFrame:
    """GRPO's end, each cold-start size against the smallest (none, where the sweep has it) and against
    the size below it, paired by seed, Holm-corrected."""
    return arm_contrasts(table, EXAMPLES, sorted(table[EXAMPLES].unique()), list(others))


def steps_to_threshold(table: pd.DataFrame, history: pd.DataFrame, threshold: float,
                       metric: str = GOLD) -> pd.DataFrame:
    """Per cold-start size, of the finished runs in `table` (`start_and_end`'s): how many reached
    `threshold` on the held-out `metric` during GRPO, and the first evaluated step at which each did
    (`>N`: not by its last evaluation, step N). The median counts a run that never reached it as
    later than any that did."""
    evals = history[(history.stage == FINAL_STAGE) & history.run.isin(table.run)].dropna(subset=[metric])
    rows = []
    for examples, part in table.groupby(EXAMPLES):
        steps, labels = [], []
        for run in part.sort_values("seed").run:
            mine = evals[evals.run == run].sort_values("step")
            reached = mine.step[mine[metric] >= threshold]
            steps.append(int(reached.iloc[0]) if len(reached) else math.inf)
            labels.append(str(steps[-1]) if len(reached) else f">{int(mine.step.max())}")
        median = float(np.median(steps))
        rows.append({EXAMPLES: examples, "runs": len(steps), "reached": sum(s < math.inf for s in steps),
                     "median_step": median if median < math.inf else None, "steps_by_seed": ", ".join(labels)})
    return pd.DataFrame(rows)


def live_at_start_points(runs: pd.DataFrame, history: pd.DataFrame, first_steps: int = 5,
                         confidence: float = 0.95) -> pd.DataFrame:
    """Per run trained on a binary reward, its first `first_steps` GRPO steps pooled (live.pooled): the
    training pass rate p that decides whether a group is live, the live fraction (Wilson interval over
    its groups) and P_live(p, K); beside each step's live fraction and the held-out pass rate at GRPO's start."""
    stages = binary_reward_stages(runs)
    stages = stages[stages.stage == FINAL_STAGE].merge(with_examples(runs)[["run", "seed", EXAMPLES]], on="run")
    first = history[(history.stage == FINAL_STAGE) & history.step.between(1, first_steps)]
    first = first.dropna(subset=[LIVE, PASS_RATE])
    steps, start = live_counts(first.merge(stages, on=["run", "stage"])), _start(history, GOLD)
    concentration = eval_concentrations(runs, history[(history.stage == FINAL_STAGE) & (history.step == 0)])
    concentration = concentration.set_index("run").concentration
    rows = []
    for run, mine in steps.groupby("run"):
        measured, K = pooled(mine, confidence), int(mine.K.iloc[0])
        rows.append({"run": run, "seed": mine.seed.iloc[0], EXAMPLES: mine[EXAMPLES].iloc[0], "K": K,
                     "heldout_start": start[GOLD].get(run, math.nan), **measured,
                     "theory_mixture": float(mixture_live_probability(measured["pass_rate"],
                                                                      concentration.get(run, math.nan), K)),
                     "per_step": (mine.live / mine.groups).tolist()})
    return pd.DataFrame(rows, columns=["run", "seed", EXAMPLES, "K", "heldout_start", "pass_rate", "live", "groups",
                                       "live_frac", "low", "high", "theory", "theory_mixture", "per_step"])


def live_at_start(points: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per cold-start size and K: the live fraction of GRPO's first steps, its mean over seeds with an
    interval over seeds and steps (ablation.pass_rate_interval), beside the theory at each seed's
    training pass rate (its mean, min and max over the seeds). With prompts of mixed difficulty the
    theory at the mean pass rate is an upper bound (P_live is concave in p): `theory_mixture` is
    E_i[P_live(p_i, K)] over the held-out prompts' pass rates at GRPO's start (mean over seeds)."""
    rows = []
    for (examples, K), part in points.groupby([EXAMPLES, "K"]):
        per_step = part.per_step.tolist()
        low, high = pass_rate_interval(per_step if len({len(s) for s in per_step}) == 1 else part.live_frac.tolist(),
                                       confidence)
        rows.append({EXAMPLES: examples, "K": K, "runs": len(part), "heldout_start": part.heldout_start.mean(),
                     "pass_rate": part.pass_rate.mean(), "live_frac": part.live_frac.mean(), "low": low, "high": high,
                     "theory": part.theory.mean(), "theory_min": part.theory.min(), "theory_max": part.theory.max(),
                     "theory_mixture": part.theory_mixture.mean()})
    return pd.DataFrame(rows)


def plot_start_and_end(table: pd.DataFrame, metric: str = GOLD, ax=None):
    """Held-out pass rate at GRPO's start and end against the cold start's size (0: none)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    both = summary(table)
    for when, marker in (("start", "o--"), ("end", "o-")):
        mean = both[f"mean_{when}"]
        ax.errorbar(both[EXAMPLES], mean, capsize=3, fmt=marker, label=f"GRPO's {when}",
                    yerr=[mean - both[f"low_{when}"], both[f"high_{when}"] - mean])
    scale_axis(ax, both[EXAMPLES])
    ax.set(xlabel="cold start examples (0: GRPO straight on the base)", ylabel=metric,
           title="Cold start: held-out pass rate at GRPO's start and end")
    ax.legend(fontsize="small")
    return ax.figure


def plot_live_at_start(points: pd.DataFrame, ax=None):
    """Each run's live fraction over GRPO's first steps against its training pass rate, coloured by
    cold-start size, on the theory curve of each K."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    p = np.linspace(0, 1, 2001)
    for K, style in zip(sorted(points.K.unique()), ["-", "--", ":", "-."] * 4):
        ax.plot(p, live_probability(p, K), color="grey", linestyle=style, label=f"1 - p^K - (1-p)^K, K = {K}")
    for i, (examples, part) in enumerate(points.groupby(EXAMPLES)):
        ax.errorbar(part.pass_rate, part.live_frac, yerr=[part.live_frac - part.low, part.high - part.live_frac],
                    fmt="o", color=f"C{i}", capsize=3, label=f"{examples} examples" if examples else "none (pure RL)")
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set(xlabel="training pass rate p over GRPO's first steps", ylabel="fraction of live groups", xlim=(0, 1),
           ylim=(0, 1.02), title="Live groups at GRPO's start: one point per run (95% Wilson intervals)")
    ax.legend(fontsize="small")
    return ax.figure
