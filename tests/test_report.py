"""`python -m analysis.report` on a real small sweep, and the loaders over that whole sweep."""

import os
import subprocess
import sys

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from analysis import ablation, cold_start, contrast, from_local, from_wandb_offline, load_sweep, overopt
from harness.store import GOLD

pytestmark = pytest.mark.slow


def test_the_sweep_loads_the_same_from_its_run_stores_and_its_offline_wandb_runs(small_sweep):
    local, offline = from_local(small_sweep), from_wandb_offline(small_sweep)
    pd.testing.assert_frame_equal(local.runs, offline.runs, check_dtype=False)
    # W&B keeps a histogram of each evaluation's per-prompt results; the run store keeps the results.
    pd.testing.assert_frame_equal(local.history.drop(columns="eval/gold_pass@1/per_prompt"), offline.history,
                                  check_dtype=False)
    grpo = local.runs[local.runs.stage == "grpo"]
    assert len(grpo) == 8 and (grpo.status == "finished").all()
    assert ablation.swept(local.runs) == ["grpo.beta", "task.reward"]
    assert sorted(map(tuple, grpo[["task.reward", "grpo.beta", "seed"]].drop_duplicates().values.tolist())) == sorted(
        (reward, beta, seed) for reward in ("gold", "proxy") for beta in (0.0, 0.1) for seed in (0, 1))


def test_report_writes_every_plot_that_applies_and_the_fits(small_sweep, tmp_path):
    out = tmp_path / "report"
    result = subprocess.run([sys.executable, "-m", "analysis.report", str(small_sweep), "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(out / "report.md")
    pngs = {p.name for p in out.glob("*.png")}
    sweep = load_sweep(small_sweep)
    # Against training time too, for a key whose values differ in it (measured: beta > 0 runs a reference model).
    timed = {f"learning_curves_{key}_seconds.png" for key in ("grpo.beta", "task.reward")
             if ablation.costs_differ(sweep.runs, sweep.history, key)}
    assert pngs == {"ablation_grpo.beta.png", "ablation_task.reward.png", "learning_curves_grpo.beta.png",
                    "learning_curves_task.reward.png", "entropy_grpo.beta.png", "entropy_task.reward.png",
                    "live_groups.png", "overoptimisation.png", *timed}
    for name in pngs:
        height, width, _ = matplotlib.image.imread(out / name).shape
        assert height > 300 and width > 500, name
    report = (out / "report.md").read_text()
    for heading in ["## grpo.beta", "## task.reward", "## Live groups", "## Reward over-optimisation"]:
        assert heading in report
    # the fit table in the report is the one the analysis computes from the sweep
    proxy = overopt.proxy_runs(sweep)
    assert proxy.by == "grpo.beta" and set(proxy.points["task.reward"]) == {"proxy"}
    assert proxy.points.run.nunique() == 4 and proxy.best_of_n is not None
    fits = overopt.fit_table(proxy.points, proxy.by, proxy.best_of_n)
    assert sorted(set(fits.policy)) == ["best-of-n", "rl"] and len(fits) == 2 * 2 + 2
    for r2 in fits.r2:
        assert f"{r2:.4g}" in report
    assert proxy.best_of_n.n.tolist() == [1, 2, 4, 8, 16]  # 16 samples per prompt in the smoke preset
    turns = overopt.turning_points(proxy.points, proxy.by)
    assert len(turns) == 4 and all(f"{v:.4g}" in report for v in turns.gold_after_peak)
    # beta's contrasts, paired by seed within each reward, are the analysis's own
    table = ablation.per_run(sweep.runs, sweep.history)
    contrasts = contrast.arm_contrasts(table, "grpo.beta", ablation.arms(table["grpo.beta"]), ["task.reward"])
    assert len(contrasts) == 2 and contrasts.paired.all() and (contrasts.seeds == 2).all()
    assert all(f"{d:.4g}" in report for d in contrasts.difference) and "Holm" in report
    # the raw data beside the report gives back every run's final value, prompt by prompt
    raw = pd.read_csv(out / "per_prompt.csv")
    grpo = raw[(raw.stage == "grpo") & (raw.metric == GOLD)]
    finals = grpo[grpo.step == grpo.groupby("run").step.transform("max")].groupby("run").value.mean()
    assert finals.sort_index().tolist() == pytest.approx(table.set_index("run").final.sort_index().tolist())
    assert set(pd.read_csv(out / "runs.csv").run) == set(sweep.runs.run)


def test_report_on_a_missing_directory_says_so_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "analysis.report", str(tmp_path / "nowhere")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"analysis.report: sweep directory {tmp_path / 'nowhere'} "
                                                  "does not exist"]


def test_a_cold_start_sweep_with_a_none_arm_gets_its_section(model_cache, tmp_path):
    """The preset's arms at smoke sizes: none (GRPO on the base) against 10 solver demonstrations."""
    sweep_dir, out = tmp_path / "sweep", tmp_path / "report"
    command = [sys.executable, "-m", "harness.train", "-m", "experiment=smoke", "+ablation/cold_start=none,n10",
               "seed=0,1", "tracking=disabled", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "threads=1",
               f"hydra.sweep.dir={sweep_dir}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "COLDCLIMB_CACHE": str(model_cache)})
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = load_sweep(sweep_dir)
    assert sorted(sweep.runs.groupby("run").stage.apply(tuple)) == [("grpo",)] * 2 + [("grpo", "sft")] * 2
    table = cold_start.start_and_end(sweep.runs, sweep.history)
    assert sorted(table[cold_start.EXAMPLES]) == [0, 0, 10, 10]
    sft = sweep.history[sweep.history.stage == "sft"].dropna(subset=[GOLD]).sort_values("step")
    cold_started = table[table[cold_start.EXAMPLES] == 10].set_index("run")
    # GRPO starts from what SFT ended with: the same policy, scored on the same held-out samples
    after_sft = sft.groupby("run")[GOLD].last()[cold_started.index]
    assert cold_started.start.tolist() == pytest.approx(after_sft.tolist())
    result = subprocess.run([sys.executable, "-m", "analysis.report", str(sweep_dir), "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = (out / "report.md").read_text()
    assert "## Cold start" in report and "GRPO steps to reach held-out gold pass@1 >=" in report
    climbs = cold_start.climbs(table)
    assert list(climbs[cold_start.EXAMPLES]) == [0, 10] and (climbs.seeds == 2).all()
    assert climbs.difference.tolist() == pytest.approx((climbs.end - climbs.start).tolist())
    assert "What GRPO added to its start" in report and all(f"{d:.4g}" in report for d in climbs.difference)
    against = cold_start.against_none(table)
    assert list(against.contrast) == ["10 - 0"] and against.paired.all()
    assert {"cold_start.png", "cold_start_live.png"} <= {p.name for p in out.glob("*.png")}
    points = cold_start.live_at_start_points(sweep.runs, sweep.history)
    assert len(points) == 4 and (points.groups == 4 * 4).all()  # smoke: GRPO's 4 steps (of the first 5), 4 groups each


def test_a_table_prints_whole_numbers_as_integers_beside_floats_and_keeps_missing_and_huge_values():
    """tabulate makes an int column float beside float columns (N = 20000 printed as 2e+04)."""
    from analysis.report import _table

    table = _table(pd.DataFrame({"reward_model.train_size": [2000, 20000], "beta": [0.0, 0.04],
                                 "steps": [25.0, 150.0], "peak": [1e20, 1.0], "d": [1.0, np.nan]}))
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    assert rows == [["2000", "0", "25", "1e+20", "1"], ["20000", "0.04", "150", "1", "nan"]]
