"""The run store: a directory per run, a directory per stage inside it, in plain files that pandas
reads. Its file names, the metric names other packages read, its writer and its reader, in one place.

  <run>/summary.json         the pipeline's summary: each stage's held-out metrics
  <run>/status.json          how the run ended (finished, failed and why, stopped)
  <run>/<stage>/config.json  resolved config of the whole run
  <run>/<stage>/run.json     stage, run name, group and the W&B run id and directory
  <run>/<stage>/metrics.jsonl      one line per training step
  <run>/<stage>/eval.jsonl         one line per held-out evaluation
  <run>/<stage>/completions.jsonl  sample completions, with the step they were drawn at
  <run>/<stage>/<name>.jsonl       any other table (best_of_n.jsonl: samples of GRPO's start, both rewards)
  <run>/<stage>/summary.json       the stage's final values and status
  <run>/<stage>/resume/            the resume state of a stage cut short

JSON files are replaced atomically; JSONL lines are flushed as they are written, and a last line
cut short by a kill is skipped on reading.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    import pandas as pd

CONFIG, RUN, SUMMARY, STATUS, RESUME = "config.json", "run.json", "summary.json", "status.json", "resume"
METRICS, EVALS, COMPLETIONS = "metrics.jsonl", "eval.jsonl", "completions.jsonl"
HISTORY = (METRICS, EVALS)  # a step's training metrics and its held-out evaluation, side by side
BEST_OF_N = "best_of_n"  # samples of the final GRPO stage's start, both rewards: <stage>/best_of_n.jsonl
ROW_TABLES = (BEST_OF_N,)  # the tables a stage logs once, replayed when a stage is adopted

# The metrics every package reads by name.
GOLD, PROXY, KL = "eval/gold_pass@1", "eval/proxy_reward", "eval/kl_to_initial"
PER_PROMPT = "/per_prompt"  # a suffix: a list (each held-out prompt's result); W&B keeps its histogram
FINAL_STAGE = "grpo"  # the final GRPO stage's name in the default recipe and in r1: what analysis reads unless told


# -- writing -----------------------------------------------------------------------------------
def write_atomic(path: Path, text: str) -> None:
    """Written aside, then renamed over: a kill leaves the old file or the new one, never half of one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, default=str))


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; pandas reads the strings back
    return value


class StageFiles:
    """One stage's directory, as its tracker writes it. A fresh stage clears what an earlier attempt
    logged; `resume_step` keeps it up to that step."""

    def __init__(self, stage_dir: Path, resume_step: Optional[int] = None):
        self.dir = Path(stage_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._handles: dict[str, Any] = {}
        if resume_step is None:  # nothing an earlier attempt logged may pass for this one's
            for path in [*self.dir.glob("*.jsonl"), self.dir / SUMMARY]:
                path.unlink(missing_ok=True)
        else:
            self.keep_until(resume_step)

    def keep_until(self, step: int) -> None:
        """Drop the rows logged after `step`: the resumed stage logs them again."""
        for path in self.dir.glob("*.jsonl"):
            rows = [r for r in read_jsonl(path) if r.get("step", step) <= step]
            write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))

    def append(self, name: str, record: dict) -> None:
        if name not in self._handles:
            self._handles[name] = open(self.dir / name, "a")
        handle = self._handles[name]
        handle.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n")
        handle.flush()

    def finish(self, record: dict) -> None:
        write_json(self.dir / SUMMARY, record)
        for handle in self._handles.values():
            handle.close()


# -- reading -----------------------------------------------------------------------------------
def read_json(path: Path, default: Optional[dict] = None) -> dict:
    return json.loads(path.read_text()) if path.exists() else (default or {})


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSONL file; a last line cut short by a kill is left out."""
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()] if Path(path).exists() else []
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise
    return rows


def stage_dirs(root: Path) -> list[Path]:
    """The stage directories of a run, or of every run of a sweep (one level down, or two: sweeps.resolve)."""
    return sorted({p.parent for pattern in (f"*/{RUN}", f"*/*/{RUN}") for p in Path(root).glob(pattern)})


def stage_status(recorded: str | None) -> str:
    """finished | pruned | stopped | running, from what a tracker's finish recorded (for example
    "stopped (TrialPruned)"); nothing recorded means it is still running, or was killed."""
    if recorded is None or recorded in ("finished", "running"):
        return recorded or "running"
    return "pruned" if "TrialPruned" in recorded else "stopped"


@dataclass
class RunData:
    """One run directory's store, as tidy frames."""
    summary: dict  # the pipeline summary: held-out metrics by stage
    stages: dict  # stage -> {"run": run.json, "summary": summary.json}
    metrics: pd.DataFrame  # one row per (stage, step)
    evals: pd.DataFrame  # one row per (stage, eval step)
    completions: pd.DataFrame  # one row per logged completion


def load_run(run_dir) -> RunData:
    import pandas as pd  # the reader's alone: the trainer writes without it

    run_dir = Path(run_dir)
    files = {"metrics": METRICS, "evals": EVALS, "completions": COMPLETIONS}
    frames: dict[str, list[pd.DataFrame]] = {name: [] for name in files}
    stages = {}
    for stage_dir in [d for d in sorted(run_dir.iterdir()) if (d / RUN).exists()]:
        stages[stage_dir.name] = {"run": read_json(stage_dir / RUN), "summary": read_json(stage_dir / SUMMARY)}
        for name, filename in files.items():
            if rows := read_jsonl(stage_dir / filename):
                frame = pd.DataFrame(rows)
                frame.insert(0, "stage", stage_dir.name)
                frames[name].append(frame)
    return RunData(summary=read_json(run_dir / SUMMARY), stages=stages,
                   **{name: pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
                      for name, parts in frames.items()})
