"""sweeps.resolve on a real grid: seeds added by the sweep's own command, the plan kept, bad asks refused."""

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from analysis import sequential
from analysis.load import load_sweep


def _resolve(sweep, *args):
    return subprocess.run([sys.executable, "-m", "sweeps.resolve", str(sweep), *args],
                          capture_output=True, text=True, timeout=900)


def _two_arms(small_sweep, root):
    """The small sweep's beta-0 runs only: rewards gold and proxy x seeds 0 and 1."""
    sweep = shutil.copytree(small_sweep, root / "sweep", ignore=shutil.ignore_patterns("wandb"))
    for job in (p for p in sweep.iterdir() if p.is_dir()):
        if json.loads((job / "grpo" / "config.json").read_text())["grpo"]["beta"] != 0:
            shutil.rmtree(job)
    recorded = yaml.safe_load((sweep / "multirun.yaml").read_text())  # the command, as if it had swept that
    recorded["hydra"]["overrides"]["task"] = [o.replace("grpo.beta=0,0.1", "grpo.beta=0")
                                              for o in recorded["hydra"]["overrides"]["task"]]
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(recorded))
    return sweep


@pytest.mark.slow  # 2 smoke runs of one more seed: about 20 s
def test_resolve_adds_a_seed_to_every_arm_and_records_what_each_contrast_took(small_sweep, tmp_path):
    sweep = _two_arms(small_sweep, tmp_path)
    unknown = _resolve(sweep, "--max-seeds", "3", "--contrast", "beta up")
    assert unknown.returncode != 0 and unknown.stderr.strip().splitlines()[-1].startswith("--contrast 'beta up'")
    assert "proxy - gold" in unknown.stderr  # the labels it would take are listed

    lonely = shutil.copytree(sweep, tmp_path / "one_arm")
    for job in lonely.glob("*/grpo/summary.json"):  # only gold's runs finished: no two arms to contrast
        if json.loads((job.parent / "config.json").read_text())["task"]["reward"] == "proxy":
            job.write_text(json.dumps({**json.loads(job.read_text()), "status": "stopped (RuntimeError)"}))
    refused = _resolve(lonely, "--max-seeds", "3")
    assert refused.returncode != 0 and refused.stderr.strip().splitlines()[-1].endswith("no two arms share a finished seed: nothing to contrast")
    assert not (lonely / "resolve.json").exists()

    stopped = shutil.copytree(sweep, tmp_path / "stopped")  # the budget ends at the first look: no seed is added
    assert _resolve(stopped, "--max-seeds", "3", "--batch", "1", "--stop").returncode == 0
    kept = json.loads((stopped / "resolve.json").read_text())
    assert kept["stopped_at"] == 1 and [row["look"] for row in kept["result"]] == [1]
    assert not list(stopped.glob("seeds*"))

    result = _resolve(sweep, "--max-seeds", "3", "--batch", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    plan = json.loads((sweep / "resolve.json").read_text())
    assert plan["plan"]["first_seeds"] == 2 and plan["seeds"] == [0, 1, 2]
    assert not any(o.startswith(("seed=", "hydra.sweep.dir")) for o in plan["command"]["task"] + plan["command"]["hydra"])
    runs = load_sweep(sweep).runs
    grpo = runs[runs.stage == "grpo"]
    assert sorted(grpo.seed.unique()) == [0, 1, 2] and grpo.groupby("seed").run.nunique().eq(2).all()
    added = grpo[grpo.seed == 2]
    assert (added.status == "finished").all() and added.run.str.contains("seeds2_").all()

    settled = {row["contrast"]: row for row in json.loads((sweep / "resolve.json").read_text())["result"]}
    assert list(settled) == ["proxy - gold"]
    row = settled["proxy - gold"]  # open after 2 seeds unless resolved there, then looked at again on 3
    assert (row["look"], row["seeds_added_to"], row["seeds"]) in ((1, 2, 2), (2, 3, 3))
    assert row["look"] == 2 or row["verdict"] == "resolved"
    plan = sequential.Plan(**{**json.loads((sweep / "resolve.json").read_text())["plan"], "contrasts": ()})
    assert row["level"] == plan.nominal(row["look"] - 1) and row["holm_level"] == row["level"]  # a family of one
    report = subprocess.run([sys.executable, "-m", "analysis.report", str(sweep), "--out", str(tmp_path / "report")],
                            capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "## Seeds until resolved" in (tmp_path / "report" / "report.md").read_text()

    again = _resolve(sweep, "--max-seeds", "5")
    assert again.returncode != 0 and "changing {'max_seeds': 5}" in again.stderr.strip().splitlines()[-1]
    edited = sweep / "seeds2_0" / "grpo" / "config.json"  # a run of settings no arm had: refused, never pooled
    config = json.loads(edited.read_text())
    edited.write_text(json.dumps({**config, "grpo": {**config["grpo"], "learning_rate": 1e-3}}))
    stray = _resolve(sweep)
    assert stray.returncode != 0 and "no arm's of the plan" in stray.stderr.strip().splitlines()[-1]
