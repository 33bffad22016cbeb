"""What a swept setting did: final and best held-out metrics against each swept value (mean and an
interval over seeds and held-out prompts), learning curves coloured by value."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import special, stats

from analysis.load import config_columns
from harness.stages import STAGE_ORDER
from harness.resume import FREE_ON_RESUME
from harness.store import FINAL_STAGE, GOLD, PER_PROMPT

# Seeds are replicates; names differ by name only; a value free on resume changes no number.
NOT_SWEPT = ("seed", "run_name", *FREE_ON_RESUME)
COST_RATIO = 1.2  # arms whose costs differ by less are of equal cost: the contrast at equal steps stands
NULL = "null"  # the label of a value that is null or missing (grpo.epsilon_high: null), as the YAML says it


def _is_missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and math.isnan(value))


def arm_label(value) -> str:
    if _is_missing(value):
        return NULL
    whole = isinstance(value, (float, np.floating)) and float(value).is_integer()
    return str(int(value)) if whole else str(value)  # 4, as written, not 4.0 (a NaN beside it made it a float)


def swept(runs: pd.DataFrame) -> list[str]:
    """The config keys whose values differ between the sweep's runs (seeds excluded); null is a value.
    Where runs name their arm (an ablation preset's `arm`), it stands for the keys each arm sets."""
    keys = [c for c in config_columns(runs) if c not in NOT_SWEPT and not c.startswith(("trial.", "tracking."))]
    keys = [c for c in keys if runs[c].map(arm_label).nunique() > 1]
    if "arm" in keys:
        labelled = runs.assign(**{k: runs[k].map(arm_label) for k in keys})
        keys = [k for k in keys if k == "arm" or labelled.groupby("arm")[k].nunique().max() > 1]
    return keys


def with_null_arms(frame: pd.DataFrame) -> pd.DataFrame:
    """Config columns holding a null value become ordered categories, the values' own order then
    `null`: a null arm is its own arm, never dropped by a groupby nor pooled with another value."""
    frame = frame.copy()
    for key in config_columns(frame):
        values = frame[key]
        if values.map(_is_missing).any():
            present = {arm_label(v): v for v in values if not _is_missing(v)}  # lists too: labels are hashable
            order = sorted(present, key=lambda label: _sort_key(present[label]))
            frame[key] = pd.Categorical(values.map(arm_label), categories=[*order, NULL], ordered=True)
    return frame


def _sort_key(value) -> tuple:
    """Numbers in their order, then anything else by its text."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (0, value, "") if number else (1, 0, str(value))


def arms(values: pd.Series) -> list:
    """A swept key's values in plotting order (a null arm last)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return [c for c in values.cat.categories if (values == c).any()]
    return sorted(values.unique())


def stage_config(runs: pd.DataFrame, stage: str = FINAL_STAGE) -> pd.DataFrame:
    """Each run's config for `stage` (run and the config columns), a null value as its own arm."""
    return with_null_arms(runs.loc[runs.stage == stage, ["run", *config_columns(runs)]])


def per_run(runs: pd.DataFrame, history: pd.DataFrame, metric: str = GOLD, stage: str = FINAL_STAGE) -> pd.DataFrame:
    """One row per finished run: the stage's final and best value of `metric` (and, where the run
    logged them, the per-prompt results behind each: final_per_prompt, best_per_prompt), beside the
    run's config. A pruned, failed or unfinished run has no final value: see `unfinished`."""
    evals = history[(history.stage == stage) & history.run.isin(finished_runs(runs, stage))]
    evals = evals.dropna(subset=[metric]).sort_values("step", kind="stable")
    rows = []
    for run, part in evals.groupby("run"):
        final, best = part.iloc[-1], part.loc[part[metric].idxmax()]
        rows.append({"run": run, "final": final[metric], "best": best[metric],
                     "final_per_prompt": final.get(metric + PER_PROMPT),
                     "best_per_prompt": best.get(metric + PER_PROMPT)})
    values = pd.DataFrame(rows, columns=["run", "final", "best", "final_per_prompt", "best_per_prompt"])
    return values.merge(stage_config(runs, stage), on="run")


def finished_runs(runs: pd.DataFrame, stage: str = FINAL_STAGE) -> set[str]:
    return set(runs.run[(runs.stage == stage) & (runs.status == "finished")])


def stage_rank(stage: str, status: str, run_stages) -> tuple[bool, float]:
    """Where a stage comes in its run: a stage that did not finish is the one that stopped it; among
    finished ones, its place in the run's pipeline.stages (a reward model just before the stage after
    it), else in the default recipe's order."""
    if isinstance(run_stages, list) and stage in run_stages:
        return status != "finished", run_stages.index(stage)
    if isinstance(run_stages, list) and stage == "reward_model":  # implied, right after the cold start it samples
        return status != "finished", run_stages.index("sft") + 0.5 if "sft" in run_stages else -0.5
    return status != "finished", STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER)


