"""What a Bayesian study costs, run the naive way and the harness's best way.

    python bench/sweep_cost.py [--trials 30] [--ways naive,best] [--pruner successive_halving] [key=value ...]

One TPE study (sampler seed 0) over five GRPO knobs, on the default recipe unless overridden:

  naive  serial (basic launcher, torch on every core), no stage cache, no pruning
  best   a fresh stage cache (explore, seed and SFT computed once), the pruner, two joblib jobs
         on one thread each, slots refilled as trials end

Reports each way's wall-clock, trials finished and pruned, GRPO steps spent, when each trial ended,
and the best held-out pass@1 with its binomial standard error (over eval.num_prompts x eval.num_samples completions;
it ignores that samples of one prompt are correlated, so it is a floor).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import optuna
from timing import machine, timed_train  # bench/timing.py: this script's folder is on sys.path

SPACE = ["grpo.num_generations=choice(4,8,16)", "grpo.beta=choice(0.0,0.01,0.04)",
         "grpo.epsilon_high=interval(0.2,0.4)",  # acts only when num_iterations > 1
         "grpo.num_iterations=choice(1,2,4)", "grpo.learning_rate=tag(log,interval(5e-5,1e-3))"]
WAYS = {"naive": ["cache.stages=false"],
        "best": ["threads=1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2"]}


def run_way(way: str, scratch: Path, trials: int, pruner: str, extra: list[str]) -> dict:
    sweep_dir = scratch / way
    seconds = timed_train(["-m", "hydra/sweeper=coldclimb_optuna", *SPACE,
                           f"hydra.sweeper.n_trials={trials}", f"hydra.sweeper.pruner={pruner}", "tracking=disabled",
                           f"cache.dir={scratch / 'stages'}", f"hydra.sweep.dir={sweep_dir}", *WAYS[way], *extra])
    study = optuna.load_study(study_name="coldclimb", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    best = study.best_trial
    began = min(t.datetime_start for t in study.trials)
    ends = sorted((t.datetime_complete - began).total_seconds() for t in study.trials if t.datetime_complete)
    config = json.loads(next(Path(best.user_attrs["run_dir"]).glob("grpo/config.json")).read_text())
    completions = config["eval"]["num_prompts"] * config["eval"]["num_samples"]
    return {"way": way, "seconds": round(seconds, 1), "trials": len(study.trials),
            "pruned": sum(t.state.name == "PRUNED" for t in study.trials),
            "failed": sum(t.state.name == "FAIL" for t in study.trials),
            "grpo_steps": sum(t.user_attrs.get("cost/grpo/steps", 0) for t in study.trials  # computed, not reused
                              if not t.user_attrs.get("cost/grpo/reused")),
            "grpo_reused": sum(bool(t.user_attrs.get("cost/grpo/reused")) for t in study.trials),
            "best_pass@1": round(best.value, 4),
            "best_se": round(math.sqrt(best.value * (1 - best.value) / completions), 4), "best_params": best.params,
            # seconds from the first trial's start to each trial's end: what a shorter study would have taken
            "trial_ends": [round(end, 1) for end in ends]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--ways", default="naive,best")
    parser.add_argument("--pruner", default="successive_halving", help="the best way's pruner")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    results = {}
    for way in args.ways.split(","):
        with tempfile.TemporaryDirectory() as scratch:  # a fresh stage cache for each way
            results[way] = run_way(way, Path(scratch), args.trials, args.pruner if way == "best" else "none",
                                   args.overrides)
        print(json.dumps(results[way]), flush=True)
    report = {"machine": machine(), "trials": args.trials}
    if {"naive", "best"} <= results.keys():
        naive, best = results["naive"], results["best"]
        report["wall_clock_naive_over_best"] = round(naive["seconds"] / best["seconds"], 2)
        report["best_within_one_se_of_naive"] = best["best_pass@1"] >= naive["best_pass@1"] - naive["best_se"]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
