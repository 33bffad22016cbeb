"""The analysis of Bayesian sweeps: importances, history, intermediate values, parallel
coordinates, slices and the Pareto front, from the study's storage or rebuilt from its runs."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from scipy import stats

from analysis import Sweep, compare, from_local, from_wandb_offline, study
from analysis.report import write_report


def _synthetic(objective, directions=("maximize",), n_trials=60):
    s = optuna.create_study(directions=list(directions), sampler=optuna.samplers.RandomSampler(seed=0))
    s.set_user_attr("objectives", [f"y{i}" for i in range(len(directions))])

    def run(trial):
        x = trial.suggest_float("x", 0, 1)
        noise = trial.suggest_float("noise", 0, 1)
        k = trial.suggest_categorical("k", [4, 8, 16])
        trial.set_user_attr("run_dir", f"/sweeps/s/{trial.number}")
        return objective(x, noise, k)
    s.optimize(run, n_trials=n_trials)
    return s


def test_importances_rank_the_one_knob_that_matters_first():
    s = _synthetic(lambda x, noise, k: x + 0.01 * noise)
    table = study.importances(s, seeds=3)
    for name, part in table.groupby("evaluator"):
        assert part.iloc[0].param == "x" and part.iloc[0].importance > 0.8, (name, part)
        assert part.importance.sum() == pytest.approx(1, abs=1e-6)
    fanova = table[table.evaluator == "fANOVA"]
    assert (fanova["std"] > 0).any()  # the forest's seed moves the estimate
    assert (table[table.evaluator == "PED-ANOVA"]["std"] == 0).all()  # PED-ANOVA has no seed


def test_a_study_whose_trials_tie_or_that_has_one_trial_gets_a_reason_not_importances():
    """fANOVA raises on a tie (`zero total variance in all trees`: a 6-trial smoke study's two finished
    trials tied) and PED-ANOVA shares importance equally over one trial: neither is an answer."""
    tied = _synthetic(lambda x, noise, k: 0.5, n_trials=3)
    with pytest.raises(RuntimeError, match="zero total variance"):
        study.importances(tied, seeds=1)
    assert study.why_no_importances(tied) == "all 3 finished trials scored the same (0.5): there is no variance to split"
    one = _synthetic(lambda x, noise, k: x, n_trials=1)
    assert study.why_no_importances(one) == "1 finished trial: importances need two or more to compare"
    assert study.why_no_importances(_synthetic(lambda x, noise, k: x, n_trials=3)) is None


def test_the_pareto_front_is_the_study_s_and_its_trials_are_labelled_by_run_directory():
    s = _synthetic(lambda x, noise, k: (x, x * x + noise), directions=("maximize", "minimize"), n_trials=30)
    table = study.pareto(s)
    assert set(table.number[table.on_front]) == {t.number for t in s.best_trials}
    ax = study.plot_pareto(s, table).axes[0]
    labels = {t.get_text() for t in ax.texts}
    assert labels == {str(n) for n in table.number[table.on_front]}


def test_history_keeps_the_best_so_far_and_intermediate_values_mark_where_a_pruned_trial_stopped():
    s = optuna.create_study(direction="maximize")
    s.set_user_attr("objectives", ["eval/gold_pass@1"])
    for reports, pruned in [([0.1, 0.3, 0.5], False), ([0.2, 0.1], True), ([0.4, 0.6, 0.7], False)]:
        trial = s.ask()
        for step, value in enumerate(reports):
            trial.report(value, step * 2)
        s.tell(trial, state=optuna.trial.TrialState.PRUNED) if pruned else s.tell(trial, reports[-1])
    hist = study.history(s)
    assert hist.best_so_far.tolist() == [0.5, 0.5, 0.7] and hist.state.tolist() == ["COMPLETE", "PRUNED", "COMPLETE"]
    values = study.intermediate(s)
    assert values[values.pruned_here][["number", "step", "value"]].values.tolist() == [[1, 2, 0.1]]
    ax = study.plot_intermediate(values, "eval/gold_pass@1").axes[0]
    [stops] = ax.collections
    assert stops.get_offsets().tolist() == [[2, 0.1]]
    assert len(ax.lines) == 3


# -- a real study made by the suite (bayes_sweep, in conftest) -------------------------------------
def _same_trials(rebuilt, stored):
    assert [(t.number, t.state, t.params, t.values, t.intermediate_values) for t in rebuilt.trials] == \
        [(t.number, t.state, t.params, t.values, t.intermediate_values) for t in stored.trials]


@pytest.mark.slow
@pytest.mark.parametrize("load", [from_local, from_wandb_offline])
def test_the_study_rebuilt_from_its_runs_is_the_stored_one(bayes_sweep, load):
    stored = study.open_study(bayes_sweep)
    assert len(stored.trials) == 12 and {t.state.name for t in stored.trials} >= {"COMPLETE", "PRUNED"}
    _same_trials(study.study_from_runs(load(bayes_sweep)), stored)


@pytest.mark.slow
def test_a_trial_whose_runs_are_gone_or_stopped_early_is_rebuilt_as_failed_in_its_place(bayes_sweep):
    sweep = from_local(bayes_sweep)
    numbers = sweep.runs["trial.number"]
    early = sweep.runs[~((numbers == 4) & (sweep.runs.stage == "grpo"))]  # trial 4 stopped before GRPO
    gone = early[early["trial.number"] != 2]  # trial 2 left nothing
    rebuilt = study.study_from_runs(Sweep(gone, sweep.history, sweep.best_of_n))
    stored = study.open_study(bayes_sweep)
    assert [t.number for t in rebuilt.trials] == list(range(12))
    assert rebuilt.trials[2].state.name == "FAIL" and rebuilt.trials[2].params == {}
    assert rebuilt.trials[4].state.name == "FAIL" and rebuilt.trials[4].params == stored.trials[4].params
    others = [n for n in range(12) if n not in (2, 4)]
    assert [rebuilt.trials[n].values for n in others] == [stored.trials[n].values for n in others]


@pytest.mark.slow
def test_the_report_of_a_bayesian_sweep_has_every_figure_and_its_data(bayes_sweep, tmp_path):
    stored = study.open_study(bayes_sweep)
    text = write_report(bayes_sweep, tmp_path).read_text()
    assert "## Bayesian search" in text and "read from its storage" in text
    assert "## grpo.beta" not in text  # no per-key ablation of arms that are not controlled
    # Smoke sizes: 16 held-out prompts x 2 samples, so every trial scores 0 or 1/32 and the study ranks noise.
    values = [t.value for t in stored.trials if t.state.name == "COMPLETE"]
    noise = (np.mean(values) * (1 - np.mean(values)) / 32) ** 0.5
    assert ("rank noise" in text) == (np.std(values, ddof=1) <= noise)
    for figure in ("importances", "history", "intermediate", "parallel", "slices"):
        assert f"![{figure}](study_{figure}.png)" in text and (tmp_path / f"study_{figure}.png").stat().st_size

    importances = pd.read_csv(tmp_path / "study_importances.csv")
    assert set(importances.param) == set(stored.best_params) and set(importances.evaluator) == {"fANOVA", "PED-ANOVA"}
    history = pd.read_csv(tmp_path / "study_history.csv")
    complete = [t.value if t.state.name == "COMPLETE" else np.nan for t in stored.trials]
    assert np.allclose(history.value, complete, equal_nan=True)
    assert history.best_so_far.iloc[-1] == pytest.approx(stored.best_value)
    values = pd.read_csv(tmp_path / "study_intermediate.csv")
    pruned = [t for t in stored.trials if t.state.name == "PRUNED"]
    assert sorted(values.number[values.pruned_here]) == [t.number for t in pruned]
    assert all(values[values.pruned_here & (values.number == t.number)].step.item() == max(t.intermediate_values)
               for t in pruned)

    complete_trials = [t for t in stored.trials if t.state.name == "COMPLETE"]
    parallel = study.plot_parallel(stored).axes[0]
    assert len(parallel.collections[0].get_segments()) == len(complete_trials)  # one line per finished trial
    slices = [ax for ax in study.plot_slices(stored).axes if ax.get_xlabel() in stored.best_params]  # not the colorbar
    assert len(slices) == len(stored.best_params)
    assert all(len(ax.collections[0].get_offsets()) == len(complete_trials) for ax in slices)


@pytest.mark.slow
def test_the_report_from_wandb_alone_outside_the_environment_draws_the_same(bayes_sweep, tmp_path):
    """The study's storage and the run stores gone, only W&B's offline runs left; the report runs
    as `venv/bin/python -m analysis.report` with a PATH that does not hold the environment's bin."""
    alone = tmp_path / "alone"
    shutil.copytree(bayes_sweep, alone)
    (alone / "optuna.db").unlink()
    for store in alone.glob("*/*/run.json"):
        store.unlink()
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "analysis.report", str(alone)], capture_output=True, text=True,
                         env=env, cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "read from its runs" in (alone / "report" / "report.md").read_text()
    write_report(bayes_sweep, tmp_path / "stored")
    for figure in ("history", "intermediate", "importances"):
        ours = pd.read_csv(alone / "report" / f"study_{figure}.csv").drop(columns="run_dir", errors="ignore")
        theirs = pd.read_csv(tmp_path / "stored" / f"study_{figure}.csv").drop(columns="run_dir", errors="ignore")
        pd.testing.assert_frame_equal(ours, theirs, check_exact=False, rtol=1e-9)


