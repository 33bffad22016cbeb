"""reasoning-gym: any of its procedural datasets as a task (`task=reasoning_gym task.dataset=NAME
task.dataset_config.KEY=VALUE`): about a hundred generators of verifiable problems, from letter counting
to Sudoku, each with its own verifier, which may give partial credit.

A dataset is built once, with a fixed seed and size, so that one index is one problem in every run; the
harness's seeded stream picks the index. A problem carries the whole entry (question, answer, metadata),
since a dataset's `score_answer` may read any of it. Some verifiers parse, or evaluate, model text, so
`gold` runs only in reward worker processes, never in the trainer.

reasoning_gym is imported inside the functions: the import takes seconds, and light processes that never
use it import harness.tasks.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import random
from importlib.metadata import version
from typing import Optional, get_origin, get_type_hints

from harness.settings import ConfigError
from harness.tasks.base import Example

SEED = 0  # the dataset's own seed: the same problem at each index, run after run
SIZE = 1_000_000  # indices to draw from; for most datasets an index is only a seed offset
SIZE_LIMITS = {"acre": 10_000,  # builds every problem when built: about 2.4 s per 10,000
               "word_ladder": 20_000}  # refuses a larger size
HARNESS_SETTINGS = ("seed", "size")
LIST_DATASETS = 'python -c "import reasoning_gym.factory as f; print(sorted(f.DATASETS))"'


def registered_datasets() -> dict:
    """Name -> (dataset class, config class), for every dataset reasoning-gym registers on import."""
    try:
        import reasoning_gym.factory
    except ImportError:  # an optional dependency: a ValueError, which validation gives as one line
        raise ValueError("reasoning-gym is not installed: pip install 'coldclimb[tasks]'") from None

    return reasoning_gym.factory.DATASETS


def setting_names(config_class) -> list[str]:
    return sorted(f.name for f in dataclasses.fields(config_class) if f.name not in HARNESS_SETTINGS)


def as_config_takes(config_class, settings: dict) -> dict:
    """The settings as given, but a list where the config class wants a tuple becomes one."""
    hints = get_type_hints(config_class)
    wants_tuple = {key for key, hint in hints.items() if hint is tuple or get_origin(hint) is tuple}
    return {key: tuple(value) if key in wants_tuple and isinstance(value, list) else value
            for key, value in settings.items()}


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def unknown_dataset(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3)
    if close:
        return f"no reasoning-gym dataset {name!r}: did you mean {', '.join(close)}?"
    return f"no reasoning-gym dataset {name!r} among its {len(known)}: list them with {LIST_DATASETS}"


def unknown_setting(name: str, key: str, known: list[str]) -> str:
    if key in HARNESS_SETTINGS:
        return f"{name}: task.dataset_config.{key} is not yours to set (the harness fixes the seed and size)"
    close = difflib.get_close_matches(key, known, n=3)
    hint = f": did you mean {', '.join(close)}?" if close else ";"
    return f"{name} has no setting {key!r}{hint} settings: {', '.join(known) or 'none'}"


def checked_dataset(name: Optional[str], settings: dict):
    """The dataset, built with the harness's seed and size; a one-line ValueError for anything wrong."""
    if name is None:
        raise ValueError(f"task=reasoning_gym needs task.dataset to name a reasoning-gym dataset ({LIST_DATASETS})")
    datasets = registered_datasets()
    if name not in datasets:
        raise ValueError(unknown_dataset(name, sorted(datasets)))
    config_class = datasets[name][1]
    known = setting_names(config_class)
    for key in settings:
        if key not in known:
            raise ValueError(unknown_setting(name, key, known))
    return built_dataset(name, as_config_takes(config_class, settings))


def built_dataset(name: str, settings: dict):
    import reasoning_gym

    try:
        dataset = reasoning_gym.create_dataset(name, seed=SEED, size=SIZE_LIMITS.get(name, SIZE), **settings)
    except (AssertionError, ValueError, TypeError) as error:
        raise ValueError(f"reasoning-gym's {name} refuses the settings {settings}: {one_line(error)}") from None
    try:
        dataset[0]  # some settings pass validation yet break the generator
    except Exception as error:
        raise ValueError(f"reasoning-gym's {name} makes no problem with the settings {settings}: "
                         f"{type(error).__name__}: {one_line(error)}") from None
    return dataset


class ReasoningGymTask:
    name = "reasoning_gym"

    def __init__(self, dataset_name: str, settings: dict):
        self.dataset_name, self.settings = dataset_name, settings
        self.dataset = checked_dataset(dataset_name, settings)

    @classmethod
    def from_config(cls, cfg) -> "ReasoningGymTask":
        return cls(cfg.dataset, dict(cfg.dataset_config or {}))

    @classmethod
    def check_config(cls, cfg) -> None:
        """An unknown dataset or setting, or a value the dataset refuses, named in one line."""
        for key, value, settings in (("task.dataset", cfg.task.dataset, {}),
                                     ("task.dataset_config", dict(cfg.task.dataset_config), cfg.task.dataset_config)):
            try:
                checked_dataset(cfg.task.dataset, settings)
            except ValueError as error:
                raise ConfigError(key, value, str(error)) from None

    def difficulty(self) -> dict:
        settings = json.loads(json.dumps(self.settings, sort_keys=True))
        return {"dataset": self.dataset_name, **settings, "reasoning_gym": version("reasoning_gym")}

    def sample(self, rng: random.Random) -> Example:
        """The entry at a drawn index; the question names the problem. Its columns are the rest of the
        entry (answer, metadata), which a reward function receives."""
        entry = self.dataset[rng.randrange(len(self.dataset))]
        columns = {key: value for key, value in entry.items() if key != "question"}
        answer = "" if entry["answer"] is None else entry["answer"]
        return Example(prompt=entry["question"], answer=answer, key=entry["question"], columns=columns)

    def gold(self, problem: Example, completion: str) -> float:
        entry = {"question": problem.prompt, **problem.columns}
        return float(self.dataset.score_answer(completion.strip(), entry))

    def solve(self, problem: Example, rng: random.Random) -> str:
        return self.reference_answer(problem)

    def format_only(self, problem: Example, rng: random.Random) -> str:
        """Another problem's answer: the form of an answer, not this problem's."""
        return self.reference_answer(self.sample(rng))

    def reference_answer(self, problem: Example) -> str:
        if problem.columns["answer"] is None:  # graph_color, rubiks_cube, ...: many answers are right
            raise ValueError(f"reasoning-gym's {self.dataset_name} gives no reference answer: it has no "
                             "demonstrations (sft.source=solver) and no answers to pre-train a tiny base on")
        return problem.columns["answer"]
