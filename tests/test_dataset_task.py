"""task=dataset: a user's own file, in each form datasets reads, becomes the same problems; test_fraction's
split is stable and disjoint from training; bad input is refused in one line naming the value."""

import csv
import json
import random

import datasets
import pytest

from harness.config import TaskConfig
from harness.tasks import make_task
from harness.tasks.dataset import DatasetTask, is_held_out, load_splits

ROWS = [{"prompt": f"What is {i} + {i}?", "answer": f"{2 * i}", "level": i % 3} for i in range(300)]
ROWS[7]["answer"] = "007"  # CSV keeps an answer as written, never as a number


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def write_csv(path, rows):
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def write_parquet(path, rows):
    datasets.Dataset.from_list(rows).to_parquet(path)
    return str(path)


def write_folder(path, rows):
    datasets.Dataset.from_list(rows).save_to_disk(path)
    return str(path)


WRITERS = {"jsonl": ("rows.jsonl", write_jsonl), "csv": ("rows.csv", write_csv),
           "parquet": ("rows.parquet", write_parquet), "disk": ("rows", write_folder)}


def write(form, folder, rows) -> str:
    name, writer = WRITERS[form]
    return writer(folder / name, rows)


def dataset_task(**settings) -> DatasetTask:
    return make_task(TaskConfig(name="dataset", **settings))


def as_tuples(problems) -> list[tuple]:
    return sorted((p.prompt, p.answer, p.key, sorted(p.columns.items())) for p in problems)


@pytest.fixture
def jsonl(tmp_path):
    return write_jsonl(tmp_path / "train.jsonl", ROWS)


@pytest.mark.parametrize("form", [form for form in WRITERS if form != "jsonl"])
def test_each_form_reads_the_same_rows_as_jsonl(tmp_path, jsonl, form):
    expected = dataset_task(train_path=jsonl, test_fraction=0.2)
    found = dataset_task(train_path=write(form, tmp_path, ROWS), test_fraction=0.2)
    assert as_tuples(found.train) == as_tuples(expected.train)
    assert as_tuples(found.heldout_split()) == as_tuples(expected.heldout_split())
    assert {p.answer for p in found.train + found.test} >= {"007", "2", "598"}


@pytest.mark.parametrize("answers", [[7, "007"], [7, 7.5]])
def test_json_answers_the_reader_would_change_are_refused_in_one_line(tmp_path, answers):
    """JSON's reader gives 7 beside "007" as 7, and 7 beside 7.5 as 7.0: every such answer a wrong reference."""
    rows = [{"prompt": f"q{i}", "answer": answers[i % 2]} for i in range(40)]
    with pytest.raises(ValueError, match=r"column 'answer' was read as .*, not as written") as error:
        dataset_task(train_path=write_jsonl(tmp_path / "mixed.jsonl", rows), test_fraction=0.2)
    assert "\n" not in str(error.value)
    whole = [{"prompt": f"q{i}", "answer": i} for i in range(40)]  # whole numbers are exact: kept
    assert {p.answer for p in dataset_task(train_path=write_jsonl(tmp_path / "whole.jsonl", whole),
                                           test_fraction=0.2).train} <= {str(i) for i in range(40)}


def test_a_saved_dataset_dict_gives_its_train_and_test_splits(tmp_path):
    folder = tmp_path / "dict"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:200]),
                          "test": datasets.Dataset.from_list(ROWS[200:])}).save_to_disk(folder)
    task = dataset_task(train_path=str(folder), test_path=str(folder))
    files = dataset_task(train_path=write_jsonl(tmp_path / "a.jsonl", ROWS[:200]),
                         test_path=write_jsonl(tmp_path / "b.jsonl", ROWS[200:]))
    assert as_tuples(task.train) == as_tuples(files.train)
    assert {p.prompt for p in task.heldout_split()} == {row["prompt"] for row in ROWS[200:]}


def test_test_fraction_holds_out_about_that_share_the_same_rows_in_any_order(tmp_path, jsonl):
    shuffled = ROWS[:]
    random.Random(1).shuffle(shuffled)
    task = dataset_task(train_path=jsonl, test_fraction=0.3)
    again = dataset_task(train_path=write_jsonl(tmp_path / "shuffled.jsonl", shuffled), test_fraction=0.3)
    held_out = {p.key for p in task.heldout_split()}
    assert held_out == {p.key for p in again.heldout_split()}
    assert 60 <= len(held_out) <= 120  # 90 expected; the binomial's sd is 8
    assert len(task.train) + len(task.test) == len(ROWS)
    assert held_out == {row["prompt"] for row in ROWS if is_held_out(row["prompt"], 0.3)}