def unfinished(runs: pd.DataFrame, history: pd.DataFrame, metric: str = GOLD, stage: str = FINAL_STAGE) -> pd.DataFrame:
    """The runs left out of per_run: each one's furthest stage (`stage` itself when it began, else
    the stage that stopped it) with its status, and the last step at which `metric` was evaluated
    there and its value, beside their swept settings."""
    left = runs[~runs.run.isin(finished_runs(runs, stage))]
    stages = left["pipeline.stages"] if "pipeline.stages" in left else [None] * len(left)
    furthest = left.assign(order=[stage_rank(stage, status, run_stages)
                                  for stage, status, run_stages in zip(left.stage, left.status, stages)])
    furthest = furthest.sort_values("order", kind="stable").groupby("run").tail(1)
    evals = history.merge(furthest[["run", "stage"]], on=["run", "stage"]).dropna(subset=[metric])
    last = evals.sort_values("step").groupby("run").last()[["step", metric]].reset_index()
    keys = [k for k in swept(runs) if k in left]
    table = furthest[["run", "stage", "status", *keys]].merge(last, on="run", how="left")
    return with_null_arms(table).sort_values("run", ignore_index=True)


def pass_rate_interval(per_seed: list, confidence: float = 0.95) -> tuple[float, float]:
    """An interval for a mean pass rate over seeds, from each seed's per-prompt results (one list
    per seed, the same held-out prompts in the same order) or its mean alone. Its standard error
    has two parts: the spread between seeds, and the sampling of the held-out prompts that every
    seed shares; the t-quantile takes Welch-Satterthwaite's degrees of freedom (seeds - 1 when
    seeds dominate, so 3 seeds are not taken for 30). It is built on the logit scale, so it stays
    inside [0, 1] however few the seeds and however near 0 or 1 the rate. A rate measured at
    exactly 0 (or 1) gets that bound as its own: nothing was seen on that side of it."""
    values = np.asarray([np.atleast_1d(np.asarray(v, dtype=float)) for v in per_seed])  # (seeds, prompts)
    n_seeds, n_prompts = values.shape
    seed_var = values.mean(1).var(ddof=1) / n_seeds if n_seeds > 1 else 0.0
    prompt_var = values.mean(0).var(ddof=1) / n_prompts if n_prompts > 1 else 0.0
    variance = seed_var + prompt_var
    measured = mean = float(values.mean())
    if not 0 < mean < 1:  # a rate of exactly 0 or 1 has no logit: half an observation in
        mean = float(np.clip(mean, 0.5 / values.size, 1 - 0.5 / values.size))
    if variance == 0:  # every result equal: nothing to measure a spread from
        if n_prompts == 1:
            return math.nan, math.nan  # seeds' means alone (or one number): no interval
        variance, dof = mean * (1 - mean) / values.size, math.inf  # every prompt 0 (say): a binomial floor
    else:
        dof = variance ** 2 / ((seed_var ** 2 / (n_seeds - 1) if n_seeds > 1 else 0)
                               + (prompt_var ** 2 / (n_prompts - 1) if n_prompts > 1 else 0))
    half = stats.t.ppf((1 + confidence) / 2, dof) * math.sqrt(variance) / (mean * (1 - mean))
    centre = math.log(mean / (1 - mean))
    low, high = float(special.expit(centre - half)), float(special.expit(centre + half))
    return (0.0 if measured == 0 else low), (1.0 if measured == 1 else high)


