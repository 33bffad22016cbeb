"""Live groups: K samples at pass rate p carry gradient only when they hold both a success and a
failure, which happens with probability P_live(p, K) = 1 - p^K - (1 - p)^K.

The theory curves for a sweep's Ks, the fractions its runs measured laid over them with their
binomial intervals, the mixture over prompts of mixed difficulty (E_i[P_live(p_i, K)], from the
held-out prompts' spread), and the inverse question: which K keeps a fraction f of groups alive at p.
"""

from __future__ import annotations

import functools
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from analysis.load import has_per_prompt
from harness.stages import default_graph
from harness.theory import live_probability
from harness.store import GOLD, PER_PROMPT

PASS_RATE = "reward"  # the batch's mean training reward: its pass rate when that reward is binary
LIVE = "live_group_frac"


def num_generations_for(live_fraction: float, pass_rate: float) -> int:
    """The smallest K (>= 2) whose groups are live with probability at least `live_fraction` at
    `pass_rate`. P_live grows with K (by p^K (1-p) + (1-p)^K p each step) towards 1."""
    if not 0 < pass_rate < 1:
        raise ValueError(f"pass_rate={pass_rate}: must be strictly between 0 and 1 (at 0 or 1 no group is live)")
    if not 0 < live_fraction < 1:
        raise ValueError(f"live_fraction={live_fraction}: must be strictly between 0 and 1")
    high = 2
    while live_probability(pass_rate, high) < live_fraction:
        high *= 2
    ks = np.arange(2, high + 1)
    return int(ks[np.searchsorted(live_probability(pass_rate, ks), live_fraction)])


def prompt_concentration(successes, samples: int) -> float:
    """How alike the prompts are in difficulty: their pass rates taken as Beta(a, b), fitted by maximum
    likelihood to each held-out prompt's `successes` out of `samples` (a beta-binomial: a few samples
    per prompt cannot give each p_i, but they give the spread of p; two barely do, one does not: NaN),
    and a + b returned (large: every prompt near the mean; small: prompts near 0 or 1). inf where every
    prompt always failed or always passed (no spread to fit)."""
    return _concentration(tuple(int(k) for k in np.asarray(successes)), samples)


@functools.lru_cache(maxsize=4096)  # a report's figures and a notebook's cells fit the same evaluations again
def _concentration(successes: tuple[int, ...], samples: int) -> float:
    successes = np.asarray(successes)
    if samples < 2:  # one sample per prompt gives the mean pass rate only, not its spread
        return math.nan
    if (successes == 0).all() or (successes == samples).all():
        return math.inf
    fit = stats.fit(stats.betabinom, successes, bounds={"n": (samples, samples), "a": (1e-3, 1e3), "b": (1e-3, 1e3)},
                    optimizer=_seeded)
    return float(fit.params.a + fit.params.b)


def mixture_live_probability(pass_rate, concentration: float, num_generations: int):
    """E_i[P_live(p_i, K)] over prompts whose pass rates are Beta with mean `pass_rate` and a + b =
    `concentration` (`prompt_concentration`): E[p^K] = B(a + K, b) / B(a, b). P_live at the mean p is an
    upper bound (P_live is concave in p); an infinite concentration gives it back."""
    p = np.clip(np.asarray(pass_rate, dtype=float), 1e-12, 1 - 1e-12)
    if math.isinf(concentration):
        return live_probability(p, num_generations)
    a, b, K = p * concentration, (1 - p) * concentration, num_generations
    whole = special.betaln(a, b)
    return 1 - np.exp(special.betaln(a + K, b) - whole) - np.exp(special.betaln(a, b + K) - whole)


def _seeded(fun, bounds, *, integrality):
    """scipy.stats.fit's own optimizer, seeded: the same results give the same fit."""
    return optimize.differential_evolution(fun, bounds, integrality=integrality, seed=0)


def binary_reward_stages(runs: pd.DataFrame) -> pd.DataFrame:
    """(run, stage, K, prompts_per_step) of the GRPO stages whose training reward was binary: the
    gold reward with no length penalty (soft_overlong_cache = 0), the case the theory is about. Each
    stage-run's type and config group come from the run's own pipeline.graph (r1's `rl` and `grpo` alike);
    a run logged before the graph was recorded has the default one."""
    rows, default = [], default_graph()
    for row in runs.to_dict("records"):
        spec = default.get(row["stage"])
        kind, group = (_recorded(row, f"pipeline.graph.{row['stage']}.{key}", getattr(spec, key, None))
                       for key in ("type", "config"))
        if kind != "grpo" or not isinstance(group, str):
            continue
        reward = _recorded(row, f"{group}.reward", row.get("task.reward"))  # its group's own (explore), else task's
        K, prompts, overlong = (_recorded(row, f"{group}.{key}", None)
                                for key in ("num_generations", "prompts_per_step", "soft_overlong_cache"))
        if reward == "gold" and overlong == 0 and K is not None and prompts is not None:  # None: logged before
            rows.append({"run": row["run"], "stage": row["stage"], "K": K, "prompts_per_step": prompts})
    return pd.DataFrame(rows, columns=["run", "stage", "K", "prompts_per_step"])


def _recorded(row: dict, key: str, default):
    """A stage-run's config value, or `default` where its run did not record the key (NaN or NA in a frame of
    runs that did)."""
    value = row.get(key, default)
    return default if pd.api.types.is_scalar(value) and pd.isna(value) else value


