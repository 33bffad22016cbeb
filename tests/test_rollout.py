"""Rollouts keep an engine's own log-probabilities row for row, and their gap to the trainer's
is measured over completion tokens only."""

import torch

from harness.metrics import logprob_gap
from harness.rollout.base import Rollout


def rollout(rows: int, width: int, lengths: list[int], logprob: float) -> Rollout:
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    return Rollout(torch.ones(rows, 2, dtype=torch.long), torch.ones(rows, 2, dtype=torch.long),
                   torch.ones(rows, width, dtype=torch.long), mask, ["x"] * rows,
                   torch.zeros(rows, dtype=torch.bool), engine_logprobs=logprob * mask.float())


def test_engine_logprobs_follow_rows_through_select_and_concat():
    a, b = rollout(2, 3, [3, 1], -0.5), rollout(1, 5, [5], -0.25)
    both = Rollout.concat([a, b], pad_token_id=0)
    assert both.engine_logprobs.shape == (3, 5)
    assert torch.equal(both.engine_logprobs[:, :3] != 0, both.completion_mask[:, :3].bool())
    picked = both.select([2, 0])
    assert torch.equal(picked.engine_logprobs[0], torch.full((5,), -0.25))
    assert picked.engine_logprobs[1].tolist() == [-0.5, -0.5, -0.5, 0.0, 0.0]


def test_logprob_gap_ignores_padding():
    r = rollout(2, 4, [4, 2], -1.0)
    trainer = torch.full((2, 4), -1.0)
    trainer[1, 3] = 50.0  # a pad position: whatever the trainer says there does not count
    trainer[0, 1] = -1.25
    gap = logprob_gap(r, trainer)
    assert gap["rollout/logprob_gap_max"] == 0.25 and abs(gap["rollout/logprob_gap_mean"] - 0.25 / 6) < 1e-7
