"""A Bayesian sweep's own questions: which knobs mattered, how the search went, what the pruner
stopped and when, and where the trade-off between objectives lies.

The study comes from its storage (the sweep's optuna.db, or any Optuna storage URL) or, when that
is gone, is rebuilt from the runs alone (the local run store or W&B): every run of a sweep records
its trial's number and the study's search space, objectives and directions (`trial.number`,
`trial.study`), and its history holds the values it reported. Both give one `optuna.Study`, so
every table and figure below is computed the same way from either. Optuna's importance evaluators
and matplotlib plots are used where they fit; the rest is drawn here.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import optuna
import pandas as pd
from optuna.distributions import json_to_distribution
from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator
from optuna.trial import TrialState

from analysis.load import Sweep

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # the matplotlib plots
optuna.logging.set_verbosity(optuna.logging.WARNING)
STATES = {"finished": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "stopped": TrialState.FAIL}
# Objectives a run reports in status.json that its tracker logs under another name.
LOGGED_AS = {"cost/grpo/rollout_tokens": "num_tokens"}


def is_bayesian(runs: pd.DataFrame) -> bool:
    """Made by the Optuna sweeper: its runs carry the study's spec."""
    return "trial.study" in runs and runs["trial.study"].notna().any()


def open_study(sweep_dir, storage: str | None = None) -> optuna.Study | None:
    """The sweep's study from its storage (default: the sweep's optuna.db), or None if there is none."""
    if storage is None:
        database = Path(sweep_dir) / "optuna.db"
        if not database.exists():
            return None
        storage = f"sqlite:///{database}"
    from sweeps.trial import open_storage

    summaries = optuna.get_all_study_summaries(open_storage(storage))
    return optuna.load_study(study_name=summaries[0].study_name, storage=storage) if summaries else None


def study_from_runs(sweep: Sweep, stage: str = "grpo") -> optuna.Study:
    """The study rebuilt in memory from its runs: the same trials (by number), params, states,
    values and intermediate values, whatever the runs were read from."""
    runs = sweep.runs[(sweep.runs.stage == stage) & sweep.runs["trial.study"].notna()].sort_values("trial.number")
    spec = json.loads(runs["trial.study"].iloc[0])
    space = {key: json_to_distribution(json.dumps(d)) for key, d in spec["space"].items()}
    study = optuna.create_study(directions=spec["directions"])
    study.set_user_attr("objectives", spec["objectives"])
    for _, run in runs.iterrows():
        state = STATES.get(run.status)
        if state is None:  # still running: no outcome yet
            continue
        steps = sweep.history[(sweep.history.run == run.run) & (sweep.history.stage == stage)]
        # A run reports each evaluation after its start (step 0 is the start's, before any update).
        reported = steps[steps.step > 0].dropna(subset=[run["trial.objective"]]) if len(spec["objectives"]) == 1 \
            else steps.iloc[:0]
        intermediate = dict(zip(reported.step.astype(int), reported[run["trial.objective"]]))
        values = [run.get(LOGGED_AS.get(key, key)) for key in spec["objectives"]]
        if state == TrialState.COMPLETE and any(v is None or math.isnan(v) for v in values):
            state = TrialState.FAIL  # finished without its objective: the sweeper failed it
        if state == TrialState.PRUNED:  # as Optuna's tell does: a pruned trial's value is its last report
            values = [intermediate[max(intermediate)]] if intermediate else None
        study.add_trial(optuna.trial.create_trial(
            state=state, params={key: _param(run[key], space[key]) for key in space}, distributions=space,
            values=None if state == TrialState.FAIL else values, intermediate_values=intermediate,
            user_attrs={"run_dir": run.run}))
    return study


def _param(value, distribution):
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return next(c for c in distribution.choices if c == value or (c is None and pd.isna(value)))
    return int(value) if isinstance(distribution, optuna.distributions.IntDistribution) else float(value)


def objectives(study: optuna.Study) -> list[str]:
    return study.user_attrs.get("objectives") or [f"objective {i}" for i in range(len(study.directions))]


def _target(study: optuna.Study):
    """What the single-objective views plot: the value, or the first objective of several."""
    return None if len(study.directions) == 1 else (lambda t: t.values[0])


