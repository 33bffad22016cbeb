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
from harness.distributed import all_gathered, my_share
from harness.logprobs import completion_logprobs
from harness.metrics import full_marks
from harness.rewards.reward import Reward, failure_metrics, summed_failures
from harness.rollout.base import Rollout, RolloutEngine, SamplingParams
from harness.store import GOLD, KL, PER_PROMPT, PROXY
from harness.tasks import Problem

SCORING_ROWS = 256  # rows per forward pass when scoring log-probabilities


class Evaluator:
    def __init__(self, reward: Reward, problems: list[Problem], eval_cfg: EvalConfig, rollout_cfg: RolloutConfig,
                 initial_policy: Optional[PreTrainedModel] = None):
        self.reward, self.problems, self.cfg = reward, problems, eval_cfg
        self.initial_policy = initial_policy
        self.sampling = SamplingParams(eval_cfg.temperature, rollout_cfg.top_p, rollout_cfg.max_completion_length,
                                       rollout_cfg.group_seeds)

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
        """Each rank samples and scores its share of the held-out prompts; the metrics are the whole set's."""
        problems = my_share(self.problems)
        with self.own_randomness():
            seeds = self.sampling.seeds(len(self.problems))  # one per held-out prompt, however the set is split
            rollout = engine.generate([p.prompt for p in problems], self.cfg.num_samples, self.sampling,
                                      seeds=None if seeds is None else my_share(seeds))
        gold, proxy, failures = self.reward.measure(problems, rollout)
        kl = self.sequence_kl(policy, rollout) if self.initial_policy is not None else None
        parts = all_gathered((gold, proxy, rollout.completion_mask.sum(1).cpu(), failures, kl))
        gold, proxy, lengths = (torch.cat([part[i] for part in parts]) for i in range(3))
        passed = full_marks(gold)
        metrics = {
            GOLD: passed.mean().item(),
            # each held-out prompt's pass rate, in the held-out set's order: for intervals over prompts
            GOLD + PER_PROMPT: passed.view(len(self.problems), -1).mean(1).tolist(),
            "eval/gold_score": gold.mean().item(),  # with partial credit, above pass@1
            PROXY: proxy.mean().item(),
            "eval/completion_length": lengths.float().mean().item(),
            **failure_metrics(summed_failures([part[3] for part in parts]), "eval/rewards"),
        }
        if kl is not None:  # the mean over every rank's completions
            metrics[KL] = sum(part[4] for part in parts) / len(gold)
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
        """KL(pi || pi_init) summed over the rollout's completions, in nats: over samples from pi, the sum of
        sum_t log pi - log pi_init (its mean, an unbiased estimate of the KL per completion)."""
        total = 0.0
        for start in range(0, len(rollout.texts), SCORING_ROWS):
            rows = slice(start, start + SCORING_ROWS)
            logp, _ = completion_logprobs(policy, rollout, self.sampling.temperature, rows)
            init_logp, _ = completion_logprobs(self.initial_policy, rollout, self.sampling.temperature, rows)
            total += ((logp - init_logp) * rollout.completion_mask[rows]).sum().item()
        return total
