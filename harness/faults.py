"""What stops a run: numerical faults (training on NaN or inf would only make garbage look like
results), and a sweep trial that another job now owns."""

from __future__ import annotations

import torch


class NonFiniteLoss(RuntimeError):
    pass


class TrialSuperseded(RuntimeError):
    """A job whose trial is over before the job is: its sweeper died while it was queued, or its
    beats stalled while it trained, and the trial was failed and retried. It must not train on,
    nor write to the run directory its retry resumes (not even a stage's closing summary)."""


class TrialStopped(Exception):
    """Raised by a sweeper's evaluation hook (the final stage's on_eval) to stop its trial there: its
    pruner's verdict. The run ends `pruned`; harness knows no sweeper's library."""


def require_finite(value: torch.Tensor, what: str) -> None:
    if not torch.isfinite(value):
        raise NonFiniteLoss(f"{what} is {value.item()}")
