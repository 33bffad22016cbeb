"""Analysis: the fits of Gao et al. on synthetic data, the best-of-n estimator, seed intervals, and the
loaders reading one run the same from the run store and from W&B (live groups: tests/test_live_groups.py)."""

import itertools
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import ablation, from_local, from_wandb_offline, overopt
from harness.store import GOLD, stage_status


# -- over-optimisation fits -------------------------------------------------------------------------
@pytest.mark.parametrize("form, alpha, beta", [("rl", 0.30, 0.12), ("rl", 0.05, 0.4), ("bon", 0.5, 0.2),
                                              ("bon", 1.2, 0.05)])
def test_fits_recover_known_coefficients_within_one_percent(form, alpha, beta):
    rng = np.random.default_rng(0)
    d = np.linspace(0.05, 4.0, 40)
    gain = overopt.FORMS[form](d, alpha, beta) + rng.normal(0, 1e-4, d.size)
    fitted = overopt.fit(form, d, gain)
    assert fitted.alpha == pytest.approx(alpha, rel=0.01)
    assert fitted.beta == pytest.approx(beta, rel=0.01)
    assert fitted.r2 > 0.999
    grid = np.linspace(1e-3, 50, 200001)  # the analytic peak is where the fitted curve is highest
    assert fitted.d_star == pytest.approx(grid[np.argmax(fitted(grid))], rel=1e-3)


def test_a_fit_of_noise_has_a_low_r2_and_too_few_points_are_refused():
    rng = np.random.default_rng(0)
    assert overopt.fit("rl", np.linspace(0.1, 3, 500), rng.normal(0, 1, 500)).r2 < 0.05
    with pytest.raises(ValueError, match="at least 3 points"):
        overopt.fit("bon", [0.1, 0.2], [0.0, 0.1])


def test_best_of_n_estimator_equals_enumerating_every_subset_with_ties():
    rng = np.random.default_rng(0)
    N = 7
    samples = pd.DataFrame({"problem": np.repeat([0, 1, 2], N),
                            "proxy": rng.choice([0.25, 0.5, 0.75, 1.0], 3 * N),  # many ties
                            "gold": rng.random(3 * N)})
    curve = overopt.best_of_n(samples, ns=[1, 2, 3, 5, 7])
    for n in [1, 2, 3, 5, 7]:
        expected = []
        for _, group in samples.groupby("problem"):
            picks = []
            for subset in itertools.combinations(range(N), n):
                chosen = group.iloc[list(subset)]
                best = chosen[chosen.proxy == chosen.proxy.max()]
                picks.append(best.gold.mean())  # a random tie-break: each tied sample equally likely
            expected.append(np.mean(picks))
        row = curve[curve.n == n].iloc[0]
        assert row.gold == pytest.approx(np.mean(expected), abs=1e-12)
        assert row.d == pytest.approx(np.sqrt(row.kl)) and row.kl <= overopt.kl_best_of_n_bound(n)
    assert curve.gold_gain.iloc[0] == 0 and curve.proxy.is_monotonic_increasing


def test_turning_points_find_where_gold_peaked_and_what_followed():
    points = pd.DataFrame({"run": ["a"] * 4 + ["b"] * 4, "seed": [0] * 4 + [1] * 4, "grpo.beta": [0.0] * 4 + [0.1] * 4,
                           "step": [0, 10, 20, 30] * 2, "d": [0.0, 1.0, 2.0, 3.0] * 2,
                           "gold_gain": [0, 0.1, 0.05, -0.2] + [0, 0.05, 0.1, 0.12],
                           "proxy_gain": [0, 0.1, 0.2, 0.3] + [0, 0.05, 0.1, 0.11]})
    turns = overopt.turning_points(points.sample(frac=1, random_state=0), "grpo.beta").set_index("run")
    assert turns.loc["a", ["grpo.beta", "peak_step", "peak_d", "final_d"]].tolist() == [0.0, 10, 1.0, 3.0]
    assert turns.loc["a", ["gold_after_peak", "proxy_after_peak"]].tolist() == pytest.approx([-0.3, 0.2])  # hacked
    assert turns.loc["b", ["peak_step", "gold_after_peak", "proxy_after_peak"]].tolist() == [30, 0, 0]  # still rising


