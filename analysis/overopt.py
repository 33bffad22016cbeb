"""Reward over-optimisation (Gao, Schulman, Hilton 2022): gold and proxy reward against
d = sqrt(KL(pi || pi_init)), with the paper's functional forms fitted to each:

  RL           R(d) = d (alpha - beta log d)     peak at d* = exp(alpha / beta - 1)
  best-of-n    R(d) = d (alpha - beta d)         peak at d* = alpha / (2 beta)
               KL_bon(n) = sum_j q_j log(q_j / p_j) over the proxy's levels j, of probability p_j and CDF F_j,
               q_j = F_j^n - F_{j-1}^n; log n - (n - 1) / n bounds it, and is exact for a continuous proxy

Rewards are gains over the initial policy, so that R(0) = 0 as the forms require.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy.optimize import curve_fit
from scipy.special import comb

from analysis.ablation import arm_label, arms, finished_runs, stage_config, swept
from analysis.load import Sweep
from harness.store import FINAL_STAGE, GOLD, KL, PROXY

PROXIES = ("proxy", "learned")  # task.reward's proxies: eval/proxy_reward is the one each trained on
SETTING = "setting"  # the column labelling a run's values of the swept keys, when it has several
START = "start"  # a best-of-n curve's column naming the GRPO start and proxy it ranks by, when runs differ in them


def rl_form(d, alpha, beta):
    d = np.asarray(d, dtype=float)
    return d * alpha - beta * d * np.log(np.where(d > 0, d, 1.0))  # d log d -> 0 as d -> 0


def bon_form(d, alpha, beta):
    d = np.asarray(d, dtype=float)
    return d * (alpha - beta * d)


FORMS = {"rl": rl_form, "bon": bon_form}


def kl_best_of_n_bound(n):
    """KL of the best-of-n policy to the sampling policy, in nats, for a continuous ranking reward: an upper bound
    when the reward has ties (Beirami et al. 2024)."""
    n = np.asarray(n, dtype=float)
    return np.log(n) - (n - 1) / n


def kl_best_of_n(proxy, n: int) -> float:
    """KL in nats of the best-of-n pick by `proxy` (ties broken at random) to the sampling policy, estimated from
    one problem's samples: the pick lands on level j with probability F_j^n - F_{j-1}^n."""
    _, counts = np.unique(proxy, return_counts=True)
    # powers of the cumulative counts as Python ints are exact (numpy's overflow at 64 bits): F_j^n - F_{j-1}^n has no
    # cancellation, and n = 1 gives p back exactly, so the KL there is 0, not a rounding error whose sqrt may be nan
    n, total = int(n), len(proxy)
    powers = [count**n for count in [0, *np.cumsum(counts).tolist()]]
    picked = np.array([(high - low) / total**n for low, high in zip(powers, powers[1:])])
    p = counts / total
    kept = picked > 0  # a level the pick never lands on adds nothing
    return float(picked[kept] @ np.log(picked[kept] / p[kept]))


@dataclass
class Fit:
    form: str  # rl | bon
    alpha: float
    beta: float
    r2: float
    points: int
    d_max: float  # the farthest point fitted: a d_star beyond it is extrapolation

    @property
    def d_star(self) -> float:
        """Where the fitted gain peaks (inf when it never turns down)."""
        if self.beta <= 0:
            return float("inf")
        return float(np.exp(self.alpha / self.beta - 1)) if self.form == "rl" else self.alpha / (2 * self.beta)

    @property
    def peak(self) -> float:
        return float(self(self.d_star)) if np.isfinite(self.d_star) else float("inf")

    def __call__(self, d):
        return FORMS[self.form](d, self.alpha, self.beta)

    def as_row(self) -> dict:
        return {"form": self.form, "alpha": self.alpha, "beta": self.beta, "r2": self.r2, "d_star": self.d_star,
                "peak_gain": self.peak, "points": self.points, "d_max": self.d_max}


