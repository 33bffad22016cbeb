"""How many seeds a sweep needs, answered from a pilot before the big one is launched.

    python -m analysis.power PILOT_DIR [--seeds 3 5 10 20] [--effect 0.05 ...]

For every contrast the report makes (each arm against the first and the one before it, paired by
seed), the pilot's spread of paired differences (seeds, and the held-out prompts they share) gives:
the smallest difference N seeds would resolve with 80% probability at alpha 0.05 (for each N), and
the seeds that would resolve the difference the pilot observed and each `--effect`. `inf`: no number
of seeds would, the held-out prompts' part of the error alone being too wide (evaluate on more
prompts). The spread is measured on the pilot's few seeds, so these are planning numbers, not
promises; the seed counts assume the held-out set stays the same, as eval.seed keeps it, and a
fixed-sample test: a sweep that adds seeds until resolved (sweeps.resolve) tests each look at a
lower level, and needs somewhat more.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from analysis.ablation import arms
from analysis.contrast import Spread, arm_pairs, label, run_differences, shared_seeds, sweep_finals


def power_table(table: pd.DataFrame, keys: list[str], seeds=(3, 5, 10, 20), effects=()) -> pd.DataFrame:
    """One row per paired contrast with at least two shared seeds: its pilot, and what N seeds resolve."""
    rows = []
    for key in keys:
        others = [k for k in keys if k != key]
        for fixed, name, a, b in arm_pairs(table, key, arms(table[key]), others):
            matched = shared_seeds(a, b)
            if matched is None or len(matched[0]) < 2:  # one seed shows no seed-to-seed spread to plan with
                continue
            spread = Spread.of(run_differences(*matched))
            rows.append({"contrast": label(fixed, name), "pilot_seeds": spread.seeds, "observed": spread.mean,
                         "prompt_share": spread.prompt_part / spread.variance() if spread.variance() else 0.0,
                         **{f"detectable_at_{n}": spread.detectable(n) for n in seeds},
                         "seeds_for_observed": spread.seeds_to_resolve(spread.mean),
                         **{f"seeds_for_{e:g}": spread.seeds_to_resolve(e) for e in effects}})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m analysis.power", description=__doc__.split("\n")[0])
    parser.add_argument("pilot", type=Path, help="a pilot grid sweep's directory (at least 2 seeds per arm)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 5, 10, 20], help="seed counts to plan for")
    parser.add_argument("--effect", type=float, nargs="+", default=[], help="differences worth resolving")
    args = parser.parse_args(argv)
    if not args.pilot.exists():
        parser.exit(2, f"analysis.power: {args.pilot}: no such sweep directory\n")
    table, keys = sweep_finals(args.pilot)
    result = power_table(table, keys, args.seeds, args.effect) if len(table) and keys else pd.DataFrame()
    if result.empty:
        parser.exit(1, f"analysis.power: {args.pilot}: no two arms share two finished seeds, so no spread to plan with\n")
    print(result.to_markdown(index=False, floatfmt=".4g"))


if __name__ == "__main__":
    main()