def test_a_sweep_over_reward_model_size_and_beta_fits_each_pair_and_ranks_best_of_n_by_each_size():
    """Runs differ in N (their reward model, so their proxy) and in beta: fits per (N, beta), ordered
    as the numbers are, and a best-of-n curve per N, never one pooled over reward models."""
    runs, history, samples = [], [], []
    for size, beta, seed in itertools.product([20000, 2000, 6000], [0.0, 0.1], [0, 1]):
        run = f"n{size}-b{beta}-s{seed}"
        runs.append({"run": run, "stage": "grpo", "status": "finished", "task.reward": "learned", "seed": seed,
                     "grpo.beta": beta, "reward_model.train_size": size})  # sorted, as the loader has them
        for step in range(4):
            history.append({"run": run, "stage": "grpo", "step": step, overopt.KL: step / 2,
                            overopt.GOLD: 0.2 + 0.01 * step, overopt.PROXY: 0.3 + 0.02 * step})
        for problem, i in itertools.product(range(3), range(4)):  # a bigger N's proxy ranks gold higher
            samples.append({"run": run, "stage": "grpo", "problem": problem, "gold": float(i == 3),
                            "proxy": i / 4 if size == 20000 else (3 - i) / 4})
    from analysis.load import Sweep
    proxy = overopt.proxy_runs(Sweep(pd.DataFrame(runs), pd.DataFrame(history), pd.DataFrame(samples)))
    assert proxy.by == overopt.SETTING
    assert list(proxy.points[overopt.SETTING].cat.categories) == [
        f"reward_model.train_size={n}, grpo.beta={b}" for n in (2000, 6000, 20000) for b in ("0", "0.1")]
    curves = {start: curve.set_index("n") for start, curve in overopt.bon_curves(proxy.best_of_n)}
    assert list(curves) == [f"reward_model.train_size={n}" for n in (2000, 6000, 20000)]
    assert curves["reward_model.train_size=20000"].gold[4] == 1 and curves["reward_model.train_size=2000"].gold[4] == 0
    table = overopt.fit_table(proxy.points, proxy.by, proxy.best_of_n)
    assert (table.policy == "rl").sum() == 6 * 2 and (table.policy == "best-of-n").sum() == 3 * 2
    turns = overopt.turning_points(proxy.points, proxy.by)
    assert list(turns[overopt.SETTING].drop_duplicates()) == list(proxy.points[overopt.SETTING].cat.categories)
    overopt.plot_overoptimisation(proxy.points, proxy.by, proxy.best_of_n)


# -- seeds ----------------------------------------------------------------------------------------
def test_summarise_gives_an_interval_over_seeds_that_a_pass_rate_never_leaves():
    table = pd.DataFrame({"grpo.beta": [0.0] * 3 + [0.1] * 2 + [1.0], "seed": [0, 1, 2, 0, 1, 0],
                          "final": [0.2, 0.3, 0.4, 0.0, 0.05, 0.9]})
    summary = ablation.summarise(table, "grpo.beta").set_index("grpo.beta")
    low, high = summary.loc[0.0, ["low", "high"]]
    t_low, t_high = stats.t.interval(0.95, 2, loc=0.3, scale=stats.sem([0.2, 0.3, 0.4]))
    assert summary.loc[0.0, ["mean", "runs"]].tolist() == pytest.approx([0.3, 3])
    assert high - low == pytest.approx(t_high - t_low, rel=0.25)  # as wide as 3 seeds' t-interval, not narrower
    assert 0 < low < 0.3 < high < 1
    t_low = stats.t.interval(0.95, 1, loc=0.025, scale=stats.sem([0.0, 0.05]))[0]
    assert t_low < 0 < summary.loc[0.1, "low"] < 0.025  # where a t-interval leaves [0, 1], this one stays in
    assert np.isnan(summary.loc[1.0, "low"]) and summary.loc[1.0, "mean"] == 0.9  # one seed, nothing inside it


def test_a_rate_measured_at_zero_has_zero_as_its_lower_bound():
    """Three seeds that never pass any of 200 prompts: the interval holds the measured 0 (an interval
    built around half an observation would start above it) and reaches only a little above it."""
    low, high = ablation.pass_rate_interval([[0.0] * 200] * 3)
    assert low == 0 and 0 < high < 0.02
    low, high = ablation.pass_rate_interval([[1.0] * 200] * 3)
    assert high == 1 and 0.98 < low < 1


def test_a_setting_proposed_again_at_the_same_seed_counts_once():
    table = pd.DataFrame({"arm": ["a"] * 4, "seed": [0, 0, 0, 1], "final": [0.2, 0.2, 0.2, 0.4]})
    summary = ablation.summarise(table, "arm").iloc[0]
    assert summary["runs"] == 2 and summary["mean"] == pytest.approx(0.3)


