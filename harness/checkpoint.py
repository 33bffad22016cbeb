"""Checkpoints: resuming a killed run where it stopped, and what a finished run keeps.

A GRPO stage (explore or grpo) saves its whole training state every `checkpoint.every` steps:
  <stage>/resume/step-<N>/    the policy's weights (save_pretrained) and trainer_state.pt: optimizer,
                              torch and problem-stream RNG states, step, tokens seen, last eval
  <stage>/resume/latest.json  names the newest complete step-<N>. It is written last and
                              atomically, so a kill at any moment leaves a whole one to resume
Only the newest is kept, and the folder goes when the stage ends (its final checkpoint takes
over); a failed stage keeps it, its last good state. `checkpoint.keep` then decides which
stages' final checkpoints a finished run keeps.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from harness.distributed import is_writer, load_optimizer_state, optimizer_state, whole_state
from harness.store import RESUME, write_json


@dataclass
class Resumed:
    step: int
    model_dir: Path
    state: dict  # optimizer, RNG states and the loop's counters


class StageCheckpoints:
    def __init__(self, stage_dir: Path, every: int, problems, resume: bool = False):
        """`resume`: the stage goes on from its newest saved state, if it has one (`resumed`)."""
        self.dir = Path(stage_dir) / RESUME
        self.every, self.problems = every, problems
        self.resumed = self.latest() if resume else None

    def latest(self) -> Optional[Resumed]:
        pointer = self.dir / "latest.json"
        if not pointer.exists():
            return None
        info = json.loads(pointer.read_text())
        folder = self.dir / info["dir"]
        return Resumed(info["step"], folder, torch.load(folder / "trainer_state.pt", weights_only=True))

    def due(self, step: int, last_step: int) -> bool:
        """At every `every` steps, except the last: the stage's final checkpoint covers that one."""
        return self.every > 0 and step % self.every == 0 and step < last_step

    def save(self, step: int, policy, optimizer, **counters) -> None:
        """The state gathered whole (every rank calls this: under FSDP each holds a shard), written once by rank 0
        and read by every rank: with rollout.group_seeds all ranks hold the same random streams."""
        weights, optimizer_whole = whole_state(policy), optimizer_state(policy, optimizer)
        if not is_writer():
            return
        folder = self.dir / f"step-{step:06d}"
        shutil.rmtree(folder, ignore_errors=True)  # half written before a kill
        policy.save_pretrained(folder, state_dict=weights)  # the tokenizer is the stage start's
        torch.save({"optimizer": optimizer_whole, "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                    "problems_rng": self.problems.rng.getstate(), "step": step, **counters},
                   folder / "trainer_state.pt")
        write_json(self.dir / "latest.json", {"step": step, "dir": folder.name})
        for old in self.dir.glob("step-*"):
            if old != folder:
                shutil.rmtree(old)

    def restore(self, policy, optimizer) -> dict:
        """Put the optimizer and every random stream back as they were at the resumed state; the loop's counters."""
        state = self.resumed.state
        load_optimizer_state(policy, optimizer, state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.problems.rng.setstate(state["problems_rng"])
        return {k: v for k, v in state.items() if k not in ("optimizer", "torch_rng", "cuda_rng", "problems_rng")}

    def clear(self) -> None:
        if not is_writer():
            return
        (self.dir / "latest.json").unlink(missing_ok=True)  # first: a kill mid-way leaves nothing to resume from
        shutil.rmtree(self.dir, ignore_errors=True)


def prune_finished(run_dir: Path, stages: list[str], keep: str) -> None:
    """Delete what a finished run no longer needs: resume states, and the stage checkpoints that
    `checkpoint.keep` does not keep."""
    if not is_writer():
        return
    for stage in stages:
        StageCheckpoints(Path(run_dir) / stage, 0, None).clear()
    saved = [Path(run_dir) / stage / "checkpoint" for stage in stages]
    saved = [path for path in saved if path.is_dir()]
    for path in {"all": [], "final": saved[:-1], "none": saved}[keep]:
        shutil.rmtree(path)
