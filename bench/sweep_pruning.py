"""The same Bayesian sweep with and without pruning: GRPO steps spent, and the best objective reached.

    python bench/sweep_pruning.py [--trials 10] [--steps 20] [key=value ...]

GRPO straight on the tiny base, TPE over the learning rate (wide enough that many trials are
bad), held-out gold pass@1 reported every 4 steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna


def run_sweep(sweep_dir: Path, pruner: str, trials: int, steps: int, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "harness.train", "-m", "hydra/sweeper=coldclimb_optuna", "pipeline.stages=[grpo]",
               f"grpo.steps={steps}", "eval.eval_every=4", "tracking=disabled",
               "grpo.learning_rate=tag(log,interval(1e-5,3e-2))", f"hydra.sweeper.n_trials={trials}",
               f"hydra.sweeper.pruner={pruner}", f"hydra.sweep.dir={sweep_dir}", *extra]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    study = optuna.load_study(study_name="coldclimb", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    grpo_steps = sum(len((Path(t.user_attrs["run_dir"]) / "grpo" / "metrics.jsonl").read_text().splitlines())
                     for t in study.trials)
    return {"pruner": pruner, "seconds": round(seconds, 1), "grpo_steps": grpo_steps,
            "pruned": sum(t.state.name == "PRUNED" for t in study.trials),
            "best_gold_pass@1": round(study.best_value, 4)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        results = [run_sweep(Path(scratch) / pruner, pruner, args.trials, args.steps, args.overrides)
                   for pruner in ("none", "median")]
    none, median = results
    print(json.dumps({"results": results, "steps_ratio_median_over_none": round(median["grpo_steps"] /
                      none["grpo_steps"], 3), "machine": f"{platform.machine()}, {os.cpu_count()} cores"}))


if __name__ == "__main__":
    main()
