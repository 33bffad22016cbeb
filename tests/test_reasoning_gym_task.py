"""reasoning-gym's datasets as a task: problems are the harness's to draw (same seed, same problems), the
verifier is the dataset's own, settings reach the generator, and a wrong recipe fails in one line."""

import json
import pickle
import random

import pytest

from harness.config import TaskConfig
from harness.tasks.base import Demonstrations, FormatOnly, HandMadeProxy, Vocabulary
from harness.tasks.reasoning_gym import ReasoningGymTask, checked_dataset

DATASETS = ["letter_counting", "basic_arithmetic", "spell_backward"]  # algorithmic, arithmetic, words


def make_task(dataset: str, **settings) -> ReasoningGymTask:
    return ReasoningGymTask.from_config(TaskConfig(name="reasoning_gym", dataset=dataset, dataset_config=settings))


@pytest.fixture(scope="module", params=DATASETS)
def task(request) -> ReasoningGymTask:
    return make_task(request.param)


def draw(task, seed: int, count: int = 20) -> list:
    rng = random.Random(seed)
    return [task.sample(rng) for _ in range(count)]


def test_the_same_seed_draws_the_same_problems_and_another_seed_others(task):
    assert [p.key for p in draw(task, 1)] == [p.key for p in draw(task, 1)]
    assert [p.prompt for p in draw(task, 1)] == [p.prompt for p in draw(task, 1)]
    assert len({p.key for p in draw(task, 1)} & {p.key for p in draw(task, 2)}) < 5


def test_keys_name_the_question(task):
    first, again = draw(task, 3, 5), draw(task, 3, 5)
    for problem, same in zip(first, again):
        assert problem is not same and problem.key == same.key and hash(problem.key) == hash(same.key)
        assert problem.key == problem.prompt
    assert len({p.key for p in draw(task, 3, 50)}) > 40


def test_the_reference_answer_scores_full_marks_and_a_wrong_one_less(task):
    rng = random.Random(4)
    for problem in draw(task, 4):
        answer = task.solve(problem, rng)
        assert answer == problem.answer == problem.columns["answer"]
        assert task.gold(problem, answer) == 1.0
        assert task.gold(problem, f"  {answer}\n") == 1.0  # the completion is stripped
        assert task.gold(problem, "7" + answer) < 1.0
        assert task.gold(problem, "") == 0.0


def test_format_only_gives_another_problems_answer(task):
    differs = 0
    for seed, problem in enumerate(draw(task, 5)):
        form = task.format_only(problem, random.Random(seed))
        assert form == task.sample(random.Random(seed)).answer
        differs += form != problem.answer
    assert differs >= 10


def test_columns_hold_the_rest_of_the_entry_as_json(task):
    problem = draw(task, 6, 1)[0]
    assert set(problem.columns) == {"answer", "metadata"}
    assert problem.columns["metadata"]["source_dataset"] == task.dataset_name
    json.dumps(problem.columns)


def test_problems_survive_pickling_and_score_the_same(task):
    for problem in draw(task, 7, 5):
        copy = pickle.loads(pickle.dumps(problem))
        assert (copy.prompt, copy.key, copy.columns) == (problem.prompt, problem.key, problem.columns)
        for completion in [problem.answer, problem.answer + "7", "nonsense"]:
            assert task.gold(copy, completion) == task.gold(problem, completion)


def test_settings_reach_the_generator():
    short, long = make_task("letter_counting", min_words=2, max_words=2), make_task("letter_counting", min_words=30,
                                                                                      max_words=30)
    assert all(p.columns["metadata"]["span_length"] == 2 for p in draw(short, 8))
    assert all(p.columns["metadata"]["span_length"] == 30 for p in draw(long, 8))
    assert min(len(p.prompt) for p in draw(long, 8)) > max(len(p.prompt) for p in draw(short, 8))


def test_a_list_from_the_command_line_becomes_the_tuple_a_setting_wants():
    task = make_task("complex_arithmetic", operations=["+"], operations_weights=[1.0])
    assert task.dataset.config.operations == ("+",)
    assert all(p.prompt.startswith("Add") for p in draw(task, 9))


def test_difficulty_names_the_dataset_its_settings_sorted_and_the_library_version():
    difficulty = make_task("letter_counting", min_words=3, max_words=4).difficulty()
    assert list(difficulty) == ["dataset", "max_words", "min_words", "reasoning_gym"]
    assert difficulty["dataset"] == "letter_counting" and difficulty["min_words"] == 3
    assert difficulty["reasoning_gym"].count(".") >= 1
    json.dumps(difficulty)


def test_a_dataset_without_a_reference_answer_is_scored_from_its_metadata_but_cannot_demonstrate():
    task = make_task("graph_color")
    problem = draw(task, 10, 1)[0]
    assert task.gold(problem, json.dumps(problem.columns["metadata"]["possible_answer"])) == 1.0
    with pytest.raises(ValueError, match="no reference answer"):
        task.solve(problem, random.Random(0))


def test_the_task_claims_only_the_capabilities_it_has():
    task = make_task("letter_counting")
    assert isinstance(task, Demonstrations) and isinstance(task, FormatOnly)
    assert not isinstance(task, HandMadeProxy) and not isinstance(task, Vocabulary)


@pytest.mark.parametrize("name, settings, expected", [
    ("leter_counting", {}, "did you mean letter_counting"),
    ("no_such_thing_at_all", {}, "import reasoning_gym.factory"),
    (None, {}, "task.dataset"),
    ("letter_counting", {"min_word": 3}, "has no setting 'min_word': did you mean min_words"),
    ("letter_counting", {"seed": 3}, "the harness fixes the seed"),
    ("letter_counting", {"min_words": 0}, "min_words must be positive"),
    ("letter_counting", {"min_words": 5, "max_words": 2}, "max_words must be >= min_words"),
    ("complex_arithmetic", {"operations": ["+"]}, "makes no problem"),  # valid to validate(), not to generate
])
def test_a_wrong_dataset_or_setting_is_refused_in_one_line(name, settings, expected):
    with pytest.raises(ValueError, match=expected) as refused:
        checked_dataset(name, settings)
    assert "\n" not in str(refused.value)


def test_the_task_refuses_what_checked_dataset_refuses():
    with pytest.raises(ValueError, match="did you mean letter_counting"):
        make_task("leter_counting")


def test_good_settings_pass_the_check():
    checked_dataset("letter_counting", {"min_words": 2, "max_words": 3})