def summarise(table: pd.DataFrame, by: str, column: str = "final", confidence: float = 0.95) -> pd.DataFrame:
    """Mean of `column` for each value of `by`, with `pass_rate_interval` over the seeds holding
    it and their held-out prompts (`<column>_per_prompt`, where every run has them, equally many).
    Runs repeating a (value, seed) pair (an Optuna study proposing settings again) count once."""
    return pd.DataFrame([{by: value, **arm_summary(part, column, confidence)}
                         for value, part in table.groupby(by, sort=True, observed=True)])


def one_per_seed(part: pd.DataFrame) -> pd.DataFrame:
    """An arm's runs, a seed repeated (an Optuna study proposing its settings again) counting once."""
    return part.drop_duplicates("seed") if "seed" in part else part


def arm_summary(part: pd.DataFrame, column: str = "final", confidence: float = 0.95) -> dict:
    """One arm's runs: mean of `column`, its `pass_rate_interval`, and how many seeds (a seed
    repeated counts once)."""
    part = one_per_seed(part)
    values = part[column].to_numpy(dtype=float)
    low, high = pass_rate_interval(per_prompt_results(part, column), confidence)
    return {"mean": values.mean(), "low": low, "high": high, "runs": len(values)}


def per_prompt_results(part: pd.DataFrame, column: str) -> np.ndarray:
    """`column` of `part`'s runs, one row per run in its order: per held-out prompt where every run logged
    them (`<column>_per_prompt`, equally many), else the run's value alone (seeds alone)."""
    detail = part.get(f"{column}_per_prompt")
    if detail is not None and all(isinstance(d, (list, np.ndarray)) for d in detail) \
            and len({len(d) for d in detail}) == 1:
        return np.asarray(detail.tolist(), dtype=float)
    return part[column].to_numpy(dtype=float)[:, None]


def summary_table(table: pd.DataFrame, by: str, others: list[str] = ()) -> pd.DataFrame:
    """Final and best, mean and interval over seeds, for each value of `by` and each combination
    of the `others` keys (other swept settings are kept apart, never pooled)."""
    others, parts = list(others), []
    for values, part in (table.groupby(others, observed=True) if others else [((), table)]):
        both = summarise(part, by, "final").merge(summarise(part, by, "best"), on=[by, "runs"],
                                                  suffixes=("_final", "_best"))
        parts.append(both.assign(**dict(zip(others, values if isinstance(values, tuple) else (values,)))))
    summary = pd.concat(parts, ignore_index=True)
    return summary[[by, *others, *[c for c in summary if c not in (by, *others)]]]


def _positions(values) -> tuple[np.ndarray, list[str]]:
    """x positions for swept values: the values when numeric, else evenly spaced categories."""
    numeric = pd.api.types.is_numeric_dtype(pd.Series(values))
    return (np.asarray(values, dtype=float) if numeric else np.arange(len(values))), [str(v) for v in values]


def scale_axis(ax, values, axis: str = "x") -> None:
    """A swept key whose values span a decade or more gets a log axis, or symlog when 0 is among
    them (beta, a cold start of none): on a linear axis the small values pile up at the origin."""
    numbers = pd.to_numeric(pd.Series(list(values)), errors="coerce").dropna().to_numpy(dtype=float)
    positive = numbers[numbers > 0]
    if len(positive) < 2 or positive.max() < 10 * positive.min() or (numbers < 0).any():
        return
    if (numbers == 0).any():
        getattr(ax, f"set_{axis}scale")("symlog", linthresh=positive.min())
    else:
        getattr(ax, f"set_{axis}scale")("log")


def _split(frame: pd.DataFrame, hue: list[str]):
    """(label, part) for each combination of the `hue` keys: the other swept settings, kept apart."""
    if not hue:
        yield "", frame
        return
    for values, part in frame.groupby(hue, sort=True, observed=True):
        values = values if isinstance(values, tuple) else (values,)
        yield ", ".join(f"{k}={v}" for k, v in zip(hue, values)), part