def measured_live_points(runs: pd.DataFrame, history: pd.DataFrame, bins: int = 10,
                         confidence: float = 0.95) -> pd.DataFrame:
    """The live fraction the runs measured, pooled by K and by pass-rate bin, with Wilson intervals.

    Only stages trained on a binary reward count (binary_reward_stages), and the pass rate is
    that of the training reward, which is what decides whether a group is live. One row per
    (K, bin): pass_rate (mean over the steps in it), live, groups, live_frac, low, high, theory (at
    the mean p), theory_mixture (each step's p spread over prompts as the run's latest held-out
    evaluation found them, `step_concentrations`; NaN where no evaluation logged per-prompt results).
    """
    steps = history.merge(binary_reward_stages(runs), on=["run", "stage"]).dropna(subset=[PASS_RATE, LIVE])
    if steps.empty:
        return pd.DataFrame(columns=["K", "pass_rate", "live", "groups", "live_frac", "low", "high", "theory",
                                     "theory_mixture"])
    steps = step_concentrations(live_counts(steps), runs, history)
    steps = steps.assign(bin=pd.cut(steps[PASS_RATE], np.linspace(0, 1, bins + 1), include_lowest=True),
                         mixture=[float(mixture_live_probability(p, c, K)) if not math.isnan(c) else math.nan
                                  for p, c, K in zip(steps[PASS_RATE], steps.concentration, steps.K)])
    rows = []
    for (K, _), part in steps.groupby(["K", "bin"], observed=True):
        weights = part.groups.where(part.mixture.notna(), 0)
        mixture = float(np.average(part.mixture.fillna(0), weights=weights)) if weights.sum() else math.nan
        rows.append({"K": K, **pooled(part, confidence), "theory_mixture": mixture})
    return pd.DataFrame(rows)


def eval_concentrations(runs: pd.DataFrame, history: pd.DataFrame, metric: str = GOLD) -> pd.DataFrame:
    """(run, stage, step, concentration): `prompt_concentration` of every held-out evaluation that logged
    its per-prompt results, with the run's eval.num_samples."""
    column = metric + PER_PROMPT
    if column not in history or "eval.num_samples" not in runs:
        return pd.DataFrame(columns=["run", "stage", "step", "concentration"])
    samples = runs.drop_duplicates("run").set_index("run")["eval.num_samples"]
    evals = history[has_per_prompt(history[column])]
    rows = [{"run": run, "stage": stage, "step": step,
             "concentration": prompt_concentration(np.rint(np.asarray(values) * samples[run]).astype(int), int(samples[run]))}
            for run, stage, step, values in zip(evals.run, evals.stage, evals.step, evals[column]) if run in samples]
    return pd.DataFrame(rows, columns=["run", "stage", "step", "concentration"])


def step_concentrations(steps: pd.DataFrame, runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Training `steps` with the concentration of their run's latest held-out evaluation at or before
    each step (the GRPO stage's evaluation at its start for its first steps)."""
    found = eval_concentrations(runs, history).sort_values("step")
    ordered = steps.sort_values("step")
    if found.empty:
        return ordered.assign(concentration=math.nan)
    return pd.merge_asof(ordered, found.astype({"step": ordered.step.dtype}), on="step", by=["run", "stage"])\
        .assign(concentration=lambda f: f.concentration.astype(float))


def live_counts(steps: pd.DataFrame) -> pd.DataFrame:
    """Training steps (merged with binary_reward_stages) with K, `groups` (every group the step sampled;
    prompts_per_step for a run logged before `groups` was) and `live` (how many of them were)."""
    groups = steps["groups"] if "groups" in steps else steps["prompts_per_step"]
    return steps.assign(K=steps["K"].astype(int), groups=groups.astype(int),
                        live=(steps[LIVE] * groups).round().astype(int))


def pooled(steps: pd.DataFrame, confidence: float = 0.95) -> dict:
    """Steps of one K (live_counts) pooled: their pass rate p (weighted by groups), live and groups, the
    live fraction with its Wilson interval, and P_live(p, K)."""
    live, total, K = int(steps.live.sum()), int(steps.groups.sum()), int(steps.K.iloc[0])
    interval = stats.binomtest(live, total).proportion_ci(confidence, method="wilson")
    p = float(np.average(steps[PASS_RATE], weights=steps.groups))
    return {"pass_rate": p, "live": live, "groups": total, "live_frac": live / total, "low": interval.low,
            "high": interval.high, "theory": float(live_probability(p, K))}


def plot_live_groups(ks, points: pd.DataFrame | None = None, ax=None):
    """P_live against p for each K, with measured points (and intervals) in the same colour."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    p = np.linspace(0, 1, 401)
    for i, K in enumerate(sorted(set(int(k) for k in ks))):
        color = f"C{i}"
        ax.plot(p, live_probability(p, K), color=color, label=f"K = {K}: 1 - p^K - (1-p)^K")
        if points is not None and len(points):
            mine = points[points.K == K]
            ax.errorbar(mine.pass_rate, mine.live_frac, yerr=[mine.live_frac - mine.low, mine.high - mine.live_frac],
                        fmt="o", color=color, capsize=3, label=f"K = {K}: measured" if len(mine) else None)
            if "theory_mixture" in mine and mine.theory_mixture.notna().any():
                ax.plot(mine.pass_rate, mine.theory_mixture, "x--", color=color, label=f"K = {K}: prompts' mixture")
    ax.set(xlabel="pass rate p", ylabel="fraction of live groups", ylim=(0, 1.02), xlim=(0, 1),
           title="Live groups: theory and measured (95% Wilson intervals)")
    ax.legend(fontsize="small")
    return ax.figure
