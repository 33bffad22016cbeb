"""Search spaces in Hydra's own sweep grammar, turned into Optuna distributions.

    grpo.beta: tag(log, interval(1e-3, 0.1))    -> FloatDistribution(1e-3, 0.1, log=True)
    grpo.num_generations: choice(2, 4, 8, 16)   -> CategoricalDistribution
    sft.cold_start_size: range(100, 1100, 200)  -> IntDistribution(100, 900, step=200)
"""

from __future__ import annotations

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution


def distributions(params: dict[str, str]) -> dict[str, BaseDistribution]:
    parsed = OverridesParser.create().parse_overrides([f"{key}={value}" for key, value in params.items()])
    return {override.key_or_group: to_distribution(override.key_or_group, override.value()) for override in parsed}


def to_distribution(key: str, sweep) -> BaseDistribution:
    if isinstance(sweep, ChoiceSweep):
        return CategoricalDistribution(list(sweep.list))
    if isinstance(sweep, RangeSweep):
        if all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step)):
            return IntDistribution(sweep.start, sweep.stop - sweep.step, step=sweep.step)  # range() excludes stop
        raise ValueError(f"{key}: range() takes whole numbers; use interval() for a float range")
    if isinstance(sweep, IntervalSweep):
        return FloatDistribution(sweep.start, sweep.end, log="log" in sweep.tags)
    raise ValueError(f"{key}={sweep!r}: give choice(...), range(...) or interval(...)")


def grid(space: dict[str, BaseDistribution]) -> dict[str, list]:
    """Every value of each dimension, for Optuna's GridSampler (categorical and stepped ints only)."""
    values = {}
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            values[key] = list(dist.choices)
        elif isinstance(dist, IntDistribution):
            values[key] = list(range(dist.low, dist.high + 1, dist.step))
        else:
            raise ValueError(f"{key}: a grid needs choice(...) or range(...), not an interval")
    return values


def split_overrides(params: dict[str, str], arguments: list[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """The search space (the sweeper's params, and each sweep given on the command line) and the overrides
    every trial shares."""
    space, fixed = distributions(params), []
    for override in OverridesParser.create().parse_overrides(arguments):
        if override.is_sweep_override():
            space[override.key_or_group] = to_distribution(override.key_or_group, override.value())
        else:
            fixed.append(override.input_line)
    return space, fixed
