"""Rejection sampling: keep the policy's own completions that the gold verifier accepts."""

from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm

from harness.rollout.base import SamplingParams


def rejection_sample(engine, task, problems, *, pipeline_cfg, rollout_cfg, tracker) -> list[dict]:
    """Verified, distinct (prompt, completion) pairs: up to pipeline.seed_size of them, from at
    most pipeline.seed_max_rounds rounds of seed_prompts_per_round prompts."""
    sampling = SamplingParams(rollout_cfg.temperature, rollout_cfg.top_p, rollout_cfg.max_completion_length)
    K = pipeline_cfg.seed_samples_per_prompt
    seed: dict[tuple[str, str], None] = {}  # insertion-ordered set
    sampled = 0
    bar = tqdm(total=pipeline_cfg.seed_size, desc="seed", leave=False, disable=None)
    for round_ in range(1, pipeline_cfg.seed_max_rounds + 1):
        batch = problems.take(pipeline_cfg.seed_prompts_per_round)
        rollout = engine.generate([p.prompt for p in batch], K, sampling)
        accepted = 0
        for i, text in enumerate(rollout.texts):
            problem = batch[i // K]
            if task.gold(problem, text) == 1.0 and (problem.prompt, text) not in seed:
                seed[(problem.prompt, text)] = None
                accepted += 1
        sampled += len(rollout.texts)
        tracker.log(round_, {"seed/size": len(seed), "seed/acceptance_rate": accepted / len(rollout.texts),
                             "seed/sampled": sampled})
        bar.update(min(accepted, pipeline_cfg.seed_size - bar.n))
        if len(seed) >= pipeline_cfg.seed_size:
            break
    bar.close()
    return [{"prompt": p, "completion": c} for p, c in list(seed)[: pipeline_cfg.seed_size]]


def save_seed(rows: list[dict], path: Path) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def load_seed(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
