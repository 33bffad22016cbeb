"""Held-out evaluation: gold pass@1 (full marks) and the mean gold and proxy scores on a fixed problem
set, and the KL of the policy to the stage's initial policy (the x-axis of reward over-optimisation
curves). The proxy is the one the stage's `Reward` measures: a function, the task's formula, or a
learned reward model (task.reward=learned)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Optional

import torch
from transformers import PreTrainedModel

from harness.config import EvalConfig, RolloutConfig
from harness.logprobs import completion_logprobs
from harness.metrics import full_marks
from harness.rewards.reward import Reward, failure_metrics
from harness.rollout.base import Rollout, RolloutEngine, SamplingParams
from harness.store import GOLD, KL, PER_PROMPT, PROXY
from harness.tasks import Problem

SCORING_ROWS = 256  # rows per forward pass when scoring log-probabilities


class Evaluator:
    def __init__(self, reward: Reward, problems: list[Problem], eval_cfg: EvalConfig, rollout_cfg: RolloutConfig,
                 initial_policy: Optional[PreTrainedModel] = None):
        self.reward, self.problems, self.cfg = reward, problems, eval_cfg
        self.initial_policy = initial_policy
        self.sampling = SamplingParams(eval_cfg.temperature, rollout_cfg.top_p, rollout_cfg.max_completion_length)

    @contextmanager
    def own_randomness(self):
        """Held-out sampling draws from its own stream, seeded by eval.seed. Evaluating never moves
        training's random state, so eval_every and best_of_n change no trained weight; and each
        evaluation sees the same random numbers, which steadies comparisons between them."""
        with torch.random.fork_rng():
            torch.manual_seed(self.cfg.seed)
            yield

    @torch.no_grad()
    def __call__(self, policy: PreTrainedModel, engine: RolloutEngine) -> dict:
        with self.own_randomness():
            rollout = engine.generate([p.prompt for p in self.problems], self.cfg.num_samples, self.sampling)
        gold, proxy, failures = self.reward.measure(self.problems, rollout)
        passed = full_marks(gold)
        metrics = {
            GOLD: passed.mean().item(),
            # each held-out prompt's pass rate, in the held-out set's order: for intervals over prompts
            GOLD + PER_PROMPT: passed.view(len(self.problems), -1).mean(1).tolist(),
            "eval/gold_score": gold.mean().item(),  # with partial credit, above pass@1
            PROXY: proxy.mean().item(),
            "eval/completion_length": rollout.completion_mask.sum(1).float().mean().item(),
            **failure_metrics(failures, "eval/rewards"),
        }
        if self.initial_policy is not None:
            metrics[KL] = self.sequence_kl(policy, rollout)
        return metrics

    @torch.no_grad()
    def best_of_n_samples(self, engine: RolloutEngine) -> list[dict]:
        """`best_of_n` samples per held-out prompt, each with both rewards: ranked by the proxy,
        they give the best-of-n baseline of over-optimisation plots (Gao et al. 2022)."""
        with self.own_randomness():
            rollout = engine.generate([p.prompt for p in self.problems], self.cfg.best_of_n, self.sampling)
        gold, proxy, _ = self.reward.measure(self.problems, rollout)
        return [{"problem": i // self.cfg.best_of_n, "gold": passed, "gold_score": g, "proxy": x}  # gold as pass@1
                for i, (passed, g, x) in enumerate(zip(full_marks(gold).tolist(), gold.tolist(), proxy.tolist()))]

    def sequence_kl(self, policy: PreTrainedModel, rollout: Rollout) -> float:
        """KL(pi || pi_init) per completion, in nats: the mean over samples from pi of
        sum_t log pi - log pi_init (an unbiased estimate)."""
        total = 0.0
        for start in range(0, len(rollout.texts), SCORING_ROWS):
            rows = slice(start, start + SCORING_ROWS)
            logp, _ = completion_logprobs(policy, rollout, self.sampling.temperature, rows)
            init_logp, _ = completion_logprobs(self.initial_policy, rollout, self.sampling.temperature, rows)
            total += ((logp - init_logp) * rollout.completion_mask[rows]).sum().item()
        return total / len(rollout.texts)
