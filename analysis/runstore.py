"""Read a run directory's local store (written by harness.tracking) into tidy DataFrames."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.tracking import read_jsonl

STAGE_FILES = {"metrics": "metrics.jsonl", "evals": "eval.jsonl", "completions": "completions.jsonl"}


@dataclass
class RunData:
    summary: dict  # the pipeline summary: held-out metrics by stage
    stages: dict  # stage -> {"run": run.json, "summary": summary.json}
    metrics: pd.DataFrame  # one row per (stage, step)
    evals: pd.DataFrame  # one row per (stage, eval step)
    completions: pd.DataFrame  # one row per logged completion


def _read_jsonl(path: Path, stage: str) -> pd.DataFrame:
    rows = read_jsonl(path)
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    frame.insert(0, "stage", stage)
    return frame


def load_run(run_dir) -> RunData:
    run_dir = Path(run_dir)
    stage_dirs = [d for d in sorted(run_dir.iterdir()) if (d / "run.json").exists()]
    frames: dict[str, list[pd.DataFrame]] = {name: [] for name in STAGE_FILES}
    stages = {}
    for stage_dir in stage_dirs:
        stage = stage_dir.name
        summary_path = stage_dir / "summary.json"
        stages[stage] = {"run": json.loads((stage_dir / "run.json").read_text()),
                         "summary": json.loads(summary_path.read_text()) if summary_path.exists() else {}}
        for name, filename in STAGE_FILES.items():
            frames[name].append(_read_jsonl(stage_dir / filename, stage))
    summary_path = run_dir / "summary.json"
    return RunData(
        summary=json.loads(summary_path.read_text()) if summary_path.exists() else {},
        stages=stages,
        **{name: pd.concat(parts, ignore_index=True) if parts else pd.DataFrame() for name, parts in frames.items()},
    )
