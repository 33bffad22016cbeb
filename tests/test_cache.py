"""The stage cache: keyed by exactly what a stage reads, computed once, never half-stored, and
invisible in the numbers (a run with it gives what a run without it gives, bit for bit)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from harness import cache, pipeline
from harness.pipeline import Pipeline
from harness.runner import StageRunner
from harness.stages import DEFAULT_STAGES, START, default_graph
from sweeps.trial import TrialPruned
from harness.store import read_jsonl

SMOKE = ["experiment=smoke", "grpo.steps=2", "checkpoint.keep=all", "tracking=disabled"]
COLD_START = ("explore", "seed", "sft")
STAGES = (*default_graph(), START)
WALL_CLOCK = ("step_time", "timing/", "tokens_per_second")


def untimed(path) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.startswith(WALL_CLOCK)} for row in read_jsonl(path)]


def keys(compose, *overrides) -> dict:
    runner = StageRunner(compose(*SMOKE, *overrides), Path("unused"))  # the keys need only the config
    return {stage: cache.stage_key(runner.key_inputs(stage)) for stage in STAGES}


def test_a_key_changes_with_what_the_stage_reads_and_nothing_else(compose, monkeypatch):
    before = keys(compose)
    grpo_only = keys(compose, "grpo.beta=0.1", "grpo.num_generations=4", "task.reward=proxy")
    assert all(grpo_only[stage] == before[stage] for stage in COLD_START)  # a sweep over grpo.* shares its cold start
    assert grpo_only["grpo"] != before["grpo"]
    assert grpo_only["grpo_start"] == before["grpo_start"]  # and the GRPO stage's first evaluation
    for change in ("grpo.beta=0.1", "task.reward=proxy", "eval.best_of_n=4"):
        assert keys(compose, change)["grpo"] != before["grpo"], change
    assert keys(compose, "checkpoint.every=1", "checkpoint.keep=none")["grpo"] == before["grpo"]
    explore = keys(compose, "explore.learning_rate=1e-3")
    assert all(explore[stage] != before[stage] for stage in ("explore", "seed", "sft"))  # the chain follows
    sft = keys(compose, "sft.learning_rate=1e-3")
    assert sft["sft"] != before["sft"] and sft["explore"] == before["explore"] and sft["seed"] == before["seed"]
    assert sft["grpo"] != before["grpo"]  # GRPO starts from the cold start
    assert sft["grpo_start"] != before["grpo_start"]
    assert keys(compose, "eval.best_of_n=4")["grpo_start"] != before["grpo_start"]
    seeded = keys(compose, "seed=1")
    assert all(seeded[stage] != before[stage] for stage in STAGES)
    shared_start = keys(compose, "seed=1", "start_seed=0")  # another GRPO seed from seed 0's start
    assert all(shared_start[stage] == before[stage] for stage in (*COLD_START, "grpo_start"))
    assert shared_start["grpo"] not in (before["grpo"], seeded["grpo"])
    assert keys(compose, "start_seed=1")["sft"] == seeded["sft"]
    learned = keys(compose, "task.reward=learned", "start_seed=0")  # the reward model is the start's too
    assert keys(compose, "task.reward=learned", "start_seed=0", "seed=1")["reward_model"] == learned["reward_model"]
    assert keys(compose, "task.reward=learned", "seed=1")["reward_model"] != learned["reward_model"]
    # an instance named otherwise draws other problems: r1's second SFT from the solver is not the default's cold start
    solver = keys(compose, "pipeline.stages=[sft,grpo]", "sft.source=solver")
    r1_solver = keys(compose, "pipeline=r1", "sft.source=solver", "pipeline.stages=[sft_final,grpo]")
    assert r1_solver["grpo"] != solver["grpo"]
    threads = keys(compose, "threads=7")  # float sums split otherwise: other numbers
    assert all(threads[stage] != before[stage] for stage in STAGES)
    assert keys(compose, "model.cache_dir=/elsewhere") == before  # where bases are kept, not what they are
    # what trains nothing: where and how much is logged, how large the cache may grow
    assert keys(compose, "tracking.log_completions_every=1", "cache.max_size_gb=1") == before
    seed_set = keys(compose, "seed_set.max_rounds=3")  # the seed stage's own knobs: it and what starts from it
    assert seed_set["explore"] == before["explore"]
    assert all(seed_set[stage] != before[stage] for stage in ("seed", "sft", "grpo"))
    # Without explore, the seed stage samples the base: its key follows the held-out set it skips, not task.reward.
    no_explore = keys(compose, "pipeline.stages=[seed,sft,grpo]")
    for change in ("eval.seed=7", "eval.num_prompts=32"):
        assert keys(compose, "pipeline.stages=[seed,sft,grpo]", change)["seed"] != no_explore["seed"], change
    proxy = keys(compose, "pipeline.stages=[seed,sft,grpo]", "task.reward=proxy")
    assert all(proxy[stage] == no_explore[stage] for stage in COLD_START)
    cache.code_version.cache_clear()
    monkeypatch.setattr(cache, "code_version", lambda device: "another version of harness/")
    assert all(v != before[k] for k, v in keys(compose).items())


@pytest.mark.slow  # an end-to-end run: out of the fast subset
def test_a_run_reusing_its_stages_gives_the_numbers_of_a_run_computing_them(compose, model_cache, tmp_path):
    runs = {}
    for name, overrides in (("off", ["cache.stages=false"]), ("first", []), ("again", [])):
        cfg = compose(*SMOKE, f"model.cache_dir={model_cache}", f"cache.dir={tmp_path / 'stages'}", *overrides)
        cfg.run_name = name
        Pipeline(cfg, tmp_path / name).run()
        runs[name] = tmp_path / name
    for stage in DEFAULT_STAGES:
        made = json.loads((runs["first"] / stage / "summary.json").read_text())
        reused = json.loads((runs["again"] / stage / "summary.json").read_text())
        assert "reused_from" not in made and reused.pop("reused_from") == str(runs["first"])
        assert reused == made  # every value the computing run summed up, sft/examples included
    for run in ("first", "again"):
        for stage in DEFAULT_STAGES:
            for log in ("metrics.jsonl", "eval.jsonl"):
                assert untimed(runs[run] / stage / log) == untimed(runs["off"] / stage / log), (run, stage, log)
        final = load_file(runs[run] / "grpo" / "checkpoint" / "model.safetensors")
        reference = load_file(runs["off"] / "grpo" / "checkpoint" / "model.safetensors")
        assert all(final[k].equal(reference[k]) for k in reference)
        assert (runs[run] / "seed" / "seed.jsonl").read_bytes() == (runs["off"] / "seed" / "seed.jsonl").read_bytes()
        assert json.loads((runs[run] / "summary.json").read_text()) == json.loads(
            (runs["off"] / "summary.json").read_text())
    entries = (tmp_path / "stages").glob("*/*/manifest.json")
    assert sorted(p.parent.parent.name for p in entries) == ["explore", "grpo", "grpo_start", "seed", "sft"]


@pytest.mark.slow  # an end-to-end run: out of the fast subset
def test_runs_with_one_start_seed_compute_one_cold_start_and_their_own_grpo(compose, model_cache, tmp_path):
    """start_seed=0 under seed=1 computes (cache off) the cold start that seed 0 does, bit for bit, and a
    GRPO stage of its own."""
    runs = {}
    for name, overrides in (("seed0", ["seed=0"]), ("seed1", ["seed=1", "start_seed=0"])):
        Pipeline(compose(*SMOKE, "pipeline.stages=[sft,grpo]", "sft.source=solver", "grpo.steps=2",
                         f"model.cache_dir={model_cache}", "cache.stages=false", *overrides), tmp_path / name).run()
        runs[name] = {stage: load_file(tmp_path / name / stage / "checkpoint" / "model.safetensors")
                      for stage in ("sft", "grpo")}
    cold, other = runs["seed0"]["sft"], runs["seed1"]["sft"]
    assert all(cold[k].equal(other[k]) for k in cold)
    first_evaluations = [untimed(tmp_path / run / "grpo" / "eval.jsonl")[0] for run in ("seed0", "seed1")]
    assert first_evaluations[0] == first_evaluations[1]
    assert not all(runs["seed0"]["grpo"][k].equal(runs["seed1"]["grpo"][k]) for k in cold)


@pytest.mark.slow  # an end-to-end run: out of the fast subset
def test_trials_that_differ_in_grpo_settings_share_the_grpo_stages_first_evaluation(
        compose, model_cache, tmp_path, monkeypatch):
    """The evaluation at GRPO's step 0 and the best-of-n samples depend on the cold start, not on
    grpo.*: the second trial takes them from the cache and still gives a cache-off run's numbers."""
    sampled = []
    best_of_n = pipeline.Evaluator.best_of_n_samples
    monkeypatch.setattr(pipeline.Evaluator, "best_of_n_samples",
                        lambda self, engine: sampled.append(1) or best_of_n(self, engine))
    runs = {}
    for name, overrides in (("first", []), ("second", ["grpo.learning_rate=1e-3"]),
                            ("second-uncached", ["grpo.learning_rate=1e-3", "cache.stages=false"])):
        before = len(sampled)
        Pipeline(compose(*SMOKE, "eval.best_of_n=4", f"model.cache_dir={model_cache}",
                         f"cache.dir={tmp_path / 'stages'}", *overrides), tmp_path / name).run()
        runs[name] = (tmp_path / name / "grpo", len(sampled) - before)
    assert [drawn for _, drawn in runs.values()] == [1, 0, 1]  # the second trial sampled no best-of-n
    first, second, uncached = (stage for stage, _ in runs.values())
    assert read_jsonl(second / "best_of_n.jsonl") == read_jsonl(first / "best_of_n.jsonl")
    assert read_jsonl(second / "eval.jsonl")[0] == read_jsonl(first / "eval.jsonl")[0]
    for log in ("metrics.jsonl", "eval.jsonl", "best_of_n.jsonl"):
        assert untimed(second / log) == untimed(uncached / log), log
    first_model, trained, reference = (load_file(s / "checkpoint" / "model.safetensors")
                                       for s in (first, second, uncached))
    assert all(trained[k].equal(reference[k]) for k in reference)
    assert not all(trained[k].equal(first_model[k]) for k in reference)  # its own GRPO stage
    [entry] = (tmp_path / "stages" / "grpo_start").glob("*/manifest.json")
    assert json.loads(entry.read_text())["run_dir"] == str(tmp_path / "first")


