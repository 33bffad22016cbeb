"""The stage cache: keyed by exactly what a stage reads, computed once, never half-stored, and
invisible in the numbers (a run with it gives what a run without it gives, bit for bit)."""

import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from harness import cache, pipeline
from harness.pipeline import Pipeline
from harness.tracking import read_jsonl

SMOKE = ["experiment=smoke", "grpo.steps=2", "checkpoint.keep=all", "tracking=disabled"]
WALL_CLOCK = ("step_time", "timing/", "tokens_per_second")


def untimed(path) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.startswith(WALL_CLOCK)} for row in read_jsonl(path)]


def keys(compose, *overrides) -> dict:
    pipe = Pipeline.__new__(Pipeline)  # the keys need only the config: no model is built
    pipe.cfg = compose(*SMOKE, *overrides)
    return {stage: pipe._key(stage) for stage in cache.STAGE_READS}


def test_a_key_changes_with_what_the_stage_reads_and_nothing_else(compose, monkeypatch):
    before = keys(compose)
    grpo_only = keys(compose, "grpo.beta=0.1", "grpo.num_generations=4", "task.reward=proxy", "checkpoint.every=1")
    assert grpo_only == before  # a sweep over grpo.* shares its cold start
    explore = keys(compose, "explore.learning_rate=1e-3")
    assert all(explore[stage] != before[stage] for stage in ("explore", "seed", "sft"))  # the chain follows
    sft = keys(compose, "sft.learning_rate=1e-3")
    assert sft["sft"] != before["sft"] and sft["explore"] == before["explore"] and sft["seed"] == before["seed"]
    seeded = keys(compose, "seed=1")
    assert all(seeded[stage] != before[stage] for stage in cache.STAGE_READS)
    monkeypatch.setattr(cache, "code_version", lambda: "another version of harness/")
    assert all(v != before[k] for k, v in keys(compose).items())


def test_a_run_reusing_its_stages_gives_the_numbers_of_a_run_computing_them(compose, model_cache, tmp_path):
    runs = {}
    for name, overrides in (("off", ["cache.stages=false"]), ("first", []), ("again", [])):
        cfg = compose(*SMOKE, f"model.cache_dir={model_cache}", f"cache.dir={tmp_path / 'stages'}", *overrides)
        cfg.run_name = name
        Pipeline(cfg, tmp_path / name).run()
        runs[name] = tmp_path / name
    for stage in ("explore", "seed", "sft"):
        assert "reused_from" not in json.loads((runs["first"] / stage / "summary.json").read_text())
        assert json.loads((runs["again"] / stage / "summary.json").read_text())["reused_from"] == "first"
    for run in ("first", "again"):
        for stage in pipeline.STAGES:
            for log in ("metrics.jsonl", "eval.jsonl"):
                assert untimed(runs[run] / stage / log) == untimed(runs["off"] / stage / log), (run, stage, log)
        final = load_file(runs[run] / "grpo" / "checkpoint" / "model.safetensors")
        reference = load_file(runs["off"] / "grpo" / "checkpoint" / "model.safetensors")
        assert all(final[k].equal(reference[k]) for k in reference)
        assert (runs[run] / "seed" / "seed.jsonl").read_bytes() == (runs["off"] / "seed" / "seed.jsonl").read_bytes()
        assert json.loads((runs[run] / "summary.json").read_text()) == json.loads(
            (runs["off"] / "summary.json").read_text())
    entries = (tmp_path / "stages").glob("*/*/manifest.json")
    assert sorted(p.parent.parent.name for p in entries) == ["explore", "seed", "sft"]


def test_an_entry_that_fails_its_checksum_is_computed_again(compose, model_cache, tmp_path, caplog):
    overrides = [*SMOKE, "pipeline.stages=[sft,grpo]", "sft.source=solver", "grpo.steps=1",
                 f"model.cache_dir={model_cache}", f"cache.dir={tmp_path / 'stages'}"]
    Pipeline(compose(*overrides), tmp_path / "a").run()
    [entry] = (tmp_path / "stages" / "sft").glob("*/manifest.json")
    weights = entry.parent / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    Pipeline(compose(*overrides), tmp_path / "b").run()
    assert "fails its checksum" in caplog.text
    assert "reused_from" not in json.loads((tmp_path / "b" / "sft" / "summary.json").read_text())
    assert cache.Entry(entry.parent).manifest() is not None  # stored again, whole


def test_a_stage_that_fails_leaves_no_entry(compose, model_cache, tmp_path, monkeypatch):
    def broken(*_, **__):
        raise RuntimeError("killed mid-stage")

    monkeypatch.setattr(pipeline, "finetune", broken)
    cfg = compose(*SMOKE, "pipeline.stages=[sft,grpo]", "sft.source=solver", f"model.cache_dir={model_cache}",
                  f"cache.dir={tmp_path / 'stages'}")
    with pytest.raises(RuntimeError, match="killed mid-stage"):
        Pipeline(cfg, tmp_path / "run").run()
    assert [p.name for p in (tmp_path / "stages" / "sft").iterdir()] == [p.name for p in (
        tmp_path / "stages" / "sft").glob("*.lock")]  # a lock, and no entry nor half of one


@pytest.mark.slow
def test_two_processes_needing_one_entry_compute_it_once(model_cache, tmp_path):
    env = {**os.environ, "COLDCLIMB_CACHE": str(model_cache)}
    command = [sys.executable, "-m", "harness.train", *SMOKE, "pipeline.stages=[sft,grpo]", "sft.source=solver",
               f"cache.dir={tmp_path / 'stages'}"]
    workers = [subprocess.Popen([*command, f"hydra.run.dir={tmp_path / name}", f"run_name={name}"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for name in "ab"]
    for worker in workers:
        assert worker.wait(timeout=600) == 0, worker.stderr.read()[-3000:]
    made = [json.loads((tmp_path / name / "sft" / "summary.json").read_text()).get("reused_from") for name in "ab"]
    assert set(made) in ({None, "a"}, {None, "b"}) and len(set(made)) == 2  # one computed it, the other reused it
    assert len(list((tmp_path / "stages" / "sft").glob("*/manifest.json"))) == 1
