"""Bad values fail up front: one line naming the key and the value, before any model loads."""

import functools
import re
import subprocess
import sys
from dataclasses import MISSING, asdict, fields
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import harness.conf
from harness import sft
from harness.config import Config, ModelConfig, group_defaults
from harness.models import build_tiny_model, build_tokenizer
from harness.settings import ConfigError, settings
from sweeps.settings import SweeperSettings
from harness.validation import validate, warnings_for


def test_defaults_are_valid(compose):
    cfg = compose()
    assert cfg.grpo.num_generations == 8 and cfg.grpo.beta == 0.0 and cfg.tracking.mode == "offline"


BAD_VALUES = [  # (overrides, how the one-line error begins)
    ("grpo.num_generations=1", "grpo.num_generations=1"),
    ("grpo.beta=-0.1", "grpo.beta=-0.1"),
    ("grpo.epsilon=-0.2", "grpo.epsilon=-0.2"),
    ("grpo.epsilon_high=0.1", "grpo.epsilon_high=0.1"),
    ("grpo.loss_type=ppo", "grpo.loss_type='ppo'"),
    ("grpo.scale_rewards=std", "grpo.scale_rewards='std'"),
    ("grpo.num_iterations=0", "grpo.num_iterations=0"),
    ("sft.cold_start_size=5000", "sft.cold_start_size=5000"),
    ("sft.source=web", "sft.source='web'"),
    ("task.name=chess", "task.name='chess'"),
    ("task.reward=vibes", "task.reward='vibes'"),
    ("task.num_constraints=40", "task.num_constraints=40"),
    ("task.item_pool=3", "task.item_pool=3"),
    ("task.proxy_rules=5", "task.proxy_rules=5"),  # more rules than the task's 4
    ("task=countdown task.proxy_rules=2", "task.proxy_rules=2"),  # a proxy without rules
    ("rollout.max_completion_length=3", "rollout.max_completion_length=3"),
    ("rollout.temperature=0", "rollout.temperature=0"),
    ("rollout.top_p=1.5", "rollout.top_p=1.5"),
    ("rollout.engine=trt", "rollout.engine='trt'"),
    ("pipeline.stages=[sft,rlhf]", "pipeline.stages='rlhf'"),
    ("pipeline.graph.grpo.type=ppo", "pipeline.graph.grpo.type='ppo': must be one of grpo, seed, sft, reward_model"),
    ("pipeline.graph.grpo.config=sft", "pipeline.graph.grpo.config='sft': must name a config group of a grpo stage"),
    ("pipeline.graph.grpo.start=critic", "pipeline.graph.grpo.start='critic'"),
    ("pipeline.graph.grpo.start=seed", "pipeline.graph.grpo.start='seed': must be 'base' or a grpo or sft instance"),
    ("pipeline.graph.sft.start=grpo", "pipeline.graph.sft='sft -> grpo -> sft': its edges"),
    ("pipeline.graph.reward_model.start=grpo", "pipeline.graph.reward_model='reward_model -> grpo -> reward_model'"),
    ("pipeline.graph.sft.data=[grpo]", "pipeline.graph.sft.data=['grpo']"),
    ("pipeline.graph.sft.data=[base]", "pipeline.graph.sft.data=['base']"),
    ("task.reward=learned pipeline.graph.grpo.reward_model=base", "pipeline.graph.grpo.reward_model='base'"),
    ("pipeline=r1 pipeline.stages=[explore,seed,sft,mine,rl,sft_final,grpo]",
     "pipeline.stages=['explore', 'seed', 'sft', 'mine', 'rl', 'sft_final', 'grpo']: mine loads rl's output"),
    ("pipeline=r1 pipeline.stages=[mine,sft] sft.source=solver", "pipeline.stages=['mine', 'sft']: mine loads sft's"),
    ("pipeline.stages=[sft,sft,grpo] sft.source=solver", "pipeline.stages=['sft', 'sft', 'grpo']: sft would run twice"),
    ("task.reward=learned pipeline.stages=[sft,grpo,reward_model] sft.source=solver",
     "pipeline.stages=['sft', 'grpo', 'reward_model']: reward_model would run twice"),
    ("task.reward=learned pipeline.graph.grpo.reward_model=null", "pipeline.graph.grpo.reward_model=None"),
    ("model.path=/no/such/model", "model.path='/no/such/model'"),
    ("model.num_heads=5", "model.num_heads=5"),
    ("tracking.mode=cloud", "tracking.mode='cloud'"),
    ("eval.num_samples=0", "eval.num_samples=0"),
    ("eval.best_of_n=1", "eval.best_of_n=1: must be 0 (off) or at least 2"),
    ("task=countdown task.num_numbers=6", "task.num_numbers=6"),
    ("task=countdown rollout.max_completion_length=5", "rollout.max_completion_length=5"),
    ("task.prompt_style=chatty", "task.prompt_style='chatty'"),
    ("task.prompt_style=natural", "task.prompt_style='natural': needs a pretrained model"),
    ("model.package=no_such_weights", "model.package='no_such_weights': is not installed"),
    ("model.path=org/not-cached", "model.path='org/not-cached': is not a directory, nor a Hub id"),
    ("model.gguf_file=x.gguf", "model.gguf_file='x.gguf': needs model.path or model.package"),
    ("grpo.learning_rate=-1e-4", "grpo.learning_rate=-0.0001: must be a positive number"),
    ("grpo.learning_rate=nan", "grpo.learning_rate=nan"),
    ("sft.learning_rate=0", "sft.learning_rate=0.0"),
    ("grpo.max_grad_norm=0", "grpo.max_grad_norm=0.0"),
    ("grpo.prompts_per_step=0", "grpo.prompts_per_step=0"),
    ("rollout.max_completion_length=120", "rollout.max_completion_length=120: and the prompt's 21 tokens exceed "
                                          "the tiny model's context (model.max_position_embeddings=128)"),
    ("rollout=vllm rollout.vllm_max_model_len=16", "rollout.vllm_max_model_len=16: is too short for the prompt"),
    ("checkpoint.every=-1", "checkpoint.every=-1"),
    ("checkpoint.keep=best", "checkpoint.keep='best'"),
    ("explore.num_generations=1", "explore.num_generations=1"),
    ("explore.reward=vibes", "explore.reward='vibes'"),
    ("explore.epsilon_high=0.1", "explore.epsilon_high=0.1: must be at least explore.epsilon=0.2"),
    ("sft.epochs=0", "sft.epochs=0.0"),
    ("task=countdown task.num_numbers=2", "eval.num_prompts=200: is more than this task setting offers"),
    ("trial.processes=3 explore.prompts_per_step=2", "explore.prompts_per_step=2: is below trial.processes=3"),
    ("trial.processes=2 device=cuda:1", "device='cuda:1': names one GPU, but the trial.processes=2 ranks"),
    ("trial.processes=2 trial.data_parallel=zero3", "trial.data_parallel='zero3'"),
    ("trial.processes=2 rollout=vllm rollout.vllm_tensor_parallel_size=2", "rollout.engine='vllm': on trial.processes=2"),
]