def test_the_interval_counts_the_held_out_prompts_as_well_as_the_seeds():
    rng = np.random.default_rng(0)
    prompts = rng.binomial(1, 0.3, 200).astype(float).tolist()
    table = pd.DataFrame({"arm": ["a"] * 3 + ["b"], "seed": [0, 1, 2, 0], "final": [np.mean(prompts)] * 4,
                          "final_per_prompt": [prompts] * 4})  # three seeds that agree exactly, and one seed
    summary = ablation.summarise(table, "arm").set_index("arm")
    se = np.std(prompts, ddof=1) / np.sqrt(200)  # the prompts' own sampling error
    for arm in "ab":  # a t-interval over the agreeing seeds would have no width; one seed would have none at all
        low, high = summary.loc[arm, ["low", "high"]]
        assert high - low == pytest.approx(2 * 1.97 * se, rel=0.05) and 0 <= low < high <= 1
    uneven = table.assign(final=[0.35, 0.37, 0.33, 0.36], final_per_prompt=[prompts, prompts, prompts[:100], prompts])
    assert ablation.summarise(uneven, "arm").set_index("arm").loc["a", "low"] > 0  # seeds alone, no crash


def test_a_run_gives_the_per_prompt_results_of_its_final_and_its_best_evaluation():
    runs = pd.DataFrame({"run": ["r"], "stage": ["grpo"], "status": ["finished"], "seed": [0]})
    history = pd.DataFrame({"run": "r", "stage": "grpo", "step": [0, 5, 10], GOLD: [0.25, 0.75, 0.5],
                            f"{GOLD}/per_prompt": [[0.0, 0.5], [1.0, 0.5], [0.5, 0.5]]})
    row = ablation.per_run(runs, history).iloc[0]
    assert row.final == 0.5 and row.final_per_prompt == [0.5, 0.5]
    assert row.best == 0.75 and row.best_per_prompt == [1.0, 0.5]


def test_summary_table_keeps_other_swept_settings_apart():
    table = pd.DataFrame({"grpo.beta": [0.0, 0.0, 0.1, 0.1] * 2, "task.reward": ["gold"] * 4 + ["proxy"] * 4,
                          "final": [0.2, 0.4, 0.5, 0.7, 0.1, 0.1, 0.3, 0.3], "best": [0.3, 0.5, 0.6, 0.8] * 2})
    summary = ablation.summary_table(table, "grpo.beta", ["task.reward"]).set_index(["grpo.beta", "task.reward"])
    assert list(summary.columns[:2]) == ["mean_final", "low_final"] and len(summary) == 4
    assert summary.loc[(0.1, "gold"), ["mean_final", "mean_best", "runs"]].tolist() == pytest.approx([0.6, 0.7, 2])
    assert summary.loc[(0.1, "proxy"), "mean_final"] == pytest.approx(0.3)
    assert np.isnan(summary.loc[(0.1, "proxy"), "low_final"])  # two equal means: no spread to measure


def _epsilon_sweep(statuses=("finished",) * 8):
    """sweep=epsilon in miniature: epsilon 0.1, 0.2 x epsilon_high null (NaN once loaded), 0.28 x seeds 0, 1."""
    arms = [(eps, high, seed) for seed in (0, 1) for eps in (0.1, 0.2) for high in (None, 0.28)]
    runs = pd.DataFrame([{"run": f"r{i}", "stage": "grpo", "status": status, "seed": seed, "grpo.epsilon": eps,
                          "grpo.epsilon_high": high}
                         for i, ((eps, high, seed), status) in enumerate(zip(arms, statuses))])
    runs["grpo.epsilon_high"] = runs["grpo.epsilon_high"].astype(float)
    history = pd.DataFrame([{"run": f"r{i}", "stage": "grpo", "step": step, "eval/gold_pass@1": value}
                            for i, (_, high, _) in enumerate(arms)
                            for step, value in ((2, 0.1), (4, 0.5 if high is None else 0.9))])
    return runs, history


def test_a_null_setting_is_its_own_arm_never_pooled_nor_dropped():
    runs, history = _epsilon_sweep()
    assert ablation.swept(runs) == ["grpo.epsilon", "grpo.epsilon_high"]
    table = ablation.per_run(runs, history)
    summary = ablation.summary_table(table, "grpo.epsilon_high", ["grpo.epsilon"])
    assert [str(v) for v in summary["grpo.epsilon_high"]] == ["0.28", "null", "0.28", "null"]
    assert summary.set_index(["grpo.epsilon_high", "grpo.epsilon"]).loc[("null", 0.2), "mean_final"] == 0.5
    assert (summary.runs == 2).all()
    by_epsilon = ablation.summary_table(table, "grpo.epsilon", ["grpo.epsilon_high"])
    assert len(by_epsilon) == 4 and set(by_epsilon.mean_final) == {0.5, 0.9}  # null kept apart as a hue too
    ablation.plot_ablation(table, "grpo.epsilon_high", hue=["grpo.epsilon"])
    ablation.plot_learning_curves(runs, history, "grpo.epsilon_high", hue=["grpo.epsilon"])


