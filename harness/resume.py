"""Whether a run may be resumed: the interrupted run's directory, with the config it ran with.

Checked before any model loads; a value changed since would quietly train a different run.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.config import Config, as_tree
from harness.settings import ConfigError
from harness.sources import task_sources
from harness.store import CONFIG

# Keys a resumed run may change: none alters training (a retried sweep trial reports to a new trial).
FREE_ON_RESUME = ("resume", "output_dir", "checkpoint.keep", "model.cache_dir", "tracking.mode", "trial.storage",
                  "trial.study_name", "trial.trial_id", "trial.number", "trial.study", "trial.heartbeat_interval",
                  "cache.stages", "cache.dir", "cache.max_size_gb", "jobs_per_gpu", "tracking.log_completions_every",
                  "task.reward_workers")

# Keys renamed since a run may have started: an interrupted run's value is checked under the new name.
RENAMED = {**{f"pipeline.seed_{key}": f"seed_set.{key}"
              for key in ("size", "samples_per_prompt", "prompts_per_round", "max_rounds")},
           "grpo.log_completions_every": "tracking.log_completions_every",
           "explore.log_completions_every": "tracking.log_completions_every"}


def _flat(tree: dict, prefix: str = "") -> dict:
    """{"grpo": {"beta": 0}} -> {"grpo.beta": 0}"""
    flat = {}
    for key, value in tree.items():
        flat.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return flat


def recorded_config(cfg) -> dict:
    """What each stage records as its config (config.json, W&B): the config, and with a task whose inputs lie
    outside it (data files, reward functions), their digests (harness.sources.task_sources)."""
    sources = task_sources(cfg.task)
    return {**as_tree(cfg), "task_sources": sources} if sources else as_tree(cfg)


def _as_saved(cfg) -> dict:
    return _flat(recorded_config(cfg))  # tuples become lists, as in config.json


def check_resumable(cfg, run_dir: Path) -> None:
    """resume=true needs the interrupted run's directory and its config. A key the interrupted run
    did not have (one added to coldclimb since) may hold its default. Raises ConfigError."""
    saved = sorted(Path(run_dir).glob(f"*/{CONFIG}"), key=lambda path: path.stat().st_mtime)
    if not saved:
        raise ConfigError("resume", True, f"no interrupted run in {run_dir} (point hydra.run.dir or output_dir at it)")
    saved_cfg = json.loads(saved[-1].read_text())  # the newest: the interrupted stage's
    before = {RENAMED.get(key, key): value for key, value in _flat(saved_cfg).items()}
    now, defaults = _as_saved(cfg), _as_saved(Config())
    for key in sorted(before.keys() | now.keys()):
        if key not in now and key not in FREE_ON_RESUME:
            raise ConfigError(key, before[key], "was the interrupted run's, and this version of coldclimb has no such "
                                                "key: resume it with the version that started it")
        added_since = key not in before and now.get(key) == defaults.get(key)
        if key not in FREE_ON_RESUME and not added_since and before.get(key) != now.get(key):
            raise ConfigError(key, now.get(key), f"differs from the interrupted run's {before.get(key)!r}")