@pytest.mark.parametrize("override, key", BAD_VALUES)
def test_bad_value_is_named(compose, override, key):
    with pytest.raises(ConfigError) as error:
        compose(*override.split())
    assert str(error.value).startswith(key) and "\n" not in str(error.value)


@pytest.mark.parametrize("size, epochs", [(100, 3), (16, 3), (1000, 2), (50, 10)])
def test_cold_start_by_epochs_makes_that_many_passes_over_the_set(compose, monkeypatch, size, epochs):
    cfg = compose(f"sft.epochs={epochs}", f"sft.cold_start_size={size}", "sft.batch_size=64", "sft.source=solver")
    tokenizer = build_tokenizer(["a", "b"])
    model = build_tiny_model(ModelConfig(hidden_size=8, num_layers=1, num_heads=1, intermediate_size=8), tokenizer, 0)
    encode, seen = sft.encode_examples, []

    def counting(tok, rows, device):
        seen.extend(rows)
        return encode(tok, rows, device)

    monkeypatch.setattr(sft, "encode_examples", counting)
    sft.finetune(model, tokenizer, [("a", "b")] * size, sft.Schedule(cfg.sft.num_steps, 64, 1e-3), seed=0)
    assert epochs * size <= len(seen) < epochs * size + 64  # the last batch may run into a next pass
    assert compose().sft.num_steps == 300  # without epochs: sft.steps, the same compute for every size


