"""analysis.power: the planning table from a pilot's paired spread."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from analysis.contrast import Spread
from analysis.power import power_table


def _pilot(seeds, rng):
    rows = []
    for seed in range(seeds):
        difficulty = rng.uniform(0, 1, 80)  # the held-out prompts, shared by both arms of a seed
        for arm, level in (("a", 0.3), ("b", 0.38)):
            result = (difficulty < level + rng.normal(0, 0.03)).astype(float)
            rows.append({"arm": arm, "seed": seed, "final": result.mean(), "final_per_prompt": list(result)})
    return pd.DataFrame(rows)


def test_the_planning_table_is_the_pilots_spread_at_each_seed_count():
    table = _pilot(4, np.random.default_rng(2))
    result = power_table(table, ["arm"], seeds=(3, 10), effects=(0.05, 1e-6)).iloc[0]
    a, b = (np.array(table[table.arm == arm].final_per_prompt.tolist()) for arm in "ab")
    spread = Spread.of(b - a)
    assert result.contrast == "b - a" and result.pilot_seeds == 4 and result.observed == pytest.approx(spread.mean)
    assert result.detectable_at_3 > result.detectable_at_10 == pytest.approx(spread.detectable(10))
    assert result.seeds_for_observed == spread.seeds_to_resolve(spread.mean)
    assert result["seeds_for_1e-06"] == np.inf  # below what the shared prompts let any number of seeds see
    assert 0 < result.prompt_share < 1
    assert power_table(_pilot(1, np.random.default_rng(2)), ["arm"]).empty  # one seed: no spread to plan with


def test_the_command_line_refuses_a_missing_pilot_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "analysis.power", str(tmp_path / "nowhere")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip() == f"analysis.power: {tmp_path / 'nowhere'}: no such sweep directory"
