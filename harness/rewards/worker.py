"""What runs inside a reward worker process (harness.rewards.pool): builds a spec once, then scores each
completion under its own wall-clock and CPU limits, so one bad completion costs only itself.

Every worker imports this module, so it imports the standard library only: no torch, no transformers.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import resource
import signal
import sys
from functools import partial
from typing import Any, Callable, Optional, Protocol

Score = Callable[[Any, str, list[int]], float]
# One completion's result: (score, None, None), or (0.0, "error" | "timeout" | BUILD, "TypeName: message")
# (the pool adds "crash" for a worker that died). Plain floats and strings only: they are pickled back.
Outcome = tuple[float, Optional[str], Optional[str]]
SECRET_SUFFIXES = ("_API_KEY", "_TOKEN", "_SECRET", "_PASSWORD")  # WANDB_API_KEY, HF_TOKEN, ...
BUILD = "build"  # the reward itself could not be built in the worker


class RewardSpec(Protocol):
    """A reward as a picklable description, built once per worker process."""

    name: str  # how messages name it, e.g. "task.gold=rewards.py:score" or "ordering.gold"
    # A user's function failing on most of a batch is broken: the run stops (RewardFailed). A task's own
    # verifier may raise on text it cannot parse (reasoning-gym's prime_factorization does): that scores 0.
    stop_when_most_fail: bool

    def build(self) -> Score:
        """The scoring function: (problem, completion, completion_ids) -> score."""


class CompletionTimeout(BaseException):
    """Raised by SIGALRM inside a scoring call; a BaseException so that a reward's own `except Exception`
    cannot swallow it."""


_built: dict[bytes, Score] = {}  # spec digest -> scoring function: build() runs once per worker


def init_worker(memory_gb: float) -> None:
    """Caps this worker's address space at what it holds now plus memory_gb, so an unbounded allocation
    fails here (MemoryError) or kills this worker, never the machine. Never raises: pebble would restart a
    worker whose initializer fails, again and again."""
    for threads in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(threads, "1")  # a thread pool per core would eat the address-space cap
    for name in [n for n in os.environ if n.endswith(SECRET_SUFFIXES)]:  # model text may read the environment
        del os.environ[name]
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGXCPU dumps core by default: a GB per kill
        with open("/proc/self/statm") as statm:
            in_use = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (_within(in_use + int(memory_gb * 2**30), hard), hard))
    except (OSError, ValueError) as error:  # no /proc (not Linux) or a hard limit in the way: run unlimited
        print(f"reward worker {os.getpid()}: memory not limited: {describe(error)}", file=sys.stderr)


def score_chunk(spec_bytes: bytes, items: list[tuple], timeout: float, build_timeout: float) -> list[Outcome]:
    """Scores (problem, completion, completion_ids) items in order, each under its own limits. A spec that
    cannot be built fails every item as BUILD: no completion's fault, the pool stops the run on it."""
    score, failure = _spec(spec_bytes, build_timeout)
    if score is None:
        return [(0.0, BUILD, f"{failure[0]} building it: {failure[1]}")] * len(items)
    return [_outcome(*_limited(partial(_scored, score, item), timeout)) for item in items]


def _scored(score: Score, item: tuple) -> float:
    return _as_score(score(*item))


def describe(error: BaseException) -> str:
    """'TypeName: message' on one line, short enough for a log line or an exception message."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"[:300]


def _spec(spec_bytes: bytes, build_timeout: float) -> tuple[Optional[Score], Optional[tuple[str, str]]]:
    key = hashlib.sha256(spec_bytes).digest()
    if key not in _built:
        score, failure = _limited(lambda: pickle.loads(spec_bytes).build(), build_timeout)
        if failure is not None:
            return None, failure  # not cached: the next chunk tries again
        _built[key] = score
    return _built[key], None


def _outcome(score: Optional[float], failure: Optional[tuple[str, str]]) -> Outcome:
    return (score, None, None) if failure is None else (0.0, *failure)


def _as_score(value: Any) -> float:
    if value is None:  # TRL's "not applicable", not a failure
        return 0.0
    if not math.isfinite(score := float(value)):  # it would poison a group's advantages
        raise ValueError(f"the score {score} is not a finite number")
    return score


def _limited(call: Callable[[], Any], seconds: float) -> tuple[Any, Optional[tuple[str, str]]]:
    """call() under a wall-clock alarm (a timeout) and a CPU-time limit (SIGXCPU kills the worker if the
    call spins where the alarm cannot interrupt it, in C code): (value, None) or (None, (kind, message))."""
    signal.signal(signal.SIGALRM, _raise_timeout)  # a previous call may have replaced or blocked it
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_cap = math.ceil(usage.ru_utime + usage.ru_stime + seconds) + 1  # CPU seconds so far, and 1 to 2 more
    resource.setrlimit(resource.RLIMIT_CPU, (_within(cpu_cap, hard), hard))
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        value = call()
        signal.setitimer(signal.ITIMER_REAL, 0)
        return value, None
    except CompletionTimeout:
        return None, ("timeout", f"TimeoutError: ran past {seconds:g} s")
    except BaseException as error:  # untrusted code's failure is its completion's: exit(), KeyboardInterrupt, its
        try:  # own exception classes too, which must never be pickled back to the trainer (their __reduce__ runs there)
            message = describe(error)
        except BaseException:  # a __str__ that raises, or hangs until the alarm
            message = type(error).__name__
        return None, ("error", message)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))  # an idle worker must never hit the cap


def _within(limit: int, hard: int) -> int:
    return limit if hard == resource.RLIM_INFINITY else min(limit, hard)


def _raise_timeout(signum, frame) -> None:
    raise CompletionTimeout()