def test_the_explore_stage_has_its_own_knobs(compose):
    cfg = compose("grpo.beta=0.1", "grpo.num_generations=4", "task.reward=proxy")
    explore = cfg.explore
    assert (explore.beta, explore.num_generations, explore.reward, explore.steps) == (0.0, 8, "gold", 40)


def test_skipping_the_seed_stage_needs_a_seed_path(compose):
    with pytest.raises(ConfigError, match="sft.seed_path"):
        compose("pipeline.stages=[sft,grpo]")
    assert compose("pipeline.stages=[sft,grpo]", "sft.source=solver").sft.source == "solver"


COMMAND_LINE_CASES = [("resume=true", "resume=True: no interrupted run in"), *BAD_VALUES]


# Every bad value is named in one line in-process (test_bad_value_is_named); the command line's own path
# (exit 2, one line, no traceback, nothing loaded) costs a process each (~5 s): the first few in the fast
# subset, one in five of the rest in the full suite.
@pytest.mark.parametrize("override, named", [
    case if i < 4 else pytest.param(*case, marks=pytest.mark.slow)
    for i, case in enumerate(COMMAND_LINE_CASES) if i < 4 or i % 5 == 0])
def test_command_line_exits_with_one_line_before_loading_a_model(tmp_path, override, named):
    cache = tmp_path / "cache"
    result = subprocess.run(
        [sys.executable, "-m", "harness.train", *override.split(), f"model.cache_dir={cache}",
         f"hydra.run.dir={tmp_path}/run"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not cache.exists()  # no base model was built or loaded
    assert not any((tmp_path / "run").glob("*/checkpoint"))


def test_warns_that_clipping_cannot_act_with_one_update_per_batch(compose):
    [warning] = warnings_for(compose())
    assert warning.startswith("grpo.num_iterations=1") and "clipping never acts" in warning
    assert warnings_for(compose("grpo.num_iterations=2")) == []
    assert warnings_for(compose("pipeline.stages=[sft]", "sft.source=solver")) == []


def test_warns_that_fsdp_on_one_process_shards_nothing(compose):
    [warning] = warnings_for(compose("grpo.num_iterations=2", "trial.data_parallel=fsdp"))
    assert warning.startswith("trial.data_parallel=fsdp with trial.processes=1") and "nothing to shard" in warning
    assert warnings_for(compose("grpo.num_iterations=2", "trial.data_parallel=fsdp", "trial.processes=2",
                                "rollout.group_seeds=true")) == []


def test_the_composed_defaults_are_the_dataclass_defaults(compose):
    """The command line runs what Python's Config() says: a run from either is the same run."""
    composed, declared = asdict(compose()), asdict(Config())
    composed["threads"] = declared["threads"]  # resolved to this machine's CPUs by to_config
    assert composed == declared


CONF = Path(harness.conf.__file__).parent


def test_every_config_group_but_the_sweeper_s_has_a_default_option_in_config_yaml():
    groups = {f.name for f in fields(Config) if f.default is MISSING}
    assert set(group_defaults()) == groups - {"trial"}  # trial.* is set by the sweeper, never chosen


VARIANTS = sorted(str(p.relative_to(CONF)) for group in ("model", "task", "rollout", "tracking")
                  for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_variant_says_only_what_it_changes(variant):
    """Defaults live in the dataclasses alone; a group's other options name only their differences."""
    changes = OmegaConf.to_container(OmegaConf.load(CONF / variant))
    global_package = (CONF / variant).read_text().startswith("# @package _global_")  # it names each group it sets
    for group, changed in (changes if global_package else {variant.split("/")[0]: changes}).items():
        declared = asdict(getattr(Config(), group))
        assert changed and all(declared[key] != value for key, value in changed.items()), changes


def test_every_key_has_its_help_and_python_m_harness_config_lists_them(compose):
    keys = [key for key, _ in settings(Config)]
    composed = OmegaConf.to_container(OmegaConf.structured(compose()))
    leaves = [".".join(path) for path in _leaf_paths(composed)]
    assert sorted(keys) == sorted(leaves)
    assert all(f.metadata.get("help") for _, f in settings(Config))
    listing = subprocess.run([sys.executable, "-m", "harness.config"], capture_output=True, text=True, check=True)
    sweeper = [f"hydra.sweeper.{key}" for key, _ in settings(SweeperSettings)]  # the Optuna sweeper's knobs too
    assert [line.split(" = ")[0] for line in listing.stdout.splitlines()] == keys + sweeper
    assert sweeper and all(f.metadata.get("help") for _, f in settings(SweeperSettings))
    assert "grpo.beta = 0.0  # KL weight; 0 loads no reference model" in listing.stdout


def _leaf_paths(tree: dict, path=()):
    for key, value in tree.items():  # pipeline.graph is one key: a dict of stage instances
        nested = isinstance(value, dict) and value and (*path, key) != ("pipeline", "graph")
        yield from _leaf_paths(value, (*path, key)) if nested else [(*path, key)]


def _just_outside(bounds, value):
    """A value that breaks exactly the first bound the field declares."""
    if bounds["choices"]:
        return ["bogus"] if isinstance(value, list) else "bogus"
    if bounds["positive"]:
        return 0.0
    if bounds["unit"]:
        return 1.5
    if bounds["high"] is not None and value == bounds["high"]:
        return bounds["high"] + 1
    return bounds["low"] - 1


BOUNDED = [(key, f) for key, f in settings(Config) if any(f.metadata[k] for k in ("choices", "positive", "unit"))
           or f.metadata["low"] is not None]


@pytest.mark.parametrize("key, field", BOUNDED, ids=[key for key, _ in BOUNDED])
def test_every_declared_bound_is_enforced_and_names_its_key(key, field):
    config = Config()
    *path, name = key.split(".")
    node = functools.reduce(getattr, path, config)
    value = getattr(node, name)
    if value is None:  # an optional field: bounds apply to a value
        value = field.metadata["low"] or 1
    setattr(node, name, _just_outside(field.metadata, value))
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}="):
        validate(config)


def test_a_stage_whose_output_no_later_stage_loads_is_warned_of(compose):
    assert warnings_for(compose("pipeline=r1", "pipeline.stages=[sft,grpo]", "sft.source=solver",
                                "grpo.num_iterations=2")) == [
        "pipeline.stages: no later stage loads sft's output"]  # grpo starts from sft_final, skipped: from the base
    assert "pipeline.stages: no later stage loads mine's output" in warnings_for(compose("pipeline=r1",
                                                                                       "sft.source=solver"))
    assert not any("pipeline.stages" in w for w in warnings_for(compose("pipeline=r1")))


def test_the_trainer_imports_no_sweeper_library():
    """harness stops a trial where the sweeper's hook raises (harness.faults.TrialStopped): optuna is sweeps' own."""
    code = ("import sys, harness.train, harness.pipeline, harness.runner, harness.stages; "
            "assert 'optuna' not in sys.modules, 'optuna was imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
