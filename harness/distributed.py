"""Data parallelism on torch.distributed: each rank trains on whole groups of the step's batch, DDP
all-reduces the gradients, and the few batch-wide values every rank must agree on are reduced here.

In one process (no process group) the world is one rank and every function here is the identity, so a
single-process run computes exactly what it computed before data parallelism existed.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

T = TypeVar("T")


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if world_size() > 1 else 0


def is_writer() -> bool:
    """Rank 0 alone writes the run's files, its tracker, checkpoints and stage cache; the other ranks read
    what it wrote (after a barrier)."""
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def from_writer(decide: Callable[[], T]) -> T:
    """`decide()` as rank 0 computes it, on every rank: a decision one rank makes (a pruner's, the stage
    cache's) that all must follow. What it raises on rank 0 is raised on every rank."""
    if world_size() == 1:
        return decide()
    outcome = [None]
    if is_writer():
        try:
            outcome = [(decide(), None)]
        except Exception as error:
            outcome = [(None, error)]
    dist.broadcast_object_list(outcome, src=0)
    value, error = outcome[0]
    if error is not None:
        raise error
    return value


def all_sum(values: list[float]) -> list[float]:
    """Each value summed over the ranks (float64, so that counts stay exact)."""
    if world_size() == 1:
        return values
    total = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(total)
    return total.tolist()


def all_max(value: float) -> float:
    if world_size() == 1:
        return value
    largest = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(largest, op=dist.ReduceOp.MAX)
    return largest.item()


def all_gathered(value) -> list:
    """Every rank's value (any picklable object), in rank order."""
    if world_size() == 1:
        return [value]
    parts = [None] * world_size()
    dist.all_gather_object(parts, value)
    return parts


def my_share(items: list) -> list:
    """This rank's contiguous share of a list of whole items (a group never spans ranks): the first ranks
    take one more where the length does not divide; in rank order the shares are the list."""
    n, size, me = len(items), world_size(), rank()
    start = me * (n // size) + min(me, n % size)
    return items[start:start + n // size + (me < n % size)]


def gathered(rows: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every rank's rows, concatenated in rank order (the whole batch as one process holds it), and where
    this rank's begin in it."""
    if world_size() == 1:
        return rows, 0
    parts = all_gathered(rows.cpu())
    return torch.cat(parts).to(rows.device), sum(len(p) for p in parts[:rank()])


@dataclass(frozen=True)
class BatchSize:
    """The whole generation batch's rows and completion tokens, over every rank: what a micro-batch's share
    of the loss, and the dapo loss's token count, are relative to."""

    rows: int
    tokens: float

    @classmethod
    def of(cls, mask: torch.Tensor) -> "BatchSize":
        rows, tokens = all_sum([mask.size(0), mask.sum().item()])
        return cls(int(rows), tokens)


def data_parallel(model: torch.nn.Module) -> torch.nn.Module:
    """The model as the update trains it: under DDP when there are several ranks (its gradients averaged
    over them as the last micro-batch's backward ends), else the model itself. Its buffers (rotary frequencies)
    are constants, the same on every rank: broadcasting them before each forward would only make the ranks'
    forward counts (which differ with their micro-batches and completion widths) a collective that must match."""
    return DistributedDataParallel(model, broadcast_buffers=False) if world_size() > 1 else model


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def syncing(model: torch.nn.Module, sync: bool):
    """Accumulate this backward's gradients locally unless `sync` (DDP's no_sync): one all-reduce per pass,
    however many micro-batches each rank holds."""
    return model.no_sync() if isinstance(model, DistributedDataParallel) and not sync else nullcontext()