def plot_ablation(table: pd.DataFrame, by: str, metric: str = GOLD, hue: list[str] = (), ax=None):
    """Final and best `metric` against the swept value, mean and 95% interval over seeds; one pair
    of lines for each combination of the `hue` keys. Grey dots: single runs."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    x_of = dict(zip(*_positions(arms(table[by]))[1::-1]))
    for i, (label, part) in enumerate(_split(table, list(hue))):
        for column, style in (("final", "o-"), ("best", "s--")):
            summary = summarise(part, by, column)
            x = [x_of[str(v)] for v in summary[by]]
            ax.errorbar(x, summary["mean"], yerr=[summary["mean"] - summary.low, summary.high - summary["mean"]],
                        fmt=style, color=f"C{i}", capsize=3, label=f"{column} {label}".strip())
            ax.plot([x_of[str(v)] for v in part[by]], part[column], ".", color="grey", alpha=0.6)
    if not pd.api.types.is_numeric_dtype(table[by]):
        ax.set_xticks(list(x_of.values()), list(x_of))
    else:
        scale_axis(ax, x_of.values())
    ax.set(xlabel=by, ylabel=metric, title=f"{metric} against {by} (mean, 95% CI over seeds and prompts)")
    ax.legend(fontsize="small")
    return ax.figure


def with_train_seconds(history: pd.DataFrame) -> pd.DataFrame:
    """`train_seconds` beside each step: the stage's rollout and update time up to that step
    (its evaluations left out), the x-axis that compares arms of different cost."""
    if "step_time" not in history:
        return history
    history = history.sort_values(["run", "stage", "step"]).copy()
    history["train_seconds"] = history.groupby(["run", "stage"])["step_time"].transform(lambda t: t.fillna(0).cumsum())
    return history


def costs_differ(runs: pd.DataFrame, history: pd.DataFrame, by: str, stage: str = FINAL_STAGE,
                 ratio: float = COST_RATIO) -> bool:
    """Whether the values of `by` differ in training time by more than `ratio` (mean over the
    finished seeds: a pruned run's shorter time is not a cheaper setting)."""
    timed = with_train_seconds(history[(history.stage == stage) & history.run.isin(finished_runs(runs, stage))])
    if "train_seconds" not in timed:
        return False
    total = timed.groupby("run").train_seconds.max().rename("seconds").reset_index()
    by_value = total.merge(stage_config(runs, stage)[["run", by]], on="run").groupby(by, observed=True).seconds.mean()
    return len(by_value) > 1 and by_value.max() > ratio * by_value.min()


def plot_learning_curves(runs: pd.DataFrame, history: pd.DataFrame, by: str, metric: str = GOLD,
                         stage: str = FINAL_STAGE, hue: list[str] = (), x: str = "step", ax=None):
    """`metric` against step (or x="train_seconds"), one colour per swept value (one line style
    per `hue` combination): the mean over the finished seeds bold (a pruned run would leave the
    mean at the steps it reached), each seed faint."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    config = stage_config(runs, stage)[["run", by, *hue]]
    curves = with_train_seconds(history[history.stage == stage]).dropna(subset=[metric]).merge(config, on="run")
    for j, (label, group) in enumerate(_split(curves, list(hue))):
        for i, (value, part) in enumerate(group.groupby(by, sort=True, observed=True)):
            style = dict(color=f"C{i}", linestyle=["-", "--", ":", "-."][j % 4])
            for _, run in part.groupby("run"):
                ax.plot(run[x], run[metric], alpha=0.25, linewidth=0.8, **style)
            mean = part[part.run.isin(finished_runs(runs, stage))].groupby("step")[[x, metric]].mean()
            ax.plot(mean[x], mean[metric], linewidth=2, label=f"{by}={value} {label}".strip(), **style)
    xlabel = f"{stage} step" if x == "step" else f"{stage} rollout + update seconds (evaluations left out)"
    ax.set(xlabel=xlabel, ylabel=metric, title=f"{metric} during {stage}, by {by}")
    ax.legend(fontsize="small")
    return ax.figure
