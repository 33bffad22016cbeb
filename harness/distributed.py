"""Data parallelism on torch.distributed: each rank trains on whole groups of the step's batch, DDP
all-reduces the gradients (or FSDP2 shards the model and reduce-scatters them), and the few batch-wide values
every rank must agree on are reduced here.

In one process (no process group) the world is one rank and every function here is the identity, so a
single-process run computes exactly what it computed before data parallelism existed.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, Optional, TypeVar

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict, \
    set_optimizer_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from harness.registry import DATA_PARALLEL, load

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


def data_parallel(model: torch.nn.Module, how: str = "ddp") -> torch.nn.Module:
    """The model as the update trains it on several ranks (trial.data_parallel: DATA_PARALLEL); in one process the
    model itself (vLLM's in-process engine may hold a process group of one)."""
    return load(DATA_PARALLEL[how])(model) if world_size() > 1 else model


def ddp(model: torch.nn.Module) -> torch.nn.Module:
    """Each rank holds the whole model; DDP averages the ranks' gradients as the last micro-batch's backward ends.
    Its buffers (rotary frequencies) are constants, the same on every rank: broadcasting them before each forward
    would only make the ranks' forward counts (which differ with their micro-batches and completion widths) a
    collective that must match."""
    return DistributedDataParallel(model, broadcast_buffers=False)


def fsdp(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP2, in place: each block the model names as never to be split (`_no_split_modules`: its decoder layers),
    then the rest, sharded over the ranks. Weights, gradients and optimizer state are split N ways; each block's
    weights are gathered for its forward and backward, and its gradients reduce-scattered after it."""
    blocks = set(getattr(model, "_no_split_modules", None) or ())
    # on the model's own device type: FSDP's default is the machine's accelerator, a CPU model's too
    mesh = init_device_mesh(next(model.parameters()).device.type, (world_size(),))
    for module in [m for m in model.modules() if type(m).__name__ in blocks]:
        fully_shard(module, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def in_lockstep(model: torch.nn.Module) -> bool:
    """Whether each forward and backward of `model` is a collective (FSDP gathers a block's weights for it), so
    that every rank must run as many, of the same kind."""
    return isinstance(model, FSDPModule)


@contextmanager
def whole_weights(model: torch.nn.Module):
    """The block runs on whole weights: FSDP's blocks are gathered at its start (one collective each, in the same
    order on every rank) and stay whole through its forwards, so ranks may make as many as they need (generate
    makes one per token); a no-op for any other model."""
    blocks = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for block in blocks:
        block.unshard()
        block.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for block in blocks:  # as fully_shard leaves them: the root stays whole after its forward, for the backward
            block.set_reshard_after_forward(block is not model, recurse=False)
            block.reshard()


def whole_state(model: torch.nn.Module, everywhere: bool = False) -> dict:
    """The model's weights, whole (every rank calls it: FSDP gathers them), on rank 0 unless `everywhere`; any other
    model's own state_dict."""
    if not in_lockstep(model):
        return unwrapped(model).state_dict()
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=not everywhere))
    # A tied weight (the embedding the head shares) comes back as two copies: one tensor again, as in state_dict(),
    # so that save_pretrained writes it once.
    first: dict[int, str] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if first.setdefault(id(parameter), name) != name and name in state:
            state[name] = state[first[id(parameter)]]
    return state


def optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Optional[dict]:
    """The optimizer's state (every rank calls it), whole on rank 0: under FSDP gathered from the shards and keyed
    by parameter name (None before its first step, which gathering would take itself); else its own state_dict."""
    if not in_lockstep(model):
        return optimizer.state_dict()
    if not optimizer.state:  # the same on every rank: they step together
        return None
    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: Optional[dict]) -> None:
    """`state` (optimizer_state's, read by every rank) into this rank's optimizer: its shard, under FSDP."""
    if not in_lockstep(model):
        optimizer.load_state_dict(state)
    elif state is not None:
        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def whole_tensor(value: torch.Tensor) -> torch.Tensor:
    """A value FSDP computed over every rank's shard (a DTensor, e.g. the gradient norm) as one tensor."""
    return value.full_tensor() if isinstance(value, DTensor) else value


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def syncing(model: torch.nn.Module, sync: bool):
    """Accumulate this backward's gradients locally unless `sync` (DDP's no_sync): one all-reduce per pass,
    however many micro-batches each rank holds."""
    return model.no_sync() if isinstance(model, DistributedDataParallel) and not sync else nullcontext()
