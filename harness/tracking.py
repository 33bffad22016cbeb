"""W&B and the local run store (harness.store) behind one small interface, one tracker per stage.

The local store keeps, in plain files that pandas reads, everything W&B is sent. A W&B failure is
reported once and never stops training. A resumed stage keeps what was logged up to its checkpoint
and goes on in the same W&B run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from harness.store import COMPLETIONS, CONFIG, EVALS, HISTORY, METRICS, ROW_TABLES, RUN, StageFiles, read_json, \
    read_jsonl, write_json

log = logging.getLogger(__name__)


class StageTracker:
    def __init__(self, stage_dir: Path, *, stage: str, run_name: str, config: dict, tracking_cfg, wandb_dir: Path,
                 resume_step: Optional[int] = None):
        """A fresh stage clears what an earlier attempt logged; `resume_step` keeps it up to that step."""
        self.files = StageFiles(stage_dir, resume_step)
        self.dir = self.files.dir
        self.stage = stage
        self.completions_every = tracking_cfg.log_completions_every
        self._table = None
        wandb_id = read_json(self.dir / RUN).get("wandb_id") if resume_step is not None else None
        write_json(self.dir / CONFIG, config)
        self.wandb = self._start_wandb(tracking_cfg, run_name, config, wandb_dir, wandb_id)
        if resume_step is not None:
            self._to_wandb(self._replay)
        write_json(self.dir / RUN, {
            "stage": stage, "run_name": run_name, "group": tracking_cfg.group or run_name,
            "wandb_id": self.wandb.id if self.wandb else None,
            "wandb_dir": str(Path(self.wandb.dir).parent) if self.wandb else None,
        })

    def _start_wandb(self, tracking_cfg, run_name: str, config: dict, wandb_dir: Path, wandb_id: Optional[str]):
        if tracking_cfg.mode == "disabled":
            return None
        try:
            import wandb

            wandb_dir.mkdir(parents=True, exist_ok=True)
            return wandb.init(
                project=tracking_cfg.project, entity=tracking_cfg.entity, group=tracking_cfg.group or run_name,
                job_type=self.stage, name=f"{run_name}/{self.stage}", config=config, mode=tracking_cfg.mode,
                dir=str(wandb_dir), reinit="create_new", settings=wandb.Settings(console="off", silent=True),
                id=wandb_id, resume="allow" if wandb_id else None,
            )
        except Exception as error:  # no account, no network, a broken install: train anyway
            log.warning("W&B did not start (%s); the local run store still records everything", error)
            return None

    def _to_wandb(self, fn, *args, **kwargs) -> None:
        if self.wandb is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as error:
            log.warning("W&B failed (%s); continuing with the local run store only", error)
            self.wandb = None

    def _replay(self, tables: bool = False) -> None:
        """Send a resumed W&B run the steps it lacks: a kill loses what W&B had buffered, and an
        offline run starts empty. The local store has them all. `tables`: the sample tables too
        (an adopted stage's W&B run starts with nothing)."""
        rows: dict[int, dict] = {}
        for name in HISTORY:
            for row in read_jsonl(self.dir / name):
                rows.setdefault(row["step"], {}).update(row)
        completions: dict[int, list] = {}
        if tables:
            for row in read_jsonl(self.dir / COMPLETIONS):
                completions.setdefault(row.pop("step"), []).append(row)
            for name in ROW_TABLES:
                if rows_of_table := read_jsonl(self.dir / f"{name}.jsonl"):
                    self._log_rows_wandb(name, rows_of_table)
        for step in sorted(s for s in rows.keys() | completions.keys() if s >= self.wandb.step):
            if step in rows:
                self._log_wandb(step, {k: v for k, v in rows[step].items() if k != "step"})
            if step in completions:
                self._log_table(step, completions[step])

    def log(self, step: int, metrics: dict, file: str = METRICS) -> None:
        """Scalars, and lists (W&B histograms), at a step."""
        self.files.append(file, {"step": step, **metrics})
        self._to_wandb(self._log_wandb, step, metrics)

    def log_eval(self, step: int, metrics: dict) -> None:
        self.log(step, metrics, file=EVALS)

    def _log_wandb(self, step: int, metrics: dict) -> None:
        import wandb

        self.wandb.log({k: wandb.Histogram(v) if isinstance(v, list) else v for k, v in metrics.items()}, step=step)

    def completions_due(self, step: int) -> bool:
        """A GRPO stage logs its completions at its first step, then every tracking.log_completions_every."""
        return step == 1 or step % self.completions_every == 0

    def log_completions(self, step: int, rows: list[dict]) -> None:
        """Sample completions; W&B gets an incremental table, so every logged step stays visible."""
        for row in rows:
            self.files.append(COMPLETIONS, {"step": step, **row})
        self._to_wandb(self._log_table, step, rows)

    def log_rows(self, name: str, rows: list[dict]) -> None:
        """A table logged once: <name>.jsonl here, a W&B Table there."""
        for row in rows:
            self.files.append(f"{name}.jsonl", row)
        self._to_wandb(self._log_rows_wandb, name, rows)

    def _log_rows_wandb(self, name: str, rows: list[dict]) -> None:
        import wandb

        self.wandb.log({name: wandb.Table(columns=list(rows[0]), data=[list(r.values()) for r in rows])}, commit=False)

    def _log_table(self, step: int, rows: list[dict]) -> None:
        import wandb

        if self._table is None:
            self._table = wandb.Table(columns=["step", *rows[0]], log_mode="INCREMENTAL")
        for row in rows:
            self._table.add_data(step, *row.values())
        self.wandb.log({"completions": self._table}, step=step)

    def adopt(self, made_by: str, summary: dict, until_step: Optional[int] = None, status: str = "finished") -> None:
        """Finish a stage whose logs another run made (the stage cache copied them here): W&B
        gets every step of them and their tables, and both summaries say whose they are (its run
        directory). `until_step`: the stage stopped there (a pruned trial), its later steps dropped."""
        if until_step is not None:
            self.files.keep_until(until_step)
        self._to_wandb(self._replay, tables=True)
        self.finish({**summary, "reused_from": made_by}, status)

    def finish(self, summary: dict, status: str = "finished") -> None:
        summary = scalars(summary)
        self.files.finish({"status": status, **summary})
        self._to_wandb(self._finish_wandb, summary, status)

    def _finish_wandb(self, summary: dict, status: str) -> None:
        self.wandb.summary.update({**summary, "status": status})  # "stopped (TrialPruned)" tells pruned apart
        self.wandb.finish(exit_code=0 if status == "finished" else 1)


class SilentTracker:
    """The tracker of a rank other than 0, which writes nothing: rank 0 logs the batch-wide values every rank
    computed (harness.distributed), to one W&B run per stage."""

    def __init__(self, stage_dir: Path, stage: str, completions_every: int):
        self.dir, self.stage, self.completions_every = Path(stage_dir), stage, completions_every

    completions_due = StageTracker.completions_due

    def log(self, *args, **kwargs) -> None:
        """Rank 0 logs it."""

    log_eval = log_completions = log_rows = adopt = finish = log


def scalars(metrics: dict) -> dict:
    """The metrics a summary holds: per-prompt lists stay in the step logs."""
    return {k: v for k, v in metrics.items() if not isinstance(v, list)}

