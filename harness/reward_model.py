"""A learned reward model as the proxy GRPO trains on (task.reward=learned), as in Gao et al. (2022).

The reward model is a one-logit sequence classifier over prompt + completion, trained with binary
cross-entropy on gold-verifier labels of completions that the GRPO stage's start policy samples on
training problems. Its score, the sigmoid of its logit, lies in [0, 1] like the gold reward. GRPO
trains on that score, and evaluation and best-of-n report and rank by it, while the gold reward is
only measured.

The classifier is transformers' `AutoModelForSequenceClassification` built from the start policy's
own weights, with a fresh head in place of the language-model head (InstructGPT's reward model
also starts from its SFT policy). That works for the tiny Llama and for any pretrained causal LM
that has a sequence-classification class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy import stats
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from harness.config import RewardModelConfig, RolloutConfig
from harness.rollout.base import RolloutEngine, SamplingParams
from harness.metrics import full_marks
from harness.rewards.reward import Reward
from harness.sft import Schedule, encode_examples, finetune
from harness.tasks import Problem, ProblemStream

SCORING_ROWS = 256  # completions per forward pass when scoring


@dataclass
class Labelled:
    """Completions, one problem each, with their gold labels and the task's proxy formula's scores."""

    problems: list[Problem]
    texts: list[str]
    gold: torch.Tensor
    task_proxy: torch.Tensor

    def first(self, count: int) -> "Labelled":
        return Labelled(self.problems[:count], self.texts[:count], self.gold[:count], self.task_proxy[:count])


def sample_labelled(engine: RolloutEngine, reward: Reward, problems: list[Problem], samples_per_prompt: int,
                    sampling: SamplingParams) -> Labelled:
    """`samples_per_prompt` completions of each problem from the engine's policy, each labelled with full
    marks or not by the gold reward, and scored by the task's own proxy."""
    rollout = engine.generate([p.prompt for p in problems], samples_per_prompt, sampling)
    gold, formula, _ = reward.measure(problems, rollout)
    gold = full_marks(gold)
    return Labelled([p for p in problems for _ in range(samples_per_prompt)], rollout.texts, gold, formula)


def labelled_samples(engine: RolloutEngine, reward: Reward, stream: ProblemStream, heldout: list[Problem],
                     rm_cfg: RewardModelConfig, rollout_cfg: RolloutConfig) -> tuple[Labelled, Labelled]:
    """The training set, `train_size` completions of problems from `stream` (which never yields a
    held-out problem), and a held-out set to judge the model on:
    `samples_per_prompt` completions of each held-out problem. Sampled as GRPO's rollouts are."""
    sampling = SamplingParams.of(rollout_cfg)
    per_prompt = rm_cfg.samples_per_prompt
    problems = stream.take(math.ceil(rm_cfg.train_size / per_prompt))
    train = sample_labelled(engine, reward, problems, per_prompt, sampling).first(rm_cfg.train_size)
    return train, sample_labelled(engine, reward, heldout, per_prompt, sampling)


def classifier_from_policy(path, tokenizer, dtype: str, device: str, seed: int):
    """The causal LM saved at `path` as a one-logit sequence classifier; `seed` fixes the new head."""
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, problem_type="multi_label_classification",  # one logit: transformers' loss is then BCE
        dtype=getattr(torch, dtype))
    model.config.pad_token_id = tokenizer.pad_token_id  # the score is read at the last token that is not padding
    return model.to(device)


def encode_labelled(tokenizer, rows: list[tuple[str, str, float]], device: str) -> dict[str, torch.Tensor]:
    """(prompt, completion, gold) rows: encoded as SFT encodes the policy's examples, the gold label the target."""
    batch = encode_examples(tokenizer, [(prompt, completion) for prompt, completion, _ in rows], device)
    batch["labels"] = torch.tensor([[gold] for *_, gold in rows], device=device)
    return batch


def train_reward_model(model, tokenizer, data: Labelled, rm_cfg, *, seed: int, log=None) -> None:
    """Binary cross-entropy on the gold labels: reward_model.steps AdamW steps (SFT's loop, sft.finetune)."""
    rows = [(p.prompt, text, gold) for p, text, gold in zip(data.problems, data.texts, data.gold.tolist())]
    finetune(model, tokenizer, rows, Schedule(rm_cfg.steps, rm_cfg.batch_size, rm_cfg.learning_rate), seed=seed,
             log=log, desc="reward model", encode=encode_labelled)


@torch.no_grad()
def reward_scores(model, tokenizer, prompts: list[str], texts: list[str]) -> torch.Tensor:
    """The reward model's score of each prompt + completion, sigmoid(logit) in [0, 1], on the CPU."""
    device = next(model.parameters()).device
    scores = []
    for start in range(0, len(texts), SCORING_ROWS):
        rows = list(zip(prompts[start:start + SCORING_ROWS], texts[start:start + SCORING_ROWS]))
        batch = encode_examples(tokenizer, rows, device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        scores.append(torch.sigmoid(logits.float().squeeze(-1)).cpu())
    return torch.cat(scores)


class LearnedProxy:
    """A trained reward model as the proxy reward (harness.rewards.reward.LearnedScores)."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model.eval(), tokenizer

    @classmethod
    def load(cls, path, dtype: str, device: str) -> "LearnedProxy":
        """The reward model the reward_model stage saved at `path`, frozen."""
        model = AutoModelForSequenceClassification.from_pretrained(path, dtype=getattr(torch, dtype)).to(device)
        model.requires_grad_(False)
        return cls(model, AutoTokenizer.from_pretrained(path))

    def __call__(self, problems: list, texts: list[str]) -> torch.Tensor:
        return reward_scores(self.model, self.tokenizer, [p.prompt for p in problems], texts)


def auc(scores: torch.Tensor, gold: torch.Tensor) -> float:
    """ROC AUC against the gold labels: the chance that a gold-correct completion outscores a wrong
    one, ties counting half. NaN when the sample lacks either kind."""
    right = (gold == 1).numpy()
    n_right, n_wrong = int(right.sum()), int((~right).sum())
    if not n_right or not n_wrong:
        return float("nan")
    ranks = stats.rankdata(scores.numpy())  # Mann-Whitney: tied scores share their mean rank (half a win)
    return float((ranks[right].sum() - n_right * (n_right + 1) / 2) / (n_right * n_wrong))


def judge(proxy: LearnedProxy, train: Labelled, heldout: Labelled) -> dict:
    """How well the reward model tells gold-correct completions from wrong ones, on its training set
    and on the held-out one (accuracy at a score of 0.5, AUC), beside the task's proxy formula's AUC
    on the same held-out completions: how good each proxy is."""
    metrics = {"reward_model/train/size": len(train.texts), "reward_model/heldout/size": len(heldout.texts)}
    for name, data in (("train", train), ("heldout", heldout)):
        scores = proxy(data.problems, data.texts)
        metrics[f"reward_model/{name}/gold_rate"] = data.gold.mean().item()
        metrics[f"reward_model/{name}/accuracy"] = ((scores > 0.5).float() == data.gold).float().mean().item()
        metrics[f"reward_model/{name}/auc"] = auc(scores, data.gold)
    metrics["reward_model/heldout/task_proxy_auc"] = auc(heldout.task_proxy, heldout.gold)
    return metrics