def test_pruned_and_stopped_runs_have_no_final_value_and_are_listed_apart():
    runs, history = _epsilon_sweep(["finished"] * 5 + ["pruned", "stopped", "running"])
    table = ablation.per_run(runs, history)
    assert sorted(table.run) == ["r0", "r1", "r2", "r3", "r4"]
    failed_before_grpo = pd.DataFrame([{"run": "r8", "stage": "sft", "status": "stopped", "seed": 2,
                                        "grpo.epsilon": 0.1, "grpo.epsilon_high": 0.28}])
    left_out = ablation.unfinished(pd.concat([runs, failed_before_grpo]), history)
    assert left_out[["run", "stage", "status"]].values.tolist() == [
        ["r5", "grpo", "pruned"], ["r6", "grpo", "stopped"], ["r7", "grpo", "running"], ["r8", "sft", "stopped"]]
    assert left_out.step.tolist()[:3] == [4, 4, 4] and np.isnan(left_out.step.iloc[3])  # never evaluated


def test_a_run_killed_between_stages_is_listed_at_the_last_stage_it_finished_in_its_own_recipe():
    r1 = ["explore", "seed", "sft", "rl", "mine", "sft_final", "grpo"]  # pipeline=r1's
    runs = pd.DataFrame([{"run": "a", "stage": stage, "status": "finished", "pipeline.stages": r1}
                         for stage in ("explore", "seed", "sft", "mine", "rl")])  # as a loader may order them
    history = pd.DataFrame(columns=["run", "stage", "step", "eval/gold_pass@1"])
    assert ablation.unfinished(runs, history).stage.tolist() == ["mine"]
    assert ablation.stage_rank("reward_model", "finished", ["sft", "grpo"]) < ablation.stage_rank(
        "grpo", "finished", ["sft", "grpo"])
    assert ablation.stage_rank("sft", "stopped", r1) > ablation.stage_rank("mine", "finished", r1)


def test_settings_that_change_no_number_are_not_swept_and_whole_numbers_stay_whole():
    runs, history = _epsilon_sweep()
    runs = runs.assign(resume=[False] * 7 + [True], **{"grpo.num_generations": [4.0, np.nan] * 4})
    assert ablation.swept(runs) == ["grpo.epsilon", "grpo.epsilon_high", "grpo.num_generations"]
    assert ablation.arms(ablation.per_run(runs, history)["grpo.num_generations"]) == ["4", "null"]


# -- loaders -----------------------------------------------------------------------------------------
def test_run_store_and_offline_wandb_load_the_same_frames(smoke_run):
    local, offline = from_local(smoke_run), from_wandb_offline(smoke_run)
    pd.testing.assert_frame_equal(local.runs, offline.runs, check_dtype=False)
    # W&B keeps a histogram of each evaluation's per-prompt results; the run store keeps the results.
    per_prompt = [c for c in local.history if c.endswith("/per_prompt")]
    assert per_prompt == ["eval/gold_pass@1/per_prompt"] and not any(c.endswith("/per_prompt") for c in offline.history)
    pd.testing.assert_frame_equal(local.history.drop(columns=per_prompt), offline.history, check_dtype=False)
    runs = local.runs.set_index("stage")
    assert sorted(runs.index) == ["explore", "grpo", "seed", "sft"]
    assert (runs.run == "smoke-test").all() and (runs.status == "finished").all()
    assert runs.loc["grpo", "grpo.num_generations"] == 8 and runs.loc["grpo", "task.reward"] == "gold"
    grpo = local.history[local.history.stage == "grpo"].set_index("step")
    assert grpo.index.tolist() == [0, 1, 2, 3, 4]  # step 0: the evaluation of the start
    assert grpo["eval/gold_pass@1"].notna().tolist() == [True, False, True, False, True]
    assert grpo.loc[1:, "reward"].notna().all()
    # the run's last values are what it finished with
    assert runs.loc["grpo", "eval/gold_pass@1"] == pytest.approx(local.history.query("stage == 'grpo'")
                                                                  ["eval/gold_pass@1"].dropna().iloc[-1])
    assert len(local.best_of_n) == 16 * 16 and set(local.best_of_n.stage) == {"grpo"}


