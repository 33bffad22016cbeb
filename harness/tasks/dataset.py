"""task=dataset: problems from a dataset of your own, scored by a function of your own (task.gold).

The rows of task.train_path (JSONL/JSON, Parquet, CSV or a `datasets.save_to_disk` folder) are the training
problems. The held-out problems are task.test_path's rows, or, with task.test_fraction, the rows of
train_path whose prompt's sha256 falls below that fraction: the same rows on every machine and in any row
order, and a prompt that appears twice stays on one side. A problem is its prompt (its key), so the trainer
also keeps every test prompt out of training.

Each row becomes an `Example`: the prompt column's text, the answer column as a string, and every column
but the prompt as it was read, which task.gold receives (TRL's keyword lists, verl's extra_info). A prompt
given as chat messages ([{"role": ..., "content": ...}]) becomes its contents joined by newlines, in
order: the roles (a system prompt's standing) are not kept yet.
"""

from __future__ import annotations

import hashlib
import random

from harness.registry import BUILTIN_REWARDS
from harness.settings import ConfigError
from harness.sources import content_digest
from harness.tasks.base import Example
from harness.tasks.data_files import read_table

DIGEST_RANGE = 2 ** 64  # a key's first 8 digest bytes, as a fraction of this, decide its side


class DatasetTask:
    name = "dataset"

    def __init__(self, train: list[Example], test: list[Example], settings: dict, cfg):
        self.train, self.test, self.settings, self.cfg = train, test, settings, cfg
        self._gold = None  # the built task.gold, on the first call: only reward workers score

    @classmethod
    def from_config(cls, cfg) -> "DatasetTask":
        train, test = load_splits(cfg)
        settings = {"train": content_digest(cfg.train_path),
                    "test": None if cfg.test_path is None else content_digest(cfg.test_path),
                    "test_fraction": cfg.test_fraction, "prompt_key": cfg.prompt_key, "answer_key": cfg.answer_key}
        return cls(train, test, settings, cfg)

    @classmethod
    def check_config(cls, cfg) -> None:
        """A gold function, and data that make a training and a test split (read: reading is cheap)."""
        if cfg.task.gold is None:
            raise ConfigError("task.gold", None, "a dataset is scored by your function: set task.gold to module:function, "
                              f"path/to/file.py:function or a built-in ({', '.join(BUILTIN_REWARDS)})")
        try:
            load_splits(cfg.task)
        except ValueError as error:
            raise ConfigError("task.train_path", cfg.task.train_path, str(error)) from None

    def difficulty(self) -> dict:
        return dict(self.settings)

    def sample(self, rng: random.Random) -> Example:
        """A training row, uniformly, with replacement."""
        return rng.choice(self.train)

    def heldout_split(self) -> list[Example]:
        return list(self.test)

    def gold(self, problem: Example, completion: str) -> float:
        """task.gold's score (no token ids here: a function that reads them gets an empty list)."""
        if self._gold is None:
            if self.cfg.gold is None:
                raise ValueError("task=dataset is scored by your function: set task.gold")
            from harness.rewards.functions import reward_spec  # here: harness.rewards imports harness.tasks
            self._gold = reward_spec(self.cfg, "gold").build()
        return self._gold(problem, completion, [])

    def solve(self, problem: Example, rng: random.Random) -> str:
        """The row's worked solution (task.solution_key), else its reference answer."""
        return problem.answer if problem.solution is None else problem.solution

    def format_only(self, problem: Example, rng: random.Random) -> str:
        """The reference answer of another training problem: an answer's form, never this problem's."""
        start = rng.randrange(len(self.train))
        for offset in range(len(self.train)):
            other = self.train[(start + offset) % len(self.train)]
            if other.key != problem.key:
                return other.answer
        raise ValueError("format_only needs two different prompts in task.train_path")


def load_splits(cfg) -> tuple[list[Example], list[Example]]:
    """The training and test problems that task.train_path, task.test_path or task.test_fraction give."""
    if cfg.train_path is None:
        raise ValueError("task=dataset needs task.train_path")
    if cfg.test_path is not None and cfg.test_fraction is not None:
        raise ValueError(f"task.test_path={cfg.test_path!r} and task.test_fraction={cfg.test_fraction} both name "
                         "the test split; set one")
    if cfg.test_path is None and cfg.test_fraction is None:
        raise ValueError("task=dataset needs a test split: task.test_path, or task.test_fraction (e.g. 0.1)")
    rows = read_examples(cfg, cfg.train_path, "task.train_path", "train")
    if cfg.test_path is not None:
        train, test = rows, read_examples(cfg, cfg.test_path, "task.test_path", "test")
    else:
        train = [row for row in rows if not is_held_out(row.key, cfg.test_fraction)]
        test = [row for row in rows if is_held_out(row.key, cfg.test_fraction)]
        if not test:
            raise ValueError(f"task.test_fraction={cfg.test_fraction} holds out none of the {len(rows)} rows of "
                             f"task.train_path={cfg.train_path!r}")
    test_keys = {row.key for row in test}
    if all(row.key in test_keys for row in train):
        raise ValueError(f"task.train_path={cfg.train_path!r}: no training rows left, every prompt is held out")
    return train, test


def is_held_out(key: str, fraction: float) -> bool:
    """Whether a prompt falls in the test share: stable across runs, machines and row orders."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") < fraction * DIGEST_RANGE


def read_examples(cfg, path: str, setting: str, split: str) -> list[Example]:
    columns = [key for key in (cfg.prompt_key, cfg.answer_key, cfg.solution_key) if key is not None]
    table = read_table(path, setting, split, text_columns=tuple(columns))
    for key in columns:
        if key not in table.column_names:
            raise ValueError(f"{setting}={path!r} has no column {key!r} (its columns: {', '.join(table.column_names)})")
    for key in (cfg.answer_key, cfg.solution_key):
        if key is not None and _guessed(table.features[key]):
            raise ValueError(f"{setting}={path!r}: column {key!r} was read as {table.features[key]}, not as written "
                             f"(\"007\" beside 7 comes back 7, 7 beside 7.5 as 7.0): write its values as strings")
    return [to_example(row, cfg, f"{setting}={path!r}, row {index}") for index, row in enumerate(table.to_list())]


def _guessed(feature) -> bool:
    """A column whose values the reader typed by guessing, so that str() of them need not be what the file
    says: floats (7 beside 7.5) and mixed types (JSON's 7 beside "007"). Text and whole numbers are exact."""
    dtype = getattr(feature, "dtype", None)
    return dtype is None or not (dtype in ("string", "large_string") or dtype.startswith(("int", "uint")))


def to_example(row: dict, cfg, where: str) -> Example:
    prompt = prompt_text(row[cfg.prompt_key], f"{where}, column {cfg.prompt_key!r}")
    answer = row[cfg.answer_key]
    if answer is None:
        raise ValueError(f"{where} has no value in column {cfg.answer_key!r}")
    solution = None if cfg.solution_key is None else row[cfg.solution_key]
    columns = {name: value for name, value in row.items() if name != cfg.prompt_key}
    return Example(prompt, str(answer), prompt, columns, None if solution is None else str(solution))


def prompt_text(value, where: str) -> str:
    """A prompt as text: a string as it is, chat messages as their contents joined by newlines."""
    if value is None:
        raise ValueError(f"{where} is empty")
    if not isinstance(value, list):
        return str(value)
    if not all(isinstance(message, dict) and "content" in message for message in value):
        raise ValueError(f"{where} is a list but not chat messages ([{{'role': ..., 'content': ...}}])")
    return "\n".join(str(message["content"]) for message in value)