def fit(form: str, d, gain) -> Fit:
    """Least-squares fit of R(d) to (d, gain) points; R^2 against the mean of the gains."""
    d, gain = np.asarray(d, dtype=float), np.asarray(gain, dtype=float)
    keep = np.isfinite(d) & np.isfinite(gain)
    d, gain = d[keep], gain[keep]
    if len(d) < 3:
        raise ValueError(f"a {form} fit needs at least 3 points, got {len(d)}")
    (alpha, beta), _ = curve_fit(FORMS[form], d, gain, p0=(1.0, 0.1))
    residual = gain - FORMS[form](d, alpha, beta)
    total = ((gain - gain.mean()) ** 2).sum()
    r2 = 1 - (residual**2).sum() / total if total > 0 else float("nan")
    return Fit(form, float(alpha), float(beta), float(r2), int(len(d)), float(d.max()))


def best_of_n(samples: pd.DataFrame, ns=None) -> pd.DataFrame:
    """The best-of-n curve from N samples per problem of the initial policy, ranked by the proxy.

    For each n, the expected rewards of the proxy's pick among n samples drawn without
    replacement from the N: the sample ranked i-th (ascending) is the pick with probability
    C(i-1, n-1) / C(N, n) (the unbiased estimator of Nakano et al. 2021). Ties in the proxy
    are broken at random, so tied samples share their mean gold reward. A problem with more
    than N samples (a run made with a bigger eval.best_of_n) gives its first N drawn.
    `kl` is kl_best_of_n over problems' empirical proxy distributions, averaged, and d = sqrt(kl);
    `kl_bound` is the closed form, which is far too big when the proxy has few levels.
    `samples` has columns problem, gold, proxy in drawn order (and run, to average over runs).
    """
    by = ["run", "problem"] if "run" in samples else ["problem"]
    sizes = samples.groupby(by).size()
    N = int(sizes.min())
    ns = [n for n in (ns or 2 ** np.arange(int(np.log2(N)) + 1)) if 1 <= n <= N]
    rows = []
    for _, group in samples.groupby(by):
        # the first N in drawn order: i.i.d. samples, so a cut that ignores the proxy keeps a fair sample
        group = group.head(N).sort_values("proxy", kind="stable")
        gold = group.groupby("proxy").gold.transform("mean").to_numpy()
        proxy = group.proxy.to_numpy()
        rank = np.arange(1, N + 1)
        for n in ns:
            weight = comb(rank - 1, n - 1) / comb(N, n)
            rows.append({"n": n, "kl": kl_best_of_n(proxy, n), "gold": weight @ gold, "proxy": weight @ proxy})
    curve = pd.DataFrame(rows).groupby("n", as_index=False).mean()
    curve.insert(2, "kl_bound", kl_best_of_n_bound(curve.n))
    curve.insert(3, "d", np.sqrt(curve.kl))
    curve["gold_gain"] = curve.gold - curve.gold.iloc[0]
    curve["proxy_gain"] = curve.proxy - curve.proxy.iloc[0]
    return curve


def rl_points(runs: pd.DataFrame, history: pd.DataFrame, stage: str = FINAL_STAGE) -> pd.DataFrame:
    """Each held-out evaluation of each run's `stage`: d, and the gold and proxy gains over the
    stage's start, with the run's config beside it."""
    if KL not in history:  # no run measured it (eval.kl_to_initial=false): no point has a d
        history = history.assign(**{KL: np.nan})
    evals = history[(history.stage == stage) & history[KL].notna()]
    evals = evals.sort_values(["run", "step"])
    start = evals.groupby("run")[[GOLD, PROXY]].transform("first")
    points = pd.DataFrame({
        "run": evals.run, "step": evals.step, "kl": evals[KL],
        "d": np.sqrt(evals[KL].clip(lower=0)),  # a sampled KL estimate can dip just below 0
        "gold": evals[GOLD], "proxy": evals[PROXY],
        "gold_gain": evals[GOLD] - start[GOLD], "proxy_gain": evals[PROXY] - start[PROXY],
    })
    return points.merge(stage_config(runs, stage), on="run").reset_index(drop=True)


