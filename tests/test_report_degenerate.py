"""A degenerate sweep gets a report, with a reason wherever a section has nothing to show."""

import json
import shutil

import pytest

from analysis.report import write_report

pytestmark = pytest.mark.slow  # they cut down the session's small sweep (its 8 runs are the cost)

REASONS = {  # case -> what its report must say
    "one arm": ["## The one arm", "varied nothing but the seed"],
    "one seed": ["rest on fewer than 3 seeds", "one seed: none"],
    "all pruned": ["(8 pruned)", "No GRPO run finished", "none finished with a KL"],
    "all failed": ["(8 stopped)", "No GRPO run finished", "none finished with a KL"],
    "one finished": ["(7 stopped)", "No contrast of grpo.beta: fewer than two of its arms",
                     "No contrast of task.reward"],
}


def _degenerate(small_sweep, root, case):
    """The small sweep (reward gold/proxy x beta 0/0.1 x seeds 0/1) cut down to `case`."""
    sweep = shutil.copytree(small_sweep, root / "sweep", ignore=shutil.ignore_patterns("wandb"))
    for k, job in enumerate(sorted(p for p in sweep.iterdir() if p.is_dir())):
        config = json.loads((job / "grpo" / "config.json").read_text())
        kept = {"one arm": config["task"]["reward"] == "gold" and config["grpo"]["beta"] == 0,
                "one seed": config["seed"] == 0}.get(case, True)
        if not kept:
            shutil.rmtree(job)
        elif case in ("all pruned", "all failed") or (case == "one finished" and k):
            summary = job / "grpo" / "summary.json"
            status = "stopped (TrialPruned)" if case == "all pruned" else "stopped (RuntimeError: out of memory)"
            summary.write_text(json.dumps({**json.loads(summary.read_text()), "status": status}))
    return sweep


@pytest.mark.parametrize("case", sorted(REASONS))
def test_a_degenerate_sweep_gets_a_report_with_its_reasons(small_sweep, tmp_path, case):
    text = write_report(_degenerate(small_sweep, tmp_path, case), tmp_path / "report").read_text()
    for reason in REASONS[case]:
        assert reason in text, (case, reason)
    assert (tmp_path / "report" / "runs.csv").exists() and "## Raw data" in text