def _complete(study: optuna.Study) -> list:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def importances(study: optuna.Study, seeds: int = 5) -> pd.DataFrame:
    """fANOVA and PED-ANOVA importance of each knob for the (first) objective: mean and spread over
    `seeds` seeds of the estimator (fANOVA's random forest; PED-ANOVA has no seed: one estimate, sd
    0), each normalised to sum to 1 as Optuna does."""
    rows = []
    evaluators = {"fANOVA": [FanovaImportanceEvaluator(seed=seed) for seed in range(seeds)],
                  "PED-ANOVA": [PedAnovaImportanceEvaluator()]}
    target = None  # one objective: its direction is the study's
    if len(study.directions) > 1:  # the first of several: PED-ANOVA takes a target as lower-is-better
        sign = -1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1
        target = lambda t: sign * t.values[0]  # noqa: E731
    for name, estimators in evaluators.items():
        per_seed = pd.DataFrame([optuna.importance.get_param_importances(study, evaluator=e, target=target)
                                 for e in estimators])
        for param in per_seed:
            rows.append({"evaluator": name, "param": param, "importance": per_seed[param].mean(),
                         "std": per_seed[param].std(ddof=1) if len(estimators) > 1 else 0.0,
                         "seeds": len(estimators)})
    return pd.DataFrame(rows).sort_values(["evaluator", "importance"], ascending=[True, False], ignore_index=True)


def plot_importances(table: pd.DataFrame):
    fig, axes = plt.subplots(1, table.evaluator.nunique(), figsize=(10, 0.5 + 0.45 * table.param.nunique()),
                             squeeze=False)
    for ax, (name, part) in zip(axes[0], table.groupby("evaluator")):
        part = part.iloc[::-1]
        ax.barh(part.param, part.importance, xerr=part["std"], capsize=3)
        seeds = part.seeds.iloc[0]
        ax.set_title(f"{name} (mean ± sd over {seeds} estimator seeds)" if seeds > 1 else name, fontsize=9)
        ax.set_xlabel("importance")
    fig.tight_layout()
    return fig


def history(study: optuna.Study) -> pd.DataFrame:
    """Each trial's number, state and (first) objective value, and the best so far among finished trials."""
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1
    rows, best = [], None
    for t in study.get_trials(deepcopy=False):
        value = t.values[0] if t.state == TrialState.COMPLETE else None
        if value is not None and (best is None or sign * value > sign * best):
            best = value
        rows.append({"number": t.number, "run_dir": t.user_attrs.get("run_dir"), "state": t.state.name,
                     "value": value, "best_so_far": best})
    return pd.DataFrame(rows)


def plot_history(study: optuna.Study):
    ax = optuna.visualization.matplotlib.plot_optimization_history(study, target=_target(study),
                                                                   target_name=objectives(study)[0])
    return ax.figure


def intermediate(study: optuna.Study) -> pd.DataFrame:
    """Every value each trial reported, by step, and whether the trial was pruned there (its last report)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        last = max(t.intermediate_values, default=None)
        rows += [{"number": t.number, "state": t.state.name, "step": step, "value": value,
                  "pruned_here": t.state == TrialState.PRUNED and step == last}
                 for step, value in sorted(t.intermediate_values.items())]
    return pd.DataFrame(rows, columns=["number", "state", "step", "value", "pruned_here"])


def plot_intermediate(table: pd.DataFrame, name: str):
    fig, ax = plt.subplots(figsize=(7, 4))
    for number, part in table.groupby("number"):
        pruned = part.state.iloc[0] == "PRUNED"
        ax.plot(part.step, part.value, color="tab:red" if pruned else "tab:blue", alpha=0.6, lw=1)
    stops = table[table.pruned_here.astype(bool)]
    ax.scatter(stops.step, stops.value, marker="x", color="tab:red", zorder=3, label="pruned here")
    ax.set(xlabel="GRPO step", ylabel=name, title="Intermediate values (red: pruned trials)")
    if len(stops):
        ax.legend()
    return fig


def plot_parallel(study: optuna.Study):
    ax = optuna.visualization.matplotlib.plot_parallel_coordinate(study, target=_target(study),
                                                                  target_name=objectives(study)[0])
    return ax.figure


def plot_slices(study: optuna.Study):
    axes = optuna.visualization.matplotlib.plot_slice(study, target=_target(study), target_name=objectives(study)[0])
    first = axes.flat[0] if hasattr(axes, "flat") else axes
    return first.figure


def pareto(study: optuna.Study) -> pd.DataFrame:
    """Every finished trial's objectives and whether it is on the Pareto front."""
    front = {t.number for t in study.best_trials}
    names = objectives(study)
    return pd.DataFrame([{"number": t.number, "run_dir": t.user_attrs.get("run_dir"),
                          **dict(zip(names, t.values)), "on_front": t.number in front} for t in _complete(study)])


def plot_pareto(study: optuna.Study, table: pd.DataFrame):
    ax = optuna.visualization.matplotlib.plot_pareto_front(study, target_names=objectives(study)[:2])
    x, y = objectives(study)[:2]
    for _, row in table[table.on_front].iterrows():  # the chosen trials, by where their runs are
        ax.annotate(Path(str(row.run_dir)).name, (row[x], row[y]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    return ax.figure