@pytest.mark.slow  # an end-to-end run: out of the fast subset
def test_a_stored_grpo_stage_reports_its_evaluations_to_the_sweeper_and_stops_where_a_computed_one_is(
        compose, model_cache, tmp_path):
    overrides = [*SMOKE, "pipeline.stages=[grpo]", "grpo.steps=4", "eval.eval_every=1",
                 f"model.cache_dir={model_cache}", f"cache.dir={tmp_path / 'stages'}"]
    reported = {}
    for run in ("computed", "reused"):
        reported[run] = []
        Pipeline(compose(*overrides), tmp_path / run, on_eval=lambda step, m, seen=reported[run]: seen.append(
            (step, m["eval/gold_pass@1"]))).run()
    assert json.loads((tmp_path / "reused" / "grpo" / "summary.json").read_text())["reused_from"]
    assert reported["reused"] == reported["computed"] and [s for s, _ in reported["computed"]] == [1, 2, 3, 4]

    def prune_at_step_2(step, metrics):
        if step == 2:
            raise TrialPruned("pruned at step 2")

    for run, cache_on in (("pruned-computed", "false"), ("pruned-reused", "true")):
        with pytest.raises(TrialPruned):
            Pipeline(compose(*overrides, f"cache.stages={cache_on}"), tmp_path / run, on_eval=prune_at_step_2).run()
    computed, reused = tmp_path / "pruned-computed" / "grpo", tmp_path / "pruned-reused" / "grpo"
    summary = json.loads((reused / "summary.json").read_text())
    assert summary["status"] == "stopped (TrialPruned)" and summary["reused_from"] == str(tmp_path / "computed")
    for log in ("eval.jsonl", "metrics.jsonl", "completions.jsonl"):  # the reused stage ends where the computed one did
        assert untimed(reused / log) == untimed(computed / log), log
    assert [row["step"] for row in read_jsonl(reused / "eval.jsonl")] == [0, 1, 2]
    assert not (reused / "checkpoint").exists() and not (computed / "checkpoint").exists()


