"""Rewards scored out of the trainer's process: model text is untrusted (some verifiers `eval` it), and a
user's reward may hang, raise or kill its process. A failed completion scores 0 and is counted; a batch
that mostly fails raises RewardFailed.

Fast path: a batch goes out as about 2 * workers chunks, each completion limited inside the worker
(harness.rewards.worker). Slow path: a chunk whose worker died, or that hung where the worker's alarm could
not reach (C code), is scored again one completion per task, to find which completion did it.
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import signal
import time
from collections import Counter
from concurrent.futures import TimeoutError
from dataclasses import dataclass, field
from typing import Optional

import pebble

from harness.rewards.worker import BUILD, Outcome, RewardSpec, describe, init_worker, score_chunk

log = logging.getLogger(__name__)
CHUNK_MARGIN = 2.0  # seconds a chunk task gets beyond its completions' limits: hand-off and pickling
SINGLE_MARGIN = 2.0  # the same for one completion, on the slow path: more than the CPU limit's extra second
MAX_RESTARTS = 3
STANDARD_START_METHODS = ("fork", "spawn", "forkserver")
WORKER_START = 60.0  # seconds a batch allows for workers to start (spawned: an interpreter and its imports)
KIND_COUNTS = {"error": "errors", "timeout": "timeouts", "crash": "crashes"}


@dataclass
class Scored:
    scores: list[float]  # one per completion, in order; a failed completion scores 0.0
    errors: int = 0  # completions whose call raised
    timeouts: int = 0  # completions whose call ran past the time limit
    crashes: int = 0  # completions whose call killed its worker (a segfault, os._exit, a CPU or memory limit)
    failures: list[tuple[int, str]] = field(default_factory=list)  # (index, "TypeName: message"), by index


class RewardFailed(RuntimeError):
    """Most of a batch failed: the reward itself is broken, not the completions."""


class RewardPool:
    """Worker processes that score completions; started on the first non-empty batch (seconds)."""

    def __init__(self, workers: int, timeout: float, memory_gb: float, build_timeout: float = 30.0):
        self.workers, self.timeout, self.memory_gb = workers, timeout, memory_gb
        self.build_timeout = build_timeout  # a worker builds a spec inside its first task: time it may take
        self._pool: Optional[pebble.ProcessPool] = None
        self._restarts = 0  # pools replaced since a worker last answered

    def score(self, spec: RewardSpec, problems: list, completions: list[str],
              completion_ids: list[list[int]]) -> Scored:
        """Each completion's score, as `spec.build()(problem, completion, ids)` would give in a loop."""
        if not len(problems) == len(completions) == len(completion_ids):
            raise ValueError(f"{len(problems)} problems, {len(completions)} completions, "
                             f"{len(completion_ids)} completion_ids: one of each per completion")
        if not completions:
            return Scored([])
        outcomes = self._outcomes(pickle.dumps(spec), list(zip(problems, completions, completion_ids)), spec.name)
        built = next((message for _, kind, message in outcomes if kind == BUILD), None)
        if built is not None:  # a reward that cannot be built would score every completion 0, silently
            raise RewardFailed(f"reward {spec.name} could not be built in a reward worker: {built}")
        scored = _tally(outcomes)
        for index, (_, kind, message) in enumerate(outcomes):
            if kind is not None:
                log.warning("reward %s: %s on completion %d %r: %s", spec.name, kind, index,
                            completions[index][:200], message)
        if spec.stop_when_most_fail and 2 * len(scored.failures) > len(completions):
            raise RewardFailed(f"reward {spec.name} failed on {len(scored.failures)} of {len(completions)} "
                               f"completions; the first: {scored.failures[0][1]}")
        return scored

    def close(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> "RewardPool":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _outcomes(self, spec_bytes: bytes, items: list[tuple], name: str) -> list[Outcome]:
        outcomes: list[Optional[Outcome]] = [None] * len(items)
        chunks = _chunks(len(items), 2 * self.workers)
        futures = [self._schedule(spec_bytes, [items[i] for i in chunk], CHUNK_MARGIN) for chunk in chunks]
        again, answered, deadline = [], False, self._deadline([len(chunk) for chunk in chunks], CHUNK_MARGIN)
        for chunk, future in zip(chunks, futures):
            try:
                outcomes[chunk.start:chunk.stop] = future.result(timeout=_left(deadline))
                answered = True
            except Exception:  # died, hung, or anything else that ended the chunk early: find which completion
                future.cancel()  # one no worker took yet
                again.extend(chunk)
        singles = [self._schedule(spec_bytes, [items[i]], SINGLE_MARGIN) for i in again]
        deadline = self._deadline([1] * len(singles), SINGLE_MARGIN)
        for i, future in zip(again, singles):
            outcomes[i], replied = self._single(future, deadline)
            answered = answered or replied
        if not answered:  # pebble restarts workers that die as they start, and a queued task never times out
            raise RewardFailed(f"reward {name}: no worker answered for any of {len(items)} completions (they die "
                               f"as they start: a script without an `if __name__ == '__main__':` guard, or one "
                               f"read from stdin, cannot spawn processes)")
        if any(kind != "crash" for _, kind, _ in outcomes):
            self._restarts = 0  # a worker lived to answer: the pool works
        return outcomes

    def _schedule(self, spec_bytes: bytes, items: list[tuple], margin: float) -> pebble.ProcessFuture:
        return self._running_pool().schedule(score_chunk, (spec_bytes, items, self.timeout, self.build_timeout),
                                             timeout=self._limit(len(items), margin))

    def _limit(self, size: int, margin: float) -> float:
        """Seconds a task of `size` completions may run once a worker has it."""
        return self.timeout * size + margin + self.build_timeout

    def _deadline(self, sizes: list[int], margin: float) -> float:
        """When the last of tasks of these sizes must be done, had they run one after another, once workers
        started: past it, a task no worker took is given up (pebble's timeout starts only when one takes it)."""
        return time.monotonic() + WORKER_START + sum(self._limit(size, margin) for size in sizes)

    def _single(self, future: pebble.ProcessFuture, deadline: float) -> tuple[Outcome, bool]:
        """The outcome, and whether a worker gave it."""
        try:
            [outcome] = future.result(timeout=_left(deadline))
            return outcome, True
        except TimeoutError:
            if not future.done():  # no worker took it
                future.cancel()
                return (0.0, "timeout", "TimeoutError: no reward worker took it"), False
            return (0.0, "timeout", f"TimeoutError: ran past {self.timeout:g} s where the alarm could not stop it"), True
        except pebble.ProcessExpired as error:
            return (0.0, "crash", f"ProcessExpired: the worker died ({_death(error.exitcode)})"), True
        except Exception as error:  # a broken pool, an unpicklable problem: no worker scored it, scored 0
            return (0.0, "error", describe(error)), False

    def _running_pool(self) -> pebble.ProcessPool:
        """The pool, started now if need be; a broken one (pebble gives up when a worker dies with no task
        running) is replaced."""
        if self._pool is not None and not self._pool.active:
            self._restarts += 1
            if self._restarts > MAX_RESTARTS:  # workers that die as they start would be restarted forever
                raise RewardFailed(f"reward workers died {self._restarts} times without scoring anything: they "
                                   f"cannot start (a script read from stdin, or one without an "
                                   f"`if __name__ == '__main__':` guard, cannot spawn processes)")
            log.warning("reward pool broken; starting a new one")
            self.close()
        if self._pool is None:
            if multiprocessing.get_start_method(allow_none=True) not in (None, *STANDARD_START_METHODS):
                # A joblib (loky) worker's default is "loky", which a spawned child is told to use and cannot:
                # it dies as it starts. The children of this process start as Python's own can.
                multiprocessing.set_start_method("spawn", force=True)
            self._pool = pebble.ProcessPool(self.workers, initializer=init_worker, initargs=(self.memory_gb,),
                                            context=multiprocessing.get_context("spawn"))  # never fork torch
        return self._pool


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _chunks(size: int, most: int) -> list[range]:
    """`size` indices in min(size, most) contiguous chunks of nearly equal length."""
    count = min(size, most)
    return [range(size * j // count, size * (j + 1) // count) for j in range(count)]


def _tally(outcomes: list[Outcome]) -> Scored:
    kinds = Counter(KIND_COUNTS[kind] for _, kind, _ in outcomes if kind is not None)
    failures = [(i, message) for i, (_, kind, message) in enumerate(outcomes) if kind is not None]
    return Scored([score for score, _, _ in outcomes], failures=failures, **kinds)


def _death(exitcode: int) -> str:
    if exitcode is not None and exitcode < 0 and -exitcode in signal.valid_signals():
        return f"killed by {signal.Signals(-exitcode).name}"
    return f"exit code {exitcode}"
