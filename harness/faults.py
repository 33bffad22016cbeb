"""Numerical faults stop a stage: training on NaN or inf would only make garbage look like results."""

from __future__ import annotations

import torch


class NonFiniteLoss(RuntimeError):
    pass


def require_finite(value: torch.Tensor, what: str) -> None:
    if not torch.isfinite(value):
        raise NonFiniteLoss(f"{what} is {value.item()}")