@pytest.mark.slow
def test_a_pareto_study_reports_its_front(smoke_sweep, tmp_path):
    sweep = smoke_sweep(tmp_path / "pareto", "sweep=bayes_pareto", "hydra.sweeper.n_trials=4")
    stored = study.open_study(sweep)
    text = write_report(sweep, tmp_path / "report").read_text()
    assert "### Pareto front" in text
    front = pd.read_csv(tmp_path / "report" / "study_pareto.csv")
    assert set(front.number[front.on_front]) == {t.number for t in stored.best_trials}
    assert list(front.columns[2:4]) == ["eval/gold_pass@1", "eval/kl_to_initial"]


# -- analysis.compare ---------------------------------------------------------------------------------
def _grid(finals: dict, learning_rate: float):
    """A finished grid as the loaders give it: grpo.beta x seeds, each run's final pass@1 given."""
    runs, history = [], []
    for (beta, seed), final in finals.items():
        run = f"b{beta}-s{seed}"
        runs.append({"run": run, "stage": "grpo", "group": "g", "wandb_id": run, "status": "finished",
                     "grpo.beta": beta, "grpo.learning_rate": learning_rate, "seed": seed})
        history += [{"run": run, "stage": "grpo", "step": 0, "eval/gold_pass@1": 0.1},
                    {"run": run, "stage": "grpo", "step": 10, "eval/gold_pass@1": final}]
    return Sweep(pd.DataFrame(runs), pd.DataFrame(history), pd.DataFrame())