@pytest.mark.slow  # an end-to-end run: out of the fast subset
def test_an_entry_that_fails_its_checksum_is_computed_again(compose, model_cache, tmp_path, caplog):
    overrides = [*SMOKE, "pipeline.stages=[sft,grpo]", "sft.source=solver", "grpo.steps=1",
                 f"model.cache_dir={model_cache}", f"cache.dir={tmp_path / 'stages'}"]
    Pipeline(compose(*overrides), tmp_path / "a").run()
    [entry] = (tmp_path / "stages" / "sft").glob("*/manifest.json")
    weights = entry.parent / "checkpoint" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte
    weights.write_bytes(bytes(data))
    Pipeline(compose(*overrides), tmp_path / "b").run()
    assert "fails its checksum" in caplog.text
    assert "reused_from" not in json.loads((tmp_path / "b" / "sft" / "summary.json").read_text())
    assert cache.Entry(entry.parent).manifest() is not None  # stored again, whole


@pytest.mark.slow  # an end-to-end run: out of the fast subset
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
    monkeypatch.undo()
    Pipeline(cfg, tmp_path / "again").run()  # the lock was let go: the next run takes it and stores the entry
    assert len(list((tmp_path / "stages" / "sft").glob("*/manifest.json"))) == 1


@pytest.mark.slow  # an end-to-end run: out of the fast subset
def test_a_cache_that_cannot_be_written_costs_no_run_its_result(compose, model_cache, tmp_path, monkeypatch, caplog):
    def full_disk(*_, **__):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache.shutil, "copy2", full_disk)
    cfg = compose(*SMOKE, "pipeline.stages=[sft,grpo]", "sft.source=solver", f"model.cache_dir={model_cache}",
                  f"cache.dir={tmp_path / 'stages'}")
    Pipeline(cfg, tmp_path / "run").run()
    assert "could not store" in caplog.text and (tmp_path / "run" / "grpo" / "summary.json").exists()
    assert not [p for p in (tmp_path / "stages" / "sft").iterdir() if p.suffix != ".lock"]  # nor half of one


