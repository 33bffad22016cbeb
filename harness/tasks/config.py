"""The task group's config (`task.*`): which task, its settings, and the rewards it is scored and trained
with. Declared here, beside the tasks; harness.config gathers it into the run's config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from harness.registry import REWARD_STYLES
from harness.settings import setting

TASK_REWARDS = ("gold", "proxy")  # the task's own: its verifier and its hand-made formula
REWARDS = (*TASK_REWARDS, "learned")  # learned: a reward model trained on gold labels (harness.reward_model)


@dataclass
class TaskConfig:
    name: str = setting("ordering", "a registered task (ordering, countdown, reasoning_gym, dataset), a class as "
                                    "package.module:Class, or an entry point of the group coldclimb.tasks")
    num_items: int = setting(6, "ordering: items to order; a random order passes (6, 4) 8.5%, (8, 10) 0.5%", low=2)
    num_constraints: int = setting(4, "ordering: 'x before y' rules", low=1)
    item_pool: Optional[int] = setting(None, "ordering: draw each problem's items from this many symbols; None: "
                                             "always the same num_items")
    num_numbers: int = setting(3, "countdown: numbers to combine; a random answer passes (3, 10, 50) 7.2%", low=2,
                               high=5)  # the solver searches every expression: 5 numbers take seconds
    max_number: int = setting(10, "countdown: numbers are drawn from 1 to this", low=1)
    max_target: int = setting(50, "countdown: the largest target", low=1)
    prompt_style: str = setting("compact", "compact: symbols, for the tiny model; natural: words, for instruct "
                                           "models", choices=("compact", "natural"))
    proxy_missing_penalty: float = setting(0.15, "lam in the proxy reward: small is hackable", low=0)
    proxy_rules: Optional[int] = setting(None, "ordering: the proxy checks only k of the num_constraints rules, "
                                               "chosen per problem (a partial verifier; k grades the proxies as "
                                               "reward-model size does); None: all", low=1)
    dataset: Optional[str] = setting(None, "reasoning_gym: the procedural dataset's name (reasoning_gym.create_dataset)")
    dataset_config: dict = setting({}, "reasoning_gym: the generator's settings, task.dataset_config.KEY=VALUE")
    train_path: Optional[str] = setting(None, "dataset: the training problems, JSONL, Parquet, CSV or a "
                                              "datasets.save_to_disk folder")
    test_path: Optional[str] = setting(None, "dataset: the held-out problems, in the same forms")
    test_fraction: Optional[float] = setting(None, "dataset, without test_path: hold out this share of train_path, "
                                                   "chosen by a stable digest of each prompt", unit=True)
    prompt_key: str = setting("prompt", "dataset: the column holding the prompt")
    answer_key: str = setting("answer", "dataset: the column holding the reference answer")
    solution_key: Optional[str] = setting(None, "dataset: a column holding a worked demonstration (sft.source=solver); "
                                                "None: the reference answer")
    gold: Optional[str] = setting(None, "the gold reward: module:function, path/to/file.py:function or math_verify; "
                                        "None: the task's own verifier")
    gold_style: str = setting("trl", "how task.gold is called: trl (prompts, completions, completion_ids, every "
                                     "column as a list) or verl (compute_score)", choices=tuple(REWARD_STYLES))
    proxy: Optional[str] = setting(None, "the proxy reward, given like task.gold (called as task.gold_style says); "
                                         "None: the task's hand-made formula")
    partial_credit: bool = setting(False, "train on the gold score as it is (reasoning-gym gives partial credit); "
                                          "false: 1 for full marks, else 0. pass@1 counts full marks either way")
    reward_workers: int = setting(2, "processes that score completions: model text is never scored in the "
                                     "trainer's", low=1)
    reward_timeout: float = setting(10.0, "seconds one completion's score may take; past it, it scores 0 and is "
                                          "counted (rewards/timeouts)", positive=True)
    reward_memory_gb: float = setting(4.0, "memory a reward worker may take beyond what it started with",
                                      positive=True)
    reward: str = setting("gold", "the reward the GRPO stage trains on: gold, the proxy (task.proxy or the task's "
                                  "formula), or a learned reward model as the proxy (reward_model.*), measured in its "
                                  "place", choices=REWARDS)
