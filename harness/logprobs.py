"""Per-token log-probabilities and entropies of completions under a model."""

from __future__ import annotations

import torch

from harness.rollout.base import Rollout


def completion_logprobs(model, rollout: Rollout, temperature: float, rows: slice = slice(None)):
    """log pi(o_t | q, o_<t) and the entropy of pi(. | q, o_<t) at each completion position.

    Logits are divided by the sampling temperature, so the ratio pi/pi_old and the KL refer to the
    tempered distribution: the one the completions were drawn from when rollout.top_p is 1. Below 1
    the sampler draws from its renormalised nucleus, while this scores the full one (as TRL does).
    """
    prompt_ids, completion_ids = rollout.prompt_ids[rows], rollout.completion_ids[rows]
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention = torch.cat([rollout.prompt_mask[rows], torch.ones_like(completion_ids)], dim=1)
    position_ids = (attention.cumsum(dim=1) - 1).clamp(min=0)  # as generate numbers left-padded rows
    # The head runs only where a completion token is predicted (as TRL does): on a chat prompt
    # most positions are prompt, and the vocabulary projection is a large share of the compute.
    width = completion_ids.size(1)
    logits = model(input_ids=input_ids, attention_mask=attention, position_ids=position_ids,
                   logits_to_keep=width + 1).logits
    logits = logits[:, :-1, :].float() / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy
