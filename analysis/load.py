"""Load a sweep into two tidy frames with one schema, whatever it was read from.

  runs     one row per stage-run (a W&B run): run, stage, group, wandb_id, status, the
           flattened config (`grpo.beta`, `seed`, ...) and the last value of every metric
  history  one row per (run, stage, step): training metrics and held-out evaluations
           (`eval/...`) of that step side by side, as W&B shows them

Three sources, one reader each, all meeting in `StageRun` and `frames`:
  from_local(path)          run directories under a sweep (or one run): the local run store
  from_wandb_offline(path)  offline W&B run directories, read by wandb's own reader
  from_wandb_api(project)   a W&B project online, through wandb.Api (thin; needs an account)
`load_sweep(path)` picks the first that applies.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from harness.store import (BEST_OF_N, CONFIG, HISTORY, PER_PROMPT, RUN, SUMMARY, read_json, read_jsonl, stage_dirs,
                           stage_status)

ID_COLUMNS = ["run", "stage", "group", "wandb_id", "status"]
HISTORY_INDEX = ["run", "stage", "step"]
# Config keys with no group, hence no dot.
TOP_LEVEL_CONFIG = ("seed", "start_seed", "device", "threads", "arm", "run_name", "output_dir")
NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "infinity": math.inf, "-infinity": -math.inf}


@dataclass
class StageRun:
    """What every source knows about one stage of one run."""
    run: str
    stage: str
    group: Optional[str]
    wandb_id: Optional[str]
    status: str  # finished | pruned | stopped (failed or killed) | running
    config: dict
    history: list[dict] = field(default_factory=list)  # {"step": N, metric: value, ...}


@dataclass
class Sweep:
    runs: pd.DataFrame
    history: pd.DataFrame
    best_of_n: pd.DataFrame  # samples of each GRPO stage's initial policy (local store only)


def config_columns(runs: pd.DataFrame) -> list[str]:
    """The runs frame's config columns (`grpo.beta`, `seed`, ...); metric names hold no dot."""
    return [c for c in runs.columns if "." in c or c in TOP_LEVEL_CONFIG]


def _scalar(value):
    """A loggable number, or None for what is not one (histograms, tables, text)."""
    if isinstance(value, str):
        return NON_FINITE.get(value.lower())
    if isinstance(value, bool):
        return float(value)
    return value if isinstance(value, (int, float)) else None


def has_per_prompt(values: pd.Series) -> pd.Series:
    """Which entries of a per-prompt column hold results (a non-empty list; NaN where none were logged)."""
    return values.map(lambda v: isinstance(v, list) and len(v) > 0).astype(bool)


def _history_row(step: int, item: dict) -> dict:
    row = {"step": int(step)}
    for key, value in item.items():
        if key.startswith("eval/") and "." not in key and isinstance(value, list):  # per-prompt results, whole
            row[key] = value
            continue
        number = _scalar(value)
        # W&B flattens media (tables, histograms) into dotted keys; metric names hold no dot.
        if not key.startswith("_") and "." not in key and key != "step" and number is not None:
            row[key] = number
    return row


def frames(stage_runs: list[StageRun]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, history) from any source's StageRuns: the one place the schema is made."""
    history_parts, run_rows = [], []
    for sr in stage_runs:
        steps = pd.DataFrame(sr.history, columns=None if sr.history else ["step"])
        steps = steps.groupby("step", as_index=False).last() if len(steps) else steps
        last = {k: steps[k].dropna().iloc[-1] for k in steps.columns  # the last value of each scalar
                if k != "step" and not k.endswith(PER_PROMPT) and steps[k].notna().any()}
        config = pd.json_normalize({k: v for k, v in sr.config.items() if not k.startswith("_")}, sep=".")
        run_rows.append({"run": sr.run, "stage": sr.stage, "group": sr.group, "wandb_id": sr.wandb_id,
                         "status": sr.status, **config.iloc[0].to_dict(), **last})
        steps.insert(0, "stage", sr.stage)
        steps.insert(0, "run", sr.run)
        history_parts.append(steps)
    runs = pd.DataFrame(run_rows)
    history = pd.concat(history_parts, ignore_index=True) if history_parts else pd.DataFrame(columns=HISTORY_INDEX)
    runs = runs[ID_COLUMNS + sorted(set(runs.columns) - set(ID_COLUMNS))] if len(runs) else runs
    history = history[HISTORY_INDEX + sorted(set(history.columns) - set(HISTORY_INDEX))]
    return (runs.sort_values(["run", "stage"], ignore_index=True),
            history.sort_values(HISTORY_INDEX, ignore_index=True))


