"""Held-out problems never reach training, in any of their spellings: a problem is known by its
canonical key, which ignores the order of its rules or numbers and the prompt style."""

import pytest

from harness.config import TaskConfig
from harness.tasks import ProblemStream, heldout_problems, make_task
from harness.tasks.countdown import CountdownProblem
from harness.tasks.ordering import OrderingProblem


@pytest.mark.parametrize("name", ["ordering", "countdown"])
def test_training_stream_never_draws_a_heldout_problem(name):
    task = make_task(TaskConfig(name=name))  # the default difficulty, where reorderings are common
    heldout = heldout_problems(task, 200, seed=0)
    heldout_keys = {p.key for p in heldout}
    assert len(heldout_keys) == 200
    train = ProblemStream(task, seed=1, heldout_keys=heldout_keys).take(10_000)
    assert not heldout_keys & {p.key for p in train}


def test_ordering_key_ignores_rule_order_and_style():
    problem = OrderingProblem(("a", "b", "c"), (("a", "b"), ("c", "b")))
    assert problem.key == OrderingProblem(("a", "b", "c"), (("c", "b"), ("a", "b")), style="natural").key
    assert problem.key != OrderingProblem(("a", "b", "c"), (("a", "b"), ("b", "c"))).key
    assert problem.key != OrderingProblem(("a", "b", "d"), (("a", "b"), ("d", "b"))).key


def test_countdown_key_ignores_number_order_and_style():
    problem = CountdownProblem((3, 7, 2), 23)
    assert problem.key == CountdownProblem((7, 2, 3), 23, style="natural").key
    assert problem.key != CountdownProblem((3, 7, 2), 24).key
    assert problem.key != CountdownProblem((3, 7, 3), 23).key
