"""The same Bayesian sweep under each pruner: GRPO steps spent, and the best objective reached.

    python bench/sweep_pruning.py [--trials 10] [--steps 20] [--seeds 0,1,2]
                                  [--pruners none,median,successive_halving,hyperband] [key=value ...]

GRPO straight on the tiny base, TPE over the learning rate (wide enough that many trials are
bad), held-out gold pass@1 reported every 4 steps. Each sampler seed is one sweep per pruner; a
pruner pays when its steps are a fraction of no pruning's for the same best objective.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import optuna
from timing import machine, timed_train  # bench/timing.py: this script's folder is on sys.path


def run_sweep(sweep_dir: Path, pruner: str, seed: int, trials: int, steps: int, extra: list[str]) -> dict:
    seconds = timed_train(["-m", "hydra/sweeper=coldclimb_optuna", "pipeline.stages=[grpo]", f"grpo.steps={steps}",
                           "eval.eval_every=4", "tracking=disabled",
                           "cache.stages=false",  # a stage reused from another sweep would cost no time
                           "grpo.learning_rate=tag(log,interval(1e-5,3e-2))", f"hydra.sweeper.n_trials={trials}",
                           f"hydra.sweeper.pruner={pruner}", f"hydra.sweeper.seed={seed}",
                           f"hydra.sweep.dir={sweep_dir}", *extra])
    study = optuna.load_study(study_name="coldclimb", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    grpo_steps = sum(len((Path(t.user_attrs["run_dir"]) / "grpo" / "metrics.jsonl").read_text().splitlines())
                     for t in study.trials)
    return {"pruner": pruner, "sampler_seed": seed, "seconds": round(seconds, 1), "grpo_steps": grpo_steps,
            "pruned": sum(t.state.name == "PRUNED" for t in study.trials),
            "best_gold_pass@1": round(study.best_value, 4), "pruner_settings": study.user_attrs["pruner"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seeds", default="0,1,2", help="sampler seeds: one sweep per pruner each")
    parser.add_argument("--pruners", default="none,median,successive_halving,hyperband")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    pruners, seeds = args.pruners.split(","), [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        results = []
        for seed in seeds:
            for pruner in pruners:
                results.append(run_sweep(Path(scratch) / f"{pruner}-{seed}", pruner, seed, args.trials, args.steps,
                                         args.overrides))
                print(json.dumps(results[-1]), flush=True)
    totals = {pruner: {"grpo_steps": sum(r["grpo_steps"] for r in results if r["pruner"] == pruner),
                       "mean_best": round(statistics.mean(r["best_gold_pass@1"] for r in results
                                                          if r["pruner"] == pruner), 4)} for pruner in pruners}
    if "none" in totals:
        for pruner in pruners:
            totals[pruner]["steps_vs_none"] = round(totals[pruner]["grpo_steps"] / totals["none"]["grpo_steps"], 3)
    print(json.dumps({"totals": totals, "machine": machine()}))


if __name__ == "__main__":
    main()
