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
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import optuna
import pandas as pd
from optuna.distributions import json_to_distribution
from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator
from optuna.trial import TrialState

from analysis.load import Sweep
from harness.store import FINAL_STAGE

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # the matplotlib plots
optuna.logging.set_verbosity(optuna.logging.WARNING)
STATES = {"finished": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "stopped": TrialState.FAIL}
# Objectives a run reports in status.json that its tracker logs under another name.
LOGGED_AS = {"cost/grpo/rollout_tokens": "num_tokens"}


def spec(runs: pd.DataFrame) -> dict | None:
    """The study's spec that an Optuna sweep's runs carry (`trial.study`): its name, sampler, search
    space, objectives and directions; None for runs of any other sweep."""
    tagged = runs["trial.study"].dropna() if "trial.study" in runs else []
    return json.loads(tagged.iloc[0]) if len(tagged) else None


def is_bayesian(runs: pd.DataFrame) -> bool:
    """Searched by Optuna's samplers; a grid through the Optuna sweeper is a controlled grid still."""
    found = spec(runs)
    return found is not None and found["sampler"] != "grid"


def open_study(sweep_dir, storage: str | None = None, name: str | None = None) -> optuna.Study | None:
    """The study `name` (or the storage's only one) from its storage (default: the sweep's
    optuna.db), or None if there is none."""
    if storage is None:
        database = Path(sweep_dir) / "optuna.db"
        if not database.exists():
            return None
        storage = f"sqlite:///{database}"
    from sweeps.storage import open_storage

    names = [s.study_name for s in optuna.get_all_study_summaries(open_storage(storage))]
    if name is None and len(names) > 1:
        raise ValueError(f"{storage} holds several studies ({', '.join(names)}): name one")
    if (name or (names[0] if names else None)) not in names:
        return None
    return optuna.load_study(study_name=name or names[0], storage=storage)


def study_from_runs(sweep: Sweep, stage: str = FINAL_STAGE) -> optuna.Study:
    """The study rebuilt in memory from its runs, whatever they were read from: trial by trial
    number, its params, state, values and intermediate values. A trial with no runs (a failed
    attempt that its retry resumed) or no `stage` run (it failed before) is a failed trial."""
    found = spec(sweep.runs)
    space = {key: json_to_distribution(json.dumps(d)) for key, d in found["space"].items()}
    study = optuna.create_study(study_name=found["study_name"], directions=found["directions"])
    study.set_user_attr("objectives", found["objectives"])
    tagged = sweep.runs[sweep.runs["trial.study"].notna()]
    trials = {int(number): part for number, part in tagged.groupby("trial.number")}
    for number in range(max(trials) + 1):
        part = trials.get(number)
        if part is None:
            study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
            continue
        final = part[part.stage == stage]
        run = final.iloc[0] if len(final) else part.iloc[0]
        params = {key: _param(key, run, space[key]) for key in space}
        if final.empty:
            study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, params=params, distributions=space,
                                                      user_attrs={"run_dir": run.run}))
            continue
        state, values, intermediate = _outcome(sweep, run, found["objectives"], stage)
        study.add_trial(optuna.trial.create_trial(state=state, params=params, distributions=space, values=values,
                                                  intermediate_values=intermediate, user_attrs={"run_dir": run.run}))
    return study


def _outcome(sweep: Sweep, run: pd.Series, names: list[str], stage: str) -> tuple:
    """(state, values, intermediate values) of a trial from its final stage's run."""
    steps = sweep.history[(sweep.history.run == run.run) & (sweep.history.stage == stage)]
    # A run reports each evaluation after its start (step 0 is the start's, before any update).
    reported = steps[steps.step > 0].dropna(subset=[run["trial.objective"]]) if len(names) == 1 else steps.iloc[:0]
    intermediate = dict(zip(reported.step.astype(int), reported[run["trial.objective"]]))
    state = STATES.get(run.status, TrialState.RUNNING)
    if state == TrialState.PRUNED:  # as Optuna's tell does: a pruned trial's value is its last report
        return state, ([intermediate[max(intermediate)]] if intermediate else None), intermediate
    if state != TrialState.COMPLETE:
        return state, None, intermediate
    missing = [key for key in names if LOGGED_AS.get(key, key) not in run]
    if missing:
        raise ValueError(f"objective {missing[0]!r} is not among what the runs logged: the study cannot be rebuilt")
    values = [run[LOGGED_AS.get(key, key)] for key in names]
    if any(pd.isna(v) for v in values):  # finished without its objective: the sweeper failed it
        return TrialState.FAIL, None, intermediate
    return state, values, intermediate


def _param(key: str, run: pd.Series, distribution):
    if key not in run:
        raise ValueError(f"search parameter {key!r} is not a config key of the runs (a config group?): "
                         "the study cannot be rebuilt from them")
    value = run[key]
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        for choice in distribution.choices:
            if choice == value or (choice is None and pd.isna(value)):
                return choice
        raise ValueError(f"{key}={value!r} is none of the search space's choices {distribution.choices}")
    return int(value) if isinstance(distribution, optuna.distributions.IntDistribution) else float(value)


def objectives(study: optuna.Study) -> list[str]:
    return study.user_attrs.get("objectives") or [f"objective {i}" for i in range(len(study.directions))]


def _target(study: optuna.Study):
    """What the single-objective views plot: the value, or the first objective of several."""
    return None if len(study.directions) == 1 else (lambda t: t.values[0])


def _complete(study: optuna.Study) -> list:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def why_no_importances(study: optuna.Study) -> str | None:
    """Why an importance would be meaningless here (fANOVA raises on it, PED-ANOVA returns equal shares
    with a warning), or None: fewer than two finished trials, or finished trials that all tie."""
    values = [t.values[0] for t in _complete(study)]
    if len(values) < 2:
        return f"{len(values)} finished trial{'' if len(values) == 1 else 's'}: importances need two or more to compare"
    if len(set(values)) == 1:
        return f"all {len(values)} finished trials scored the same ({values[0]:.4g}): there is no variance to split"
    return None


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
