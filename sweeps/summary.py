"""The end of every sweep, grid or Optuna: one table of its jobs, the best first, and where their runs are.

A Hydra callback: it reads each job's status.json (written by harness.train) and the overrides
it ran with, and writes summary.csv and summary.md in the sweep directory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import yaml
from hydra.experimental.callback import Callback

from harness.store import GOLD, STATUS

log = logging.getLogger(__name__)


def sweep_table(sweep_dir) -> pd.DataFrame:
    """One row per job: the values it was given, its status, final metrics and run directory."""
    rows = []
    for status_file in sorted(Path(sweep_dir).glob(f"*/{STATUS}")):
        job_dir = status_file.parent
        overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
        given = dict(o.split("=", 1) for o in overrides if "=" in o and not o.startswith("trial."))
        rows.append({"job": job_dir.name, **given, **json.loads(status_file.read_text()), "run_dir": str(job_dir)})
    table = pd.DataFrame(rows)
    if GOLD in table:
        table = table.sort_values(GOLD, ascending=False, na_position="last", kind="stable")
    return table.reset_index(drop=True)


class SweepSummary(Callback):
    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        table = sweep_table(sweep_dir)
        if table.empty:
            return
        table.to_csv(sweep_dir / "summary.csv", index=False)
        counts = table.status.value_counts().to_dict()
        (sweep_dir / "summary.md").write_text(
            f"# Sweep {sweep_dir.name}\n\n{len(table)} jobs: {counts}\n\n```\n{table.to_string(index=False)}\n```\n")
        best = table.head(3).drop(columns=["run_dir"]).to_string(index=False)
        log.info("sweep of %d jobs %s; best first:\n%s\nsummary: %s", len(table), counts, best,
                 sweep_dir / "summary.md")
