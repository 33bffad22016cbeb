"""The seed set: rejection-sample the explorer's own completions that the gold verifier accepts."""

from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm

from harness.config import RolloutConfig, SeedSetConfig
from harness.rollout.base import RolloutEngine, SamplingParams
from harness.metrics import full_marks
from harness.rewards.reward import Reward, failure_metrics
from harness.tasks import ProblemStream
from harness.tracking import StageTracker


def rejection_sample(engine: RolloutEngine, reward: Reward, problems: ProblemStream, *, cfg: SeedSetConfig,
                     rollout_cfg: RolloutConfig, tracker: StageTracker) -> list[dict]:
    """Verified, distinct (prompt, completion) pairs: up to seed_set.size of them, from at most
    seed_set.max_rounds rounds of seed_set.prompts_per_round prompts."""
    sampling = SamplingParams.of(rollout_cfg)
    K = cfg.samples_per_prompt
    seed: dict[tuple[str, str], None] = {}  # insertion-ordered set
    sampled = 0
    bar = tqdm(total=cfg.size, desc="seed", leave=False, disable=None)
    for round_ in range(1, cfg.max_rounds + 1):
        batch = problems.take(cfg.prompts_per_round)
        rollout = engine.generate([p.prompt for p in batch], K, sampling)
        accepted = 0
        gold, _, failures = reward.measure(batch, rollout)
        passed = full_marks(gold)
        for i, text in enumerate(rollout.texts):
            problem = batch[i // K]
            if passed[i] and (problem.prompt, text) not in seed:
                seed[(problem.prompt, text)] = None
                accepted += 1
        sampled += len(rollout.texts)
        tracker.log(round_, {"seed/size": len(seed), "seed/acceptance_rate": accepted / len(rollout.texts),
                             "seed/sampled": sampled, **failure_metrics(failures)})
        bar.update(min(accepted, cfg.size - bar.n))
        if len(seed) >= cfg.size:
            break
    bar.close()
    return [{"prompt": p, "completion": c} for p, c in list(seed)[: cfg.size]]


def save_seed(rows: list[dict], path: Path) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def load_seed(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
