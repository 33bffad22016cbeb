"""The reward pool scores in worker processes exactly as a loop would, and a completion that hangs, raises,
spins, eats memory or kills its worker costs only its own score."""

import logging
import multiprocessing
import time

import pytest
from joblib import Parallel, delayed

from harness.rewards.pool import RewardFailed, RewardPool, Scored
from tests.reward_fixtures import (ALWAYS_RAISES, PLAIN, TASK_VERIFIER, UNRULY, BrokenBuild, CountsBuilds, Imported,
                                  plain_score, score_in_a_joblib_worker)


@pytest.fixture(scope="module")
def pool():
    with RewardPool(workers=2, timeout=1.0, memory_gb=1.0, build_timeout=1.0) as pool:
        yield pool


def batch(completions):
    return list(range(len(completions))), list(completions), [[7] * (i % 2) for i in range(len(completions))]


def scored(pool, spec, completions):
    start = time.monotonic()
    result = pool.score(spec, *batch(completions))
    return result, time.monotonic() - start


def expected(completions):
    return [PLAIN.build()(p, c, ids) for p, c, ids in zip(*batch(completions))]


def test_scores_equal_an_in_process_loop(pool):
    completions = [f"answer {'x' * i}" for i in range(11)]
    result, _ = scored(pool, PLAIN, completions)
    assert result == Scored(expected(completions))
    assert len(set(result.scores)) == 3  # the scores tell the completions apart


def test_hang_is_a_timeout_and_the_rest_are_scored(pool):
    completions = ["a", "hang", "bb", "hang", "ccc"]
    result, seconds = scored(pool, UNRULY, completions)
    assert result.scores == [0.0 if c == "hang" else s for c, s in zip(completions, expected(completions))]
    assert (result.timeouts, result.errors, result.crashes) == (2, 0, 0)
    assert result.failures == [(1, "TimeoutError: ran past 1 s"), (3, "TimeoutError: ran past 1 s")]
    assert seconds < 5  # the workers' own alarms, not the pool's longer limit


def test_hang_that_blocks_the_alarm_is_cut_by_the_pool(pool):
    completions = ["a", "mask", "bb"]
    result, seconds = scored(pool, UNRULY, completions)
    assert result.scores == [expected(completions)[0], 0.0, expected(completions)[2]]
    assert result.timeouts == 1 and result.failures[0][0] == 1
    assert result.failures[0][1].startswith("TimeoutError") and "alarm could not" in result.failures[0][1]
    assert seconds < 25


def test_a_killed_worker_is_a_crash_and_the_pool_goes_on(pool):
    completions = ["a", "exit", "bb", "kill", "ccc"]
    result, _ = scored(pool, UNRULY, completions)
    assert result.scores == [0.0 if c in ("exit", "kill") else s for c, s in zip(completions, expected(completions))]
    assert (result.crashes, result.errors, result.timeouts) == (2, 0, 0)
    assert [i for i, _ in result.failures] == [1, 3]
    assert "ProcessExpired" in result.failures[0][1] and "SIGKILL" in result.failures[1][1]
    assert scored(pool, PLAIN, ["x", "yy"])[0] == Scored(expected(["x", "yy"]))


def test_model_text_cannot_stop_the_trainer_nor_run_code_in_it(pool, tmp_path):
    """A KeyboardInterrupt, or an exception class of the text's own whose unpickling runs code, is that
    completion's error, in the worker: nothing of it is sent back to be raised or unpickled here."""
    marker = tmp_path / "unpickled"
    completions = ["a", "interrupt", f"smuggle {marker}", "bb"]
    result, _ = scored(pool, UNRULY, completions)
    assert result.scores == [0.0 if i in (1, 2) else s for i, s in enumerate(expected(completions))]
    assert (result.errors, result.crashes) == (2, 0) and not marker.exists()
    assert "KeyboardInterrupt" in result.failures[0][1] and "Smuggled" in result.failures[1][1]


def test_a_reward_that_cannot_be_built_stops_the_run_even_a_task_s_own(pool):
    with pytest.raises(RewardFailed, match="fixtures broken-build could not be built in a reward worker: error "
                                           "building it: ImportError: No module named 'a_verifier_package'"):
        scored(pool, BrokenBuild(), ["a", "bb"])


