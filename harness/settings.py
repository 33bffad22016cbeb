"""`setting`: a config field declared once, with its default, its help and its bounds (harness.config and
the config dataclasses of the packages, such as harness.tasks.config, declare theirs with it)."""

from __future__ import annotations

from dataclasses import field
from typing import Any

from omegaconf import OmegaConf


def setting(default: Any, help: str, *, low=None, high=None, positive: bool = False, unit: bool = False,
            choices: tuple | None = None) -> Any:
    """A config field with its help and bounds: `low`/`high` inclusive, `positive` (0, inf), `unit` (0, 1],
    `choices` (for a list, of each element). None, where a field allows it, is never checked."""
    metadata = {"help": help, "low": low, "high": high, "positive": positive, "unit": unit, "choices": choices}
    if isinstance(default, dict):  # free keys: KEY=VALUE on the command line adds one, without Hydra's "+"
        return field(default_factory=lambda: OmegaConf.create(default, flags={"struct": False}), metadata=metadata)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)