def test_compare_keeps_arms_apart_and_tests_each_difference_over_seeds():
    before = _grid({(0.0, 0): 0.20, (0.0, 1): 0.22, (0.0, 2): 0.24, (0.1, 0): 0.30, (0.1, 1): 0.31, (0.1, 2): 0.29},
                   learning_rate=1e-4)
    after = _grid({(0.0, 0): 0.40, (0.0, 1): 0.41, (0.0, 2): 0.45, (0.1, 0): 0.30, (0.1, 1): 0.28, (0.1, 2): 0.33},
                  learning_rate=3e-4)
    sweeps = {"before": before, "after": after}
    assert compare.changed_keys(sweeps).to_dict("records") == [
        {"key": "grpo.learning_rate", "before": "0.0001", "after": "0.0003"}]
    table = compare.compare(sweeps).set_index("grpo.beta")
    assert list(table.index) == ["0", "0.1"]
    assert table.loc["0", "after - before"] == pytest.approx(0.20)
    assert table.loc["0.1", "after - before"] == pytest.approx(0.0033333, abs=1e-6)
    # the sweeps share seeds 0-2: paired, a t-test on the seeds' differences (no per-prompt results here)
    expected = stats.ttest_rel([0.40, 0.41, 0.45], [0.20, 0.22, 0.24]).pvalue
    assert table["after: paired"].all() and table.loc["0", "after: p"] == pytest.approx(expected)
    assert table.loc["0", "after: p_holm"] == pytest.approx(min(1, 2 * expected))
    assert list(table["after: verdict"]) == ["resolved", "not resolved"]
    unpaired = compare.compare({"before": before, "after": _grid({(0.0, 5): 0.4, (0.0, 6): 0.41, (0.0, 7): 0.45},
                                                                  learning_rate=3e-4)})
    welch = stats.ttest_ind([0.40, 0.41, 0.45], [0.20, 0.22, 0.24], equal_var=False).pvalue
    assert not unpaired["after: paired"].iloc[0] and unpaired["after: p"].iloc[0] == pytest.approx(welch)
    assert table.loc["0", "before"].startswith("0.220 [") and table.loc["0", "before"].endswith("(3)")


@pytest.mark.slow
def test_compare_runs_on_real_sweeps_from_the_command_line(small_sweep, tmp_path):
    out = tmp_path / "compare.md"
    result = subprocess.run([sys.executable, "-m", "analysis.compare", str(small_sweep), str(small_sweep),
                             "--out", str(out)], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert result.returncode == 0, result.stderr[-2000:]
    text = out.read_text()
    assert "nothing but what they swept" in text and "| task.reward" in text and "grpo.beta" in text


def test_compare_meets_a_sweep_that_held_a_key_fixed_at_its_value_never_pooling_the_others():
    baseline = _grid({(0.0, 0): 0.20, (0.0, 1): 0.22, (0.0, 2): 0.24}, learning_rate=1e-4)  # swept only seeds
    beta = _grid({(0.0, 0): 0.30, (0.0, 1): 0.31, (0.0, 2): 0.35, (0.1, 0): 0.50, (0.1, 1): 0.52, (0.1, 2): 0.51},
                 learning_rate=1e-4)
    table = compare.compare({"baseline": baseline, "beta": beta}).set_index("grpo.beta")
    assert list(table.index) == ["0", "0.1"]
    assert table.loc["0", "beta - baseline"] == pytest.approx(0.10)  # beta=0 against beta=0, not a pool
    assert pd.isna(table.loc["0.1", "baseline"]) and pd.isna(table.loc["0.1", "beta - baseline"])
    assert list(table["beta: verdict"]) == ["resolved", "no baseline arm"]  # the family: the one shared arm
    assert table.loc["0.1", "beta"].startswith("0.510 [")
