"""Sweeps: presets compose, and a failing job never loses the others."""

import json
import os
import subprocess
import sys

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_module

PRESETS = ["num_generations", "beta", "epsilon", "num_iterations", "cold_start_size", "loss_type"]


@pytest.mark.parametrize("preset", PRESETS)
def test_sweep_presets_sweep_their_knob_over_seeds(preset):
    with initialize_config_module(config_module="harness.conf", version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=[f"sweep={preset}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params["seed"] == "0,1,2" and len(params) >= 2


def test_grid_with_failing_jobs_finishes_the_others_and_records_why(model_cache, tmp_path):
    # seed_max_rounds=1 verifies about 20 examples: 4 is enough, 40 is not (a runtime failure),
    # 500 exceeds pipeline.seed_size (a config error).
    command = [sys.executable, "-m", "harness.train", "-m", "experiment=smoke", "pipeline.seed_max_rounds=1",
               "sft.cold_start_size=4,40,500", "tracking=disabled", f"hydra.sweep.dir={tmp_path}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "COLDCLIMB_CACHE": str(model_cache)})
    assert result.returncode == 0, result.stderr[-3000:]
    status = [json.loads((tmp_path / str(job) / "status.json").read_text()) for job in range(3)]
    assert status[0]["status"] == "finished" and 0 <= status[0]["objective"] <= 1
    assert (tmp_path / "0" / "grpo" / "checkpoint").is_dir()
    assert status[1]["status"] == "failed" and "seed set holds only" in status[1]["error"]
    assert status[2]["status"] == "failed" and status[2]["error"].startswith("config error: sft.cold_start_size=500")