def test_a_stage_stopped_by_the_pruner_loads_as_pruned():
    assert [stage_status(s) for s in ("finished", None, "stopped (TrialPruned)", "stopped (RuntimeError)")] == [
        "finished", "running", "pruned", "stopped"]


def test_reading_a_sweep_loads_no_torch():
    """A notebook or a machine without the trainer's stack reads sweeps: analysis pulls in no torch."""
    code = ("import sys, analysis, analysis.report, analysis.live, analysis.overopt, analysis.ablation, "
            "analysis.cold_start, analysis.compare, analysis.study; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


# -- presentation ------------------------------------------------------------------------------------
@pytest.mark.parametrize("values, scale", [([0.0, 0.001, 0.01, 0.1], "symlog"), ([1e-5, 1e-4, 1e-3], "log"),
                                           ([0.0, 0.01, 0.04], "linear"), ([0, 10, 30, 100, 300, 1000], "symlog"),
                                           ([2, 4, 8], "linear")])
def test_a_key_spanning_decades_gets_a_log_axis_and_symlog_when_zero_is_among_its_values(values, scale):
    import matplotlib.pyplot as plt

    _, ax = plt.subplots()
    ablation.scale_axis(ax, values)
    assert ax.get_xscale() == scale
    plt.close("all")


def test_arms_of_different_cost_are_also_drawn_against_training_time():
    runs = pd.DataFrame([{"run": f"{k}{seed}", "stage": "grpo", "status": "finished", "seed": seed,
                          "grpo.num_generations": k} for k in (4, 16) for seed in (0, 1)])
    history = pd.DataFrame([{"run": f"{k}{seed}", "stage": "grpo", "step": step, "step_time": k / 4,
                             GOLD: 0.1 * step} for k in (4, 16) for seed in (0, 1) for step in (1, 2, 3)])
    assert ablation.costs_differ(runs, history, "grpo.num_generations")
    assert not ablation.costs_differ(runs, history.assign(step_time=1.0), "grpo.num_generations")
    figure = ablation.plot_learning_curves(runs, history, "grpo.num_generations", x="train_seconds")
    ends = sorted(line.get_xdata()[-1] for line in figure.axes[0].lines if line.get_linewidth() == 2)
    assert ends == [3.0, 12.0]  # three steps of 1 s and of 4 s


def test_a_named_arm_stands_for_the_keys_it_sets_but_not_for_a_key_swept_across_arms():
    arms = {"1 naive": {"grpo.loss_type": "grpo", "grpo.epsilon_high": None},
            "2 + clip-higher": {"grpo.loss_type": "grpo", "grpo.epsilon_high": 0.28},
            "3 + token-level": {"grpo.loss_type": "dapo", "grpo.epsilon_high": 0.28}}
    runs = pd.DataFrame([{"run": f"{arm}-{seed}-{lr}", "stage": "grpo", "arm": arm, "seed": seed,
                          "grpo.learning_rate": lr, **keys}
                         for arm, keys in arms.items() for seed in (0, 1) for lr in (1e-4, 3e-4)])
    assert sorted(ablation.swept(runs)) == ["arm", "grpo.learning_rate"]
    assert sorted(ablation.swept(runs.drop(columns="arm"))) == ["grpo.epsilon_high", "grpo.learning_rate",
                                                                "grpo.loss_type"]


def test_the_raw_per_prompt_table_is_every_list_in_long_form_and_empty_without_any():
    from analysis.raw import per_prompt

    history = pd.DataFrame({"run": ["a", "a"], "stage": ["grpo", "grpo"], "step": [0, 10],
                            f"{GOLD}/per_prompt": [[0.0, 0.5], np.nan], GOLD: [0.25, 0.5]})
    table = per_prompt(history)
    assert table.to_dict("list") == {"run": ["a", "a"], "stage": ["grpo", "grpo"], "step": [0, 0],
                                     "metric": [GOLD, GOLD], "prompt": [0, 1], "value": [0.0, 0.5]}
    assert per_prompt(history.drop(columns=f"{GOLD}/per_prompt")).empty  # W&B alone keeps a histogram


def test_runs_that_measured_no_kl_give_no_over_optimisation_points_not_a_crash():
    """eval.kl_to_initial=false logs no KL: the report of such a sweep crashed in rl_points."""
    runs = pd.DataFrame({"run": ["a"], "stage": ["grpo"], "status": ["finished"], "grpo.beta": [0.0]})
    history = pd.DataFrame({"run": ["a", "a"], "stage": ["grpo", "grpo"], "step": [0, 10],
                            GOLD: [0.1, 0.2], "eval/proxy_reward": [np.nan, np.nan]})
    assert overopt.rl_points(runs, history).empty