@pytest.mark.slow
def test_two_processes_needing_one_entry_compute_it_once(model_cache, tmp_path):
    env = {**os.environ, "COLDCLIMB_CACHE": str(model_cache)}
    command = [sys.executable, "-m", "harness.train", *SMOKE, "pipeline.stages=[sft,grpo]", "sft.source=solver",
               f"cache.dir={tmp_path / 'stages'}"]
    workers = [subprocess.Popen([*command, f"hydra.run.dir={tmp_path / name}", f"run_name={name}"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for name in "ab"]
    for worker in workers:
        _, stderr = worker.communicate(timeout=600)
        assert worker.returncode == 0, stderr[-3000:]
    made = {name: json.loads((tmp_path / name / "sft" / "summary.json").read_text()).get("reused_from")
            for name in "ab"}
    assert made in ({"a": None, "b": str(tmp_path / "a")}, {"a": str(tmp_path / "b"), "b": None})  # one made it
    assert len(list((tmp_path / "stages" / "sft").glob("*/manifest.json"))) == 1
    assert untimed(tmp_path / "a" / "grpo" / "eval.jsonl") == untimed(tmp_path / "b" / "grpo" / "eval.jsonl")
    assert len(list((tmp_path / "stages" / "sft").glob("*/manifest.json"))) == 1


def stored(stage_cache, key: str, scratch, size: int = 1000, age: float = 0.0) -> None:
    """An entry of `size` bytes under `key`, last used `age` seconds ago."""
    (scratch / key).mkdir(parents=True)
    (scratch / key / "weights.bin").write_bytes(b"\0" * size)
    with stage_cache.entry("sft", key) as entry:
        entry.store(scratch / key, {"run": key})
    manifest = stage_cache.dir / "sft" / key / cache.MANIFEST
    os.utime(manifest, (manifest.stat().st_atime, manifest.stat().st_mtime - age))


def entries(stage_cache) -> list[str]:
    return sorted(path.parent.name for path in stage_cache.dir.glob(f"sft/[!.]*/{cache.MANIFEST}"))  # not staging


def test_the_entries_used_longest_ago_go_when_the_cache_outgrows_its_limit(tmp_path):
    stage_cache = cache.StageCache(True, tmp_path / "stages", max_size_gb=2.5e-6)  # 2500 bytes: two entries fit
    stored(stage_cache, "a", tmp_path / "runs", age=200)
    stored(stage_cache, "b", tmp_path / "runs", age=100)
    assert entries(stage_cache) == ["a", "b"]
    with stage_cache.entry("sft", "a") as entry:  # a reuse is a use: "b" is now the one used longest ago
        assert entry.manifest() is not None
    stored(stage_cache, "c", tmp_path / "runs")
    assert entries(stage_cache) == ["a", "c"]


def test_an_entry_in_use_is_never_evicted_and_no_limit_keeps_everything(tmp_path):
    stage_cache = cache.StageCache(True, tmp_path / "stages", max_size_gb=2.5e-6)
    stored(stage_cache, "a", tmp_path / "runs", age=200)
    stored(stage_cache, "b", tmp_path / "runs", age=100)
    with stage_cache.entry("sft", "a"):  # held, as by a run restoring it
        stored(stage_cache, "c", tmp_path / "runs")
    assert entries(stage_cache) == ["a", "c"]
    unlimited = cache.StageCache(True, tmp_path / "stages", max_size_gb=0)
    stored(unlimited, "d", tmp_path / "runs", size=10_000)
    assert entries(unlimited) == ["a", "c", "d"]


def test_eviction_leaves_an_entry_being_stored_alone(tmp_path):
    """Another process's staging folder (.<key>-...) holds a manifest before its rename: never an entry."""
    stage_cache = cache.StageCache(True, tmp_path / "stages", max_size_gb=1.5e-6)  # one entry fits
    stored(stage_cache, "a", tmp_path / "runs", age=100)
    staging = stage_cache.dir / "sft" / ".b-x1y2"
    (staging).mkdir()
    (staging / "weights.bin").write_bytes(b"\0" * 1000)
    (staging / cache.MANIFEST).write_text("{}")
    os.utime(staging / cache.MANIFEST, (0, 0))  # older than anything: first in line, were it an entry
    stored(stage_cache, "c", tmp_path / "runs")
    assert entries(stage_cache) == ["c"] and (staging / cache.MANIFEST).exists()