def test_sample_draws_training_rows_only_and_all_of_them(jsonl):
    task = dataset_task(train_path=jsonl, test_fraction=0.2)
    held_out = {p.key for p in task.heldout_split()}
    rng = random.Random(0)
    drawn = {task.sample(rng).key for _ in range(3000)}
    assert not drawn & held_out
    assert drawn == {p.key for p in task.train}


def test_chat_message_prompts_become_their_contents_in_order(tmp_path):
    rows = [{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Say {i}."}],
             "answer": str(i)} for i in range(20)]
    task = dataset_task(train_path=write_jsonl(tmp_path / "chat.jsonl", rows), test_fraction=0.5)
    assert {p.prompt for p in task.train + task.test} == {f"Be brief.\nSay {i}." for i in range(20)}
    assert "prompt" not in task.train[0].columns and task.train[0].columns["answer"] == task.train[0].answer


def test_solve_gives_the_solution_column_and_format_only_another_rows_answer(tmp_path):
    rows = [{**row, "worked": f"{row['prompt']} It is {row['answer']}."} for row in ROWS[:50]]
    task = dataset_task(train_path=write_jsonl(tmp_path / "w.jsonl", rows), test_fraction=0.2, solution_key="worked")
    plain = dataset_task(train_path=write_jsonl(tmp_path / "p.jsonl", ROWS[:50]), test_fraction=0.2)
    rng = random.Random(0)
    problem = task.train[0]
    assert task.solve(problem, rng) == f"{problem.prompt} It is {problem.answer}."
    assert plain.solve(plain.train[0], rng) == plain.train[0].answer
    others = {task.format_only(problem, rng) for _ in range(200)}
    assert problem.answer not in others and others <= {p.answer for p in task.train}


def test_difficulty_names_the_data_by_its_content(tmp_path):
    path = tmp_path / "rows.jsonl"
    before = dataset_task(train_path=write_jsonl(path, ROWS), test_fraction=0.2).difficulty()
    assert before == dataset_task(train_path=write_jsonl(path, ROWS), test_fraction=0.2).difficulty()
    after = dataset_task(train_path=write_jsonl(path, ROWS[:-1]), test_fraction=0.2).difficulty()
    assert before["train"] != after["train"] and len(before["train"]) == 16 and before["test"] is None
    folders = write_folder(tmp_path / "train", ROWS[:200]), write_folder(tmp_path / "test", ROWS[200:])
    assert len(dataset_task(train_path=folders[0], test_path=folders[1]).difficulty()["test"]) == 16


def test_gold_is_the_users_function(tmp_path, jsonl):
    (tmp_path / "rewards.py").write_text("def exact(completions, answer, **kw):\n"
                                         "    return [float(c.strip() == a) for c, a in zip(completions, answer)]\n")
    task = dataset_task(train_path=jsonl, test_fraction=0.2, gold=f"{tmp_path / 'rewards.py'}:exact")
    problem = task.train[3]
    assert task.gold(problem, f" {problem.answer} ") == 1.0 and task.gold(problem, "no") == 0.0


def refusal(cfg) -> str:
    with pytest.raises(ValueError) as caught:
        load_splits(cfg)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_bad_data_is_refused_in_one_line_naming_the_value(tmp_path, jsonl):
    missing = str(tmp_path / "nowhere.jsonl")
    assert missing in refusal(TaskConfig(name="dataset", train_path=missing, test_fraction=0.2))
    text = tmp_path / "rows.txt"
    text.write_text("hello")
    assert ".txt" in refusal(TaskConfig(name="dataset", train_path=str(text), test_fraction=0.2))
    message = refusal(TaskConfig(name="dataset", train_path=jsonl, test_fraction=0.2, prompt_key="question"))
    assert "'question'" in message and "prompt, answer, level" in message
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert str(empty) in refusal(TaskConfig(name="dataset", train_path=jsonl, test_path=str(empty)))
    header_only = tmp_path / "header.csv"
    header_only.write_text("prompt,answer\n")
    assert "no rows" in refusal(TaskConfig(name="dataset", train_path=jsonl, test_path=str(header_only)))
    assert "none of the 2 rows" in refusal(
        TaskConfig(name="dataset", train_path=write_jsonl(tmp_path / "two.jsonl", ROWS[:2]), test_fraction=0.01))
    assert "every prompt is held out" in refusal(TaskConfig(name="dataset", train_path=jsonl, test_path=jsonl))
    both = refusal(TaskConfig(name="dataset", train_path=jsonl, test_path=jsonl, test_fraction=0.2))
    assert jsonl in both and "0.2" in both
    assert "task.train_path" in refusal(TaskConfig(name="dataset", test_fraction=0.2))
    assert "task.test_fraction" in refusal(TaskConfig(name="dataset", train_path=jsonl))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "a", "answer"\n')
    assert str(broken) in refusal(TaskConfig(name="dataset", train_path=str(broken), test_fraction=0.2))