def test_raises_are_errors_with_type_and_message(pool, caplog):
    completions = ["a", "raise", "bb", "garbage", "none", "dddd", "nan", "ee"]
    with caplog.at_level(logging.WARNING, logger="harness.rewards.pool"):
        result, _ = scored(pool, UNRULY, completions)
    assert result.scores == [0.0 if i in (1, 3, 4, 6) else s for i, s in enumerate(expected(completions))]
    assert (result.errors, result.timeouts, result.crashes) == (3, 0, 0)  # None is "not applicable"
    assert result.failures == [(1, "ValueError: told to raise by 'raise' second line"),
                               (3, "ValueError: could not convert string to float: 'not a number'"),
                               (6, "ValueError: the score nan is not a finite number")]
    assert [("fixtures unruly" in r.getMessage(), "'garbage'" in r.getMessage()) for r in caplog.records] == [
        (True, False), (True, True), (True, False)]


def test_spinning_cpu_is_counted_not_hung(pool):
    result, seconds = scored(pool, UNRULY, ["spin", "a"])
    assert result.scores == [0.0, expected(["spin", "a"])[1]] and result.timeouts == 1
    assert seconds < 10


@pytest.mark.slow  # an end-to-end run: out of the fast subset
def test_cpu_limit_kills_a_spin_the_alarm_cannot_stop():
    with RewardPool(workers=1, timeout=1.0, memory_gb=1.0, build_timeout=5.0) as patient:  # pool cuts at 8 s
        patient.score(PLAIN, *batch(["warm up"]))
        result, seconds = scored(patient, UNRULY, ["cpu", "a", "b"])
    assert result.scores == [0.0, *expected(["cpu", "a", "b"])[1:]]
    assert result.crashes == 1 and "SIGXCPU" in result.failures[0][1]
    assert seconds < 30  # two kills at 2 to 3 CPU seconds each, and a worker started in between


def test_huge_allocations_fail_alone(pool):
    result, _ = scored(pool, UNRULY, ["grab", "a", "reserve", "bb", "ccc"])
    assert result.errors + result.crashes == 2 and [i for i, _ in result.failures] == [0, 2]
    assert [s for i, s in enumerate(result.scores) if i not in (0, 2)] == [
        s for i, s in enumerate(expected(["grab", "a", "reserve", "bb", "ccc"])) if i not in (0, 2)]
    assert scored(pool, PLAIN, ["x"])[0] == Scored(expected(["x"]))


def test_a_reward_that_mostly_fails_raises_one_line(pool):
    with pytest.raises(RewardFailed) as failed:
        pool.score(ALWAYS_RAISES, *batch(["a", "b", "c"]))
    assert "\n" not in str(failed.value)
    assert "fixtures always-raises" in str(failed.value) and "ZeroDivisionError: division by zero" in str(
        failed.value)
    with pytest.raises(RewardFailed, match="1 of 1"):
        pool.score(UNRULY, *batch(["raise"]))
    assert pool.score(UNRULY, *batch(["raise", "raise", "a", "b"])).errors == 2  # half is not most
    lenient = TASK_VERIFIER  # a task's own verifier failing on model text it cannot parse: scores 0, no stop
    assert pool.score(lenient, *batch(["raise", "raise", "raise"])).errors == 3


def test_workers_are_spawned_light(pool):
    """Forked workers would hold pytest (and the trainer's torch); spawned ones import only what they need."""
    result, _ = scored(pool, Imported(), ["torch", "transformers", "pytest", "multiprocessing"])
    assert result.scores == [0.0, 0.0, 0.0, 1.0]


def test_each_worker_builds_a_spec_once_and_starts_lazily(tmp_path):
    children = set(multiprocessing.active_children())
    with RewardPool(workers=2, timeout=1.0, memory_gb=1.0) as fresh:
        assert fresh.score(PLAIN, [], [], []) == Scored([])
        assert set(multiprocessing.active_children()) == children  # no worker started for nothing
        spec = CountsBuilds(str(tmp_path / "builds"))
        for _ in range(3):
            assert fresh.score(spec, *batch(["a"] * 8)) == Scored(expected(["a"] * 8))
    builders = (tmp_path / "builds").read_text().split()
    assert 1 <= len(builders) <= 2 and len(set(builders)) == len(builders)


def test_mismatched_lengths_are_refused(pool):
    with pytest.raises(ValueError, match="one of each per completion"):
        pool.score(PLAIN, [1], ["a", "b"], [[], []])


def test_a_pool_inside_a_joblib_worker_starts_its_workers():
    """loky makes "loky" its workers' default start method, which a spawned child cannot take up."""
    completions = ["a", "bb"]
    results = Parallel(n_jobs=2)(delayed(score_in_a_joblib_worker)(completions) for _ in range(2))
    assert results == [[plain_score(i, c, []) for i, c in enumerate(completions)]] * 2
