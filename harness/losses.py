"""GRPO's options that name an implementation, by name: loss types (how token losses become one loss,
and a micro-batch's share of it) and reward scalings (the std advantages are divided by). A new one is
one entry and its function. Written with tensor methods only, so that the config reads the names
without importing torch (analysis reads sweeps without it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:
    from torch import Tensor

    from harness.distributed import BatchSize

# scale_rewards -> the std advantages are divided by, from (rewards [N], grouped [N / K, K]); None: not scaled
SCALINGS: dict[str, Optional[Callable[[Tensor, Tensor], Tensor]]] = {
    "group": lambda rewards, grouped: grouped.std(dim=1, keepdim=True).expand_as(grouped).reshape(-1),
    "batch": lambda rewards, grouped: rewards.std().expand_as(rewards),
    "none": None,
}


@dataclass(frozen=True)
class Aggregation:
    """A loss_type: how masked token losses [B, T] become one loss (given the mask, max_completion_length
    and num_items_in_batch), and a micro-batch's weight in the whole batch's loss (its mask, the batch's
    size: harness.distributed.BatchSize), so that micro-batches of any sizes, on any ranks, add up to one
    full-batch loss."""

    loss: Callable[[Tensor, Tensor, Optional[int], Optional[float]], Tensor]
    share: Callable[[Tensor, "BatchSize"], float]


def _row_share(mask: Tensor, batch: BatchSize) -> float:
    return mask.size(0) / batch.rows


def _token_share(mask: Tensor, batch: BatchSize) -> float:
    return mask.sum().item() / max(batch.tokens, 1)


def _sequence_mean(losses, mask, max_completion_length, num_items_in_batch):
    return (losses.sum(1) / mask.sum(1).clamp(min=1.0)).mean()


def _token_mean(losses, mask, max_completion_length, num_items_in_batch):
    return losses.sum() / mask.sum().clamp(min=1.0)


def _fixed_length(losses, mask, max_completion_length, num_items_in_batch):
    return losses.sum() / (losses.size(0) * max_completion_length)


def _batch_token_mean(losses, mask, max_completion_length, num_items_in_batch):
    """Divided by the whole generation batch's tokens: each micro-batch's loss is already its share."""
    return losses.sum() / (mask.sum().clamp(min=1.0) if num_items_in_batch is None else num_items_in_batch)


LOSS_TYPES = {  # a new loss type is one entry here and its function
    "grpo": Aggregation(_sequence_mean, _row_share),
    "bnpo": Aggregation(_token_mean, _token_share),
    "dr_grpo": Aggregation(_fixed_length, _row_share),
    "dapo": Aggregation(_batch_token_mean, lambda mask, batch: 1.0),
}


def loss_aggregation(loss_type: str) -> Aggregation:
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r}: one of {', '.join(LOSS_TYPES)}")
    return LOSS_TYPES[loss_type]