# -- the local run store -----------------------------------------------------------------------
def local_stage_run(stage_dir: Path) -> StageRun:
    info, config = read_json(stage_dir / RUN), read_json(stage_dir / CONFIG)
    status = read_json(stage_dir / SUMMARY, {"status": "running"}).get("status")
    history = [_history_row(r["step"], r) for name in HISTORY for r in read_jsonl(stage_dir / name)]
    return StageRun(run=config.get("run_name") or info["run_name"], stage=info["stage"], group=info["group"],
                    wandb_id=info["wandb_id"], status=stage_status(status), config=config, history=history)


def _local_best_of_n(stage_dirs: list[Path]) -> pd.DataFrame:
    parts = []
    for stage_dir in stage_dirs:
        rows = read_jsonl(stage_dir / f"{BEST_OF_N}.jsonl")
        if rows:
            config = read_json(stage_dir / CONFIG)
            parts.append(pd.DataFrame(rows).assign(run=config["run_name"], stage=stage_dir.name))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def from_local(path) -> Sweep:
    found = stage_dirs(Path(path))
    runs, history = frames([local_stage_run(d) for d in found])
    return Sweep(runs, history, _local_best_of_n(found))


# -- W&B, offline run directories ------------------------------------------------------------
def wandb_records(run_dir) -> list[dict]:
    """The records of an offline W&B run (offline-run-*), read by wandb's own reader."""
    # This interpreter's wandb, not whichever `wandb` is first on PATH (another venv's, or none in a notebook kernel).
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir)],
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"wandb leet inspect {run_dir}: {out.stderr.strip().splitlines()[-1:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def offline_stage_run(run_dir) -> StageRun:
    header, config, history, exit_code, recorded = {}, {}, [], None, None
    for record in wandb_records(run_dir):
        kind = record["type"]
        if kind == "run":
            header = record["run"]
            config.update(record["run"].get("config", {}).get("update", {}))
        elif kind == "config":
            config.update(record["config"].get("update", {}))
        elif kind == "history":
            item = record["history"]["item"]
            history.append(_history_row(item["_step"], item))
        elif kind == "summary":
            recorded = record["summary"].get("update", {}).get("status", recorded)
        elif kind == "exit":
            exit_code = record["exit"].get("exit_code", 0)
    status = "running" if exit_code is None else stage_status(recorded or ("finished" if exit_code == 0 else "stopped"))
    return StageRun(run=config.get("run_name") or header.get("display_name", "").split("/")[0],
                    stage=header.get("job_type"), group=header.get("run_group"), wandb_id=header.get("run_id"),
                    status=status, config=config, history=history)


def merge_attempts(stage_runs: list[StageRun]) -> list[StageRun]:
    """Offline, W&B writes a directory per attempt of a resumed stage, all under one run id: one
    run, whose later attempt wins at the steps both logged (`frames` keeps a step's last value)."""
    merged: dict[str, StageRun] = {}
    for sr in stage_runs:
        if sr.wandb_id in merged:
            merged[sr.wandb_id].history += sr.history
            merged[sr.wandb_id].status = sr.status
        else:
            merged[sr.wandb_id] = sr
    return list(merged.values())


def from_wandb_offline(path) -> Sweep:
    run_dirs = sorted(Path(path).glob("**/offline-run-*"))  # their names begin with the time they started
    # A run killed before W&B wrote its header holds nothing; its resumed attempt was sent every step.
    stage_runs = [sr for sr in map(offline_stage_run, run_dirs) if sr.wandb_id is not None]
    runs, history = frames(merge_attempts(stage_runs))
    return Sweep(runs, history, pd.DataFrame())


# -- W&B online ---------------------------------------------------------------------------------
def from_wandb_api(project: str, filters: Optional[dict] = None) -> Sweep:
    """Every run of `entity/project` that matches W&B's MongoDB-style `filters`, e.g.
    {"group": "2026-11-22_10-00-00"} for one sweep or {"config.grpo.beta": 0} for one setting."""
    import wandb

    stage_runs = []
    for run in wandb.Api().runs(project, filters=filters or {}):
        state = "running" if run.state == "running" else stage_status(run.summary.get("status") or (
            "finished" if run.state == "finished" else "stopped"))
        history = [_history_row(row["_step"], row) for row in run.scan_history()]
        stage_runs.append(StageRun(run=run.config.get("run_name") or run.name.split("/")[0], stage=run.job_type,
                                   group=run.group, wandb_id=run.id, status=state, config=dict(run.config),
                                   history=history))
    runs, history = frames(stage_runs)
    return Sweep(runs, history, pd.DataFrame())


def load_sweep(path) -> Sweep:
    """A sweep (or run) directory: its local run store when there is one, else its offline W&B runs."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"sweep directory {path} does not exist")
    if stage_dirs(path):
        return from_local(path)
    if any(path.glob("**/offline-run-*")):
        return from_wandb_offline(path)
    raise FileNotFoundError(f"{path} holds no run store (*/run.json) and no offline W&B run (offline-run-*)")
