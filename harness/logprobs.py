"""Per-token log-probabilities and entropies of completions under a model."""

from __future__ import annotations

import torch

from harness.rollout.base import Rollout


def completion_logprobs(model, rollout: Rollout, temperature: float, rows: slice = slice(None)):
    """log pi(o_t | q, o_<t) and the entropy of pi(. | q, o_<t) at each completion position.

    Logits are divided by the sampling temperature, so the ratio pi/pi_old and the KL refer to the
    tempered distribution: the one the completions were drawn from when rollout.top_p is 1. Below 1
    the sampler draws from its renormalised nucleus, while this scores the full one (as TRL does).

    The K completions of a group share their prompt, so each distinct prompt runs once and its
    keys and values are handed to every completion of it (gradients flow back through them):
    on the default task the prompt is three quarters of every sequence.
    """
    prompt_ids, prompt_mask = rollout.prompt_ids[rows], rollout.prompt_mask[rows]
    completion_ids = rollout.completion_ids[rows]
    width = prompt_ids.size(1)
    distinct, prompt_of_row = torch.unique(torch.cat([prompt_ids, prompt_mask], dim=1), dim=0, return_inverse=True)
    ids, mask = distinct[:, :width], distinct[:, width:]
    # The last prompt position predicts the first completion token; the head runs nowhere else on
    # the prompt (as TRL's logits_to_keep: the vocabulary projection is a large share of the compute).
    prompts = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(dim=1) - 1).clamp(min=0),
                    use_cache=True, logits_to_keep=1)
    logits = prompts.logits[prompt_of_row]
    if completion_ids.size(1) > 1:  # each completion token but the last predicts the next one
        cache = prompts.past_key_values
        if not hasattr(cache, "batch_select_indices"):
            raise TypeError(f"{type(model).__name__} returns no key-value cache that can be shared between a "
                            f"prompt's completions (use_cache=True gave {type(cache).__name__})")
        cache.batch_select_indices(prompt_of_row)
        attention = torch.cat([prompt_mask, torch.ones_like(completion_ids)], dim=1)
        position_ids = (attention.cumsum(dim=1) - 1).clamp(min=0)  # as generate numbers left-padded rows
        completions = model(input_ids=completion_ids[:, :-1], attention_mask=attention[:, :-1],
                            position_ids=position_ids[:, width:-1], past_key_values=cache)
        logits = torch.cat([logits, completions.logits], dim=1)
    logp_all = torch.log_softmax(logits.float() / temperature, dim=-1)
    logp = logp_all.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy
