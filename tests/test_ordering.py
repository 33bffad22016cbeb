import random

import pytest

from harness.tasks import ProblemStream, heldout_problems
from harness.tasks.ordering import OrderingProblem, OrderingTask

PROBLEM = OrderingProblem(items=("a", "b", "c", "d"), constraints=(("a", "b"), ("c", "b"), ("d", "a")))


@pytest.fixture
def task():
    return OrderingTask(num_items=4, num_constraints=3, item_pool=8, missing_penalty=0.5)


@pytest.mark.parametrize("answer, gold", [
    ("d a c b", 1.0),  # every constraint holds
    ("c d a b", 1.0),
    ("a d c b", 0.0),  # d must precede a
    ("d a c", 0.0),  # b missing
    ("d a c b b", 0.0),  # a repeat is not a permutation
    ("d a c b e", 0.0),  # an item that is not in the problem
    ("", 0.0),
])
def test_gold_accepts_only_complete_valid_orders(task, answer, gold):
    assert task.gold(PROBLEM, answer) == gold


def test_proxy_counts_violations_and_missing_items(task):
    assert task.proxy(PROBLEM, "d a c b") == 1.0
    assert task.proxy(PROBLEM, "a d c b") == pytest.approx(1 - 1 / 3)  # d<a violated
    assert task.proxy(PROBLEM, "b a c d") == pytest.approx(1 - 3 / 3)  # all three violated
    assert task.proxy(PROBLEM, "d a c") == pytest.approx(1 - 0.5 * 1 / 4)  # b missing, nothing violated


def test_a_partial_proxy_checks_k_rules_each_weighing_one_mth():
    """k of m rules, the same k for a problem in every process (whatever their order in the prompt): a
    violation of an unchecked rule costs nothing, a checked one 1/m whatever k."""
    partial = {k: OrderingTask(4, 3, 8, missing_penalty=0.5, proxy_rules=k) for k in (1, 2, 3)}
    shuffled = OrderingProblem(PROBLEM.items, PROBLEM.constraints[::-1])
    for k, task in partial.items():
        checked = task.checked_rules(PROBLEM)
        assert len(checked) == k and set(checked) == set(task.checked_rules(shuffled))
        for rule in PROBLEM.constraints:  # each rule alone broken: the answer that keeps every other
            answer = {("a", "b"): "d c b a", ("c", "b"): "d a b c", ("d", "a"): "a d c b"}[rule]
            broken = {r for r in PROBLEM.constraints if task.gold(OrderingProblem(PROBLEM.items, (r,)), answer) == 0}
            assert broken == {rule} and task.gold(PROBLEM, answer) == 0.0
            assert task.proxy(PROBLEM, answer) == pytest.approx(1 - 1 / 3 if rule in checked else 1.0)


def test_proxy_is_hackable_by_dropping_items():
    """With no penalty for missing items, one item alone scores a perfect proxy and zero gold."""
    hackable = OrderingTask(num_items=4, num_constraints=3, item_pool=8, missing_penalty=0.0)
    assert hackable.proxy(PROBLEM, "b") == 1.0
    assert hackable.gold(PROBLEM, "b") == 0.0
    # A truthful but wrong answer scores lower on the proxy than the hack.
    assert hackable.proxy(PROBLEM, "a d c b") < hackable.proxy(PROBLEM, "b")


def test_solver_always_satisfies_the_gold_verifier():
    task = OrderingTask(num_items=8, num_constraints=10, item_pool=12, missing_penalty=0.15)
    rng = random.Random(0)
    for _ in range(500):
        problem = task.sample(rng)
        assert task.gold(problem, task.solve(problem, rng)) == 1.0


def test_random_orders_pass_at_the_calibrated_rate():
    """A format-only answer passes (6 items, 4 constraints) about 8.5% of the time."""
    task = OrderingTask(num_items=6, num_constraints=4, item_pool=12, missing_penalty=0.15)
    rng = random.Random(1)
    n = 20_000
    rate = sum(task.gold(p, task.format_only(p, rng)) for p in (task.sample(rng) for _ in range(n))) / n
    assert rate == pytest.approx(0.085, abs=0.01)


def test_difficulty_rises_with_constraints():
    rng = random.Random(2)
    rates = []
    for m in (3, 10):
        task = OrderingTask(num_items=6, num_constraints=m, item_pool=12, missing_penalty=0.15)
        rates.append(sum(task.gold(p, task.format_only(p, rng)) for p in (task.sample(rng) for _ in range(5000))))
    assert rates[0] > 5 * rates[1]


def test_heldout_set_is_fixed_and_never_trained_on():
    task = OrderingTask(num_items=4, num_constraints=2, item_pool=6, missing_penalty=0.15)
    first, again = heldout_problems(task, 50, seed=7), heldout_problems(task, 50, seed=7)
    assert first == again and len({p.key for p in first}) == 50
    heldout_keys = {p.key for p in first}
    train = ProblemStream(task, seed=0, heldout_keys=heldout_keys).take(2000)
    assert not heldout_keys & {p.key for p in train}


def test_prompt_lists_items_and_constraints():
    assert PROBLEM.prompt == "a b c d | a < b c < b d < a ="
