"""A sweep's raw results, written beside its report so that a reader can recompute its held-out
intervals and contrasts without the run stores:

  runs.csv        one row per stage-run: run, stage, status, seed, the swept keys, and its last
                  held-out metrics
  per_prompt.csv  every held-out evaluation's result per prompt: run, stage, step, metric, prompt
                  (its index in the held-out set, the same in every run of one eval.seed), value
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.load import ID_COLUMNS, Sweep, has_per_prompt
from harness.store import PER_PROMPT


def per_prompt(history: pd.DataFrame) -> pd.DataFrame:
    """The per-prompt lists of `history`, one row per (run, stage, step, metric, prompt)."""
    columns = [c for c in history if c.endswith(PER_PROMPT)]
    if not columns:  # W&B alone keeps a histogram of them, an old run store none
        return pd.DataFrame(columns=["run", "stage", "step", "metric", "prompt", "value"])
    long = history.melt(id_vars=["run", "stage", "step"], value_vars=columns, var_name="metric")
    long = long[has_per_prompt(long.value)]
    long = long.assign(metric=long.metric.str.removesuffix(PER_PROMPT),
                       prompt=long.value.map(lambda v: list(range(len(v))))).explode(["value", "prompt"])
    return long[["run", "stage", "step", "metric", "prompt", "value"]].sort_values(
        ["run", "stage", "step", "metric", "prompt"], ignore_index=True)


def write_raw(sweep: Sweep, keys: list[str], out: Path) -> list[str]:
    """runs.csv and per_prompt.csv in `out`; the report's lines that point to them."""
    shown = [*ID_COLUMNS, *[c for c in ["seed", *keys] if c in sweep.runs],
             *sorted(c for c in sweep.runs if c.startswith("eval/"))]
    sweep.runs[shown].to_csv(out / "runs.csv", index=False)
    per_prompt(sweep.history).to_csv(out / "per_prompt.csv", index=False)
    return ["## Raw data\n", "Every stage-run with its swept keys and last held-out metrics in `runs.csv`; every "
            "held-out evaluation per prompt in `per_prompt.csv` (prompt: its index in the held-out set, shared by "
            "the runs of one eval.seed). The held-out intervals and contrasts above can be recomputed from "
            "them; the live-group and over-optimisation figures read the training history too (the run stores).\n"]