def fit_table(points: pd.DataFrame, by: str | None, bon: pd.DataFrame | None = None) -> pd.DataFrame:
    """RL fits of gold and proxy gain, one per value of `by` (seeds pooled), and the BoN fits, one per start."""
    rows = []
    groups = points.groupby(by, observed=True) if by else [("all", points)]
    for value, part in groups:
        for reward in ("gold", "proxy"):
            if len(part) >= 3:
                rows.append({"policy": "rl", "by": by or "", "value": value, "reward": reward,
                             **fit("rl", part.d, part[f"{reward}_gain"]).as_row()})
    for start, curve in bon_curves(bon):
        for reward in ("gold", "proxy"):
            if len(curve) >= 3:
                rows.append({"policy": "best-of-n", "by": START if start else "", "value": start or "",
                             "reward": reward, **fit("bon", curve.d, curve[f"{reward}_gain"]).as_row()})
    return pd.DataFrame(rows)


def turning_points(points: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """Per run: where its gold gain peaked, and what gold and proxy did from there to the end.
    Over-optimisation is gold falling after its peak while the proxy still climbs."""
    rows = []
    for run, part in points.sort_values("step").groupby("run", sort=True):
        peak, last = part.loc[part.gold_gain.idxmax()], part.iloc[-1]
        rows.append({"run": run, **({by: peak[by]} if by else {}), "seed": peak.get("seed"),
                     "peak_step": int(peak.step), "peak_d": peak.d, "final_d": last.d,
                     "gold_gain_at_peak": peak.gold_gain, "gold_gain_final": last.gold_gain,
                     "gold_after_peak": last.gold_gain - peak.gold_gain,
                     "proxy_after_peak": last.proxy_gain - peak.proxy_gain})
    table = pd.DataFrame(rows)
    if by and isinstance(points[by].dtype, pd.CategoricalDtype):  # sorted as the arms are, not as text
        table[by] = pd.Categorical(table[by], categories=points[by].cat.categories, ordered=True)
    return table.sort_values([by, "seed"] if by else ["seed"], ignore_index=True) if len(table) else table


@dataclass
class ProxyRuns:
    """A sweep's runs trained on a proxy (the task's formula or a learned reward model), as the
    over-optimisation analysis sees them."""

    points: pd.DataFrame  # rl_points of those runs
    by: str | None  # the swept key they differ in (SETTING when several); None when they share one setting
    best_of_n: pd.DataFrame | None  # the best-of-n curve of their starts (one per START); None without samples


def proxy_runs(sweep: Sweep, stage: str = FINAL_STAGE) -> ProxyRuns:
    """The finished runs trained on a proxy, the task's or a learned one (a pruned run has no end to turn at)."""
    runs = sweep.runs[sweep.runs.stage == stage]
    names = set(runs.run[runs["task.reward"].isin(PROXIES)]) if "task.reward" in runs else set()
    names &= finished_runs(sweep.runs, stage)
    points = rl_points(sweep.runs, sweep.history, stage)
    points = points[points.run.isin(names)].reset_index(drop=True)
    keys = [k for k in swept(sweep.runs) if points[k].nunique(dropna=False) > 1]
    # The GRPO stage's own settings change neither its start nor its proxy: best-of-n, which only
    # ranks the start's samples, differs only in the rest (a reward model's N), never pooled across it.
    starts = [k for k in keys if not k.startswith(f"{stage}.")]
    keys = starts + [k for k in keys if k not in starts]  # a setting reads start first: N, then beta
    by = keys[0] if len(keys) == 1 else None
    if len(keys) > 1:
        points[SETTING], by = labels(points, keys), SETTING
    samples = sweep.best_of_n
    if len(samples):
        samples = samples[samples.run.isin(names) & (samples.stage == stage)]
    return ProxyRuns(points, by, best_of_n_by(samples, points, starts) if len(samples) else None)


def labels(frame: pd.DataFrame, keys: list[str]) -> pd.Categorical:
    """Each row's values of `keys` as one label, "k=v, k=v", ordered as the values are."""
    position = {k: {v: i for i, v in enumerate(arms(frame[k]))} for k in keys}

    def name(row) -> str:
        return ", ".join(f"{k}={arm_label(v)}" for k, v in zip(keys, row))

    combos = sorted(frame[keys].drop_duplicates().itertuples(index=False),
                    key=lambda row: [position[k][v] for k, v in zip(keys, row)])
    return pd.Categorical([name(row) for row in frame[keys].itertuples(index=False)],
                          categories=[name(row) for row in combos], ordered=True)


def best_of_n_by(samples: pd.DataFrame, points: pd.DataFrame, keys: list[str]) -> pd.DataFrame | None:
    """best_of_n of the runs sharing each value of `keys` (a START column labels it); one curve when none."""
    if not keys:
        return best_of_n(samples)
    runs = points.drop_duplicates("run").set_index("run")
    start = pd.Series(labels(runs, keys), index=runs.index)
    groups = samples.groupby(samples.run.map(start), observed=True)
    if not len(groups):
        return None
    curves = pd.concat([best_of_n(part).assign(**{START: value}) for value, part in groups], ignore_index=True)
    curves[START] = pd.Categorical(curves[START], categories=start.cat.categories, ordered=True)
    return curves


def bon_curves(bon: pd.DataFrame | None):
    """(start, curve) for each best-of-n curve: start None when there is one."""
    if bon is None or not len(bon):
        return []
    if START not in bon:
        return [(None, bon)]
    return list(bon.groupby(START, observed=True))


def plot_overoptimisation(points: pd.DataFrame, by: str | None = None, bon: pd.DataFrame | None = None):
    """Gold (left) and proxy (right) gain against sqrt(KL): each run's evaluations coloured by
    `by`, the RL fit for each value of `by`, and each best-of-n curve (one per start) with its fit
    in black, told apart by marker and line style. One legend under both (the fits' R^2 are in
    fit_table)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.5), sharex=True, layout="constrained")
    values = arms(points[by]) if by else [None]
    grid = np.linspace(0, max(points.d.max(), bon.d.max() if bon is not None and len(bon) else 0) * 1.05, 200)
    for ax, reward in zip(axes, ("gold", "proxy")):
        for i, value in enumerate(values):
            part = points if value is None else points[points[by] == value]
            for _, run in part.groupby("run"):
                ax.plot(run.d, run[f"{reward}_gain"], "o", color=f"C{i}", alpha=0.5, markersize=4)
            fitted = len(part) >= 3
            if fitted:
                span = grid[grid <= part.d.max() * 1.05]  # a fit is drawn only where it has data
                ax.plot(span, fit("rl", part.d, part[f"{reward}_gain"])(span), "-", color=f"C{i}")
            label = "RL" if value is None else str(value) if by == SETTING else f"{by}={value}"
            ax.plot([], [], "o-" if fitted else "o", color=f"C{i}", label=label + (" and its fit" if fitted else ""))
        for j, (start, curve) in enumerate(bon_curves(bon)):
            marker, style = "sv^Dpo"[j % 6], ("--", ":", "-.")[j % 3]
            ax.plot(curve.d, curve[f"{reward}_gain"], marker, color="black", markersize=4)
            if len(curve) >= 3:
                span = grid[grid <= curve.d.max() * 1.05]
                ax.plot(span, fit("bon", curve.d, curve[f"{reward}_gain"])(span), style, color="black")
            ax.plot([], [], marker + style, color="black", label="best-of-n" + (f" ({start})" if start else ""))
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.set(xlabel="d = sqrt(KL to the initial policy)", ylabel=f"{reward} reward gain",
               title=f"{reward.capitalize()} reward against KL")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize="small")
    return fig
