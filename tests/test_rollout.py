"""Rollouts keep an engine's own log-probabilities row for row, and their gap to the trainer's
is measured over completion tokens only; the HF engine samples from the distribution the trainer scores."""

import copy

import torch

from harness.config import ModelConfig
from harness.logprobs import completion_logprobs
from harness.metrics import logprob_gap
from harness.models import build_tiny_model, build_tokenizer
from harness.rollout.base import Rollout, SamplingParams
from harness.rollout.hf import HFEngine


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


def keep_sampling_scores(model, monkeypatch) -> list:
    """Make `model.generate` also return the scores it sampled from, after every logits processor and warper."""
    generate, kept = model.generate, []

    def generate_keeping_scores(*args, generation_config, **kwargs):
        config = copy.deepcopy(generation_config)
        config.output_scores, config.return_dict_in_generate = True, True
        out = generate(*args, generation_config=config, **kwargs)
        kept.append(torch.stack(out.scores, dim=1))
        return out.sequences

    monkeypatch.setattr(model, "generate", generate_keeping_scores)
    return kept


def test_hf_engine_samples_the_trainers_distribution_whatever_the_models_generation_defaults(monkeypatch):
    """A model may ship sampling defaults (a repetition penalty, suppressed tokens, ...); rollouts must not use them,
    or the trainer's log-probabilities would not be those of the sampler."""
    tokenizer = build_tokenizer([f"w{i}" for i in range(20)])
    model = build_tiny_model(ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64),
                             tokenizer, seed=0).eval()
    model.generation_config.repetition_penalty = 1.3
    model.generation_config.suppress_tokens = [tokenizer.convert_tokens_to_ids("w0")]
    kept = keep_sampling_scores(model, monkeypatch)
    torch.manual_seed(0)
    rollout = HFEngine(model, tokenizer).generate(["w1 w2 w1", "w3 w3 w4 w5"], 4, SamplingParams(1.0, 1.0, 8))

    sampler = torch.log_softmax(kept[0].float(), -1).gather(-1, rollout.completion_ids.unsqueeze(-1)).squeeze(-1)
    trainer, _ = completion_logprobs(model, rollout, temperature=1.0)
    mask = rollout.completion_mask.bool()
    assert torch.allclose(sampler[mask], trainer[mask], atol=1e-4)
    assert model.generation_config.repetition_penalty == 1.3  # the model's own defaults are left as they were
