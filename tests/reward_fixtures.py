"""Reward specs for tests/test_reward_pool.py, in a module of their own so that spawned reward workers can
import them (a test module would drag in pytest and conftest's imports)."""

import mmap
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path


def plain_score(problem, completion: str, ids: list[int]) -> float:
    """Uses all three arguments, so a completion scored with another's problem or ids scores wrong."""
    return (problem + len(completion) + len(ids)) % 3 / 2


def unruly_score(problem, completion: str, ids: list[int]):
    """Misbehaves as the completion asks; otherwise scores like plain_score."""
    if "hang" in completion:
        time.sleep(1000)
    if "mask" in completion:  # a hang the alarm cannot interrupt: SIGALRM stays pending
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(1000)
    if "exit" in completion:
        os._exit(1)
    if "kill" in completion:
        os.kill(os.getpid(), signal.SIGKILL)
    if "raise" in completion:
        raise ValueError(f"told to raise by {completion!r}\nsecond line")
    if "spin" in completion:
        while True:
            pass
    if "cpu" in completion:  # a spin the alarm cannot interrupt, as in C code: only the CPU limit stops it
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        while True:
            pass
    if "grab" in completion:
        bytearray(50 * 2**30)
    if "reserve" in completion:  # address space any machine gives at once (untouched): only the limit refuses it
        mmap.mmap(-1, 3 * 2**30)
    if "interrupt" in completion:
        raise KeyboardInterrupt("not an Exception: it would stop the trainer were it sent back")
    if completion.startswith("smuggle "):
        raise Smuggled(completion.removeprefix("smuggle "))
    if "none" in completion:
        return None
    if "garbage" in completion:
        return "not a number"
    if "nan" in completion:
        return float("nan")
    return plain_score(problem, completion, ids)


def mark(path: str) -> None:
    Path(path).write_text(str(os.getpid()))


class Smuggled(KeyboardInterrupt):
    """Model text's own exception class: unpickling it runs `mark` wherever it is unpickled."""

    def __reduce__(self):
        return mark, (str(self),)


def always_raises(problem, completion: str, ids: list[int]) -> float:
    return 1 / 0


@dataclass(frozen=True)
class ByName:
    """A spec scoring with one of this module's functions, named so that the spec pickles."""

    function: str
    name: str
    stop_when_most_fail: bool = True  # a user's function; False: a task's own verifier

    def build(self):
        return globals()[self.function]


PLAIN = ByName("plain_score", "fixtures plain")
UNRULY = ByName("unruly_score", "fixtures unruly")
ALWAYS_RAISES = ByName("always_raises", "fixtures always-raises")
TASK_VERIFIER = ByName("unruly_score", "fixtures task verifier", stop_when_most_fail=False)


@dataclass(frozen=True)
class BrokenBuild:
    """A task's own verifier that cannot be built in a worker (its package missing there, say)."""

    name: str = "fixtures broken-build"
    stop_when_most_fail = False

    def build(self):
        raise ImportError("No module named 'a_verifier_package'")


@dataclass(frozen=True)
class CountsBuilds:
    """Appends its worker's pid to `log` each time it is built."""

    log: str
    name: str = "fixtures counts-builds"
    stop_when_most_fail = True

    def build(self):
        with Path(self.log).open("a") as log:
            log.write(f"{os.getpid()}\n")
        return plain_score


@dataclass(frozen=True)
class Imported:
    """Scores 1 where the worker has imported the module that the completion names."""

    name: str = "fixtures imported"
    stop_when_most_fail = True

    def build(self):
        return lambda problem, completion, ids: float(completion in sys.modules)


def score_in_a_joblib_worker(completions: list[str]) -> list[float]:
    """A pool started inside a joblib (loky) worker, as a trial under hydra/launcher=joblib starts one."""
    from harness.rewards.pool import RewardPool

    with RewardPool(workers=1, timeout=5.0, memory_gb=1.0) as pool:
        return pool.score(PLAIN, list(range(len(completions))), completions, [[]] * len(completions)).scores
