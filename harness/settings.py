"""`setting`: a config field declared once, with its default, its help and its bounds (harness.config and
the config dataclasses of the packages, such as harness.tasks.config and sweeps.settings, declare theirs
with it); `settings` walks a dataclass's keys and `check_settings` checks every value against its bounds."""

from __future__ import annotations

from dataclasses import Field, field, fields, is_dataclass
from functools import reduce
from typing import Any, Iterator

from omegaconf import OmegaConf


class ConfigError(ValueError):
    """A bad value, as one line naming the key and the value."""

    def __init__(self, key: str, value, requirement: str):
        super().__init__(f"{key}={value!r}: {requirement}")


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


def settings(node: type, prefix: str = "") -> Iterator[tuple[str, Field]]:
    """Every leaf key of a config dataclass (`grpo.beta`, ...) and its field, in declaration order."""
    for f in fields(node):
        if is_dataclass(f.default_factory):
            yield from settings(f.default_factory, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f


def check_settings(config, prefix: str = "") -> None:
    """Every value of a config dataclass against the bounds declared beside it; ConfigError on the first bad one."""
    for key, f in settings(type(config)):
        check_bounds(prefix + key, reduce(getattr, key.split("."), config), f.metadata)


def check_bounds(key: str, value, bounds) -> None:
    """One value against its field's declared bounds."""
    if value is None:
        return
    low, high, choices = bounds["low"], bounds["high"], bounds["choices"]
    if choices is not None:
        for item in value if isinstance(value, list) else [value]:
            if item not in choices:
                raise ConfigError(key, item, f"must be one of {', '.join(choices)}")
    if bounds["positive"] and not 0 < value < float("inf"):  # NaN fails too
        raise ConfigError(key, value, "must be a positive number")
    if bounds["unit"] and not 0 < value <= 1:
        raise ConfigError(key, value, "must be in (0, 1]")
    if low is not None and high is not None:
        if not low <= value <= high:
            raise ConfigError(key, value, f"must be between {low} and {high}")
    elif low is not None and value < low:
        raise ConfigError(key, value, f"must be at least {low}")
    elif high is not None and value > high:
        raise ConfigError(key, value, f"must be at most {high}")
