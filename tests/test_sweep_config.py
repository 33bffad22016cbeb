"""Sweep configuration: the presets compose into what they say, search spaces read Hydra's grammar, and the
Optuna sweeper's knobs are checked before a study opens (running sweeps: tests/test_sweeps.py)."""

import dataclasses
import subprocess
import sys

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_module
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from harness.settings import ConfigError
from sweeps.settings import pruner_settings, sweeper_settings
from sweeps.space import distributions, grid


PRESETS = ["num_generations", "beta", "epsilon", "num_iterations", "cold_start_size", "loss_type", "proxy_rules"]


@pytest.mark.parametrize("preset", PRESETS)
def test_sweep_presets_sweep_their_knob_over_seeds(preset):
    with initialize_config_module(config_module="harness.conf", version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=[f"sweep={preset}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params["seed"] == "0,1,2" and len(params) >= 2


ABLATIONS = {  # each arm's change from the one before; the first's from the defaults
    "dapo": [("naive", {"loss_type": "grpo", "num_iterations": 4}), ("clip_higher", {"epsilon_high": 0.28}),
             ("token_level", {"loss_type": "dapo"}), ("dynamic_sampling", {"dynamic_sampling": True})],
    "rollout_budget": [("k2", {"num_generations": 2, "prompts_per_step": 64}),
                       ("k4", {"num_generations": 4, "prompts_per_step": 32}),
                       ("k8", {"num_generations": 8, "prompts_per_step": 16}),
                       ("k16", {"num_generations": 16, "prompts_per_step": 8})]}


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_an_ablation_preset_sweeps_its_named_arms_each_changing_only_what_it_says(compose, ablation):
    """DAPO's arms are cumulative: each differs from the one before (the first from the defaults) in
    the technique it adds alone; the rollout-budget arms keep K x prompts per step at 128."""
    with initialize_config_module(config_module="harness.conf", version_base="1.3"):
        params = hydra_compose(config_name="config", overrides=[f"sweep={ablation}"],
                               return_hydra_config=True).hydra.sweeper.params
    assert params[f"+ablation/{ablation}"] == ",".join(arm for arm, _ in ABLATIONS[ablation])
    before, labels = dataclasses.asdict(compose()), []
    for arm, change in ABLATIONS[ablation]:
        cfg = compose(f"+ablation/{ablation}={arm}")
        config = dataclasses.asdict(cfg)
        # every group, not only grpo: an arm changes what it says and nothing else
        assert _changed(before, config) == {f"grpo.{k}": v for k, v in change.items()} | {"arm": cfg.arm}, arm
        assert cfg.grpo.num_iterations == (4 if ablation == "dapo" else 1)
        if ablation == "rollout_budget":
            assert cfg.grpo.num_generations * cfg.grpo.prompts_per_step == 128
        before, labels = config, [*labels, cfg.arm]
    assert labels == sorted(labels)  # the report's order is the preset's
    if ablation == "dapo":  # overlong shaping: an arm the built-in task's preset leaves out, one step past its last
        overlong = dataclasses.asdict(compose("+ablation/dapo=overlong"))
        assert _changed(before, overlong) == {"grpo.soft_overlong_cache": 4, "arm": "5 + overlong shaping"}


def _changed(before: dict, after: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in after.items():
        if isinstance(value, dict):
            out |= _changed(before[key], value, f"{prefix}{key}.")
        elif before[key] != value:
            out[f"{prefix}{key}"] = value
    return out

def test_search_space_reads_hydra_sweep_grammar():
    space = distributions({"grpo.beta": "tag(log, interval(1e-3, 0.1))", "grpo.num_generations": "choice(2, 4, 8)",
                           "sft.cold_start_size": "range(100, 1100, 200)", "grpo.learning_rate": "interval(1e-5, 1e-3)"})
    assert space["grpo.beta"] == FloatDistribution(1e-3, 0.1, log=True)
    assert space["grpo.num_generations"] == CategoricalDistribution([2, 4, 8])
    assert space["sft.cold_start_size"] == IntDistribution(100, 900, step=200)  # range() excludes its stop
    assert space["grpo.learning_rate"] == FloatDistribution(1e-5, 1e-3)
    assert grid({k: space[k] for k in ("grpo.num_generations", "sft.cold_start_size")}) == {
        "grpo.num_generations": [2, 4, 8], "sft.cold_start_size": [100, 300, 500, 700, 900]}
    with pytest.raises(ValueError, match="grpo.beta"):
        grid(space)

@pytest.mark.parametrize("preset, objectives", [("bayes", ["eval/gold_pass@1"]),
                                                ("bayes_pareto", ["eval/gold_pass@1", "eval/kl_to_initial"]),
                                                ("bayes_cost", ["eval/gold_pass@1", "cost/grpo/rollout_tokens"])])
def test_bayesian_presets_select_the_optuna_sweeper(preset, objectives):
    with initialize_config_module(config_module="harness.conf", version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=[f"sweep={preset}"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.coldclimb_optuna_sweeper.OptunaSweeper"
    assert list(cfg.hydra.sweeper.objectives) == objectives
    assert all(isinstance(d, BaseDistribution) for d in distributions(dict(cfg.hydra.sweeper.params)).values())


@pytest.mark.parametrize("knobs, message", [
    ({"sampler": "tpee"}, "hydra.sweeper.sampler='tpee': must be one of tpe, gp, random, grid"),
    ({"n_trials": 0}, "hydra.sweeper.n_trials=0: must be at least 1"),
    ({"grace_period": 5, "heartbeat_interval": 10}, "hydra.sweeper.grace_period=5: must exceed"),
    ({"objectives": [], "directions": []}, "hydra.sweeper.objectives=[]: must name at least one metric"),
    ({"directions": ["maximize", "minimize"]}, "hydra.sweeper.directions=['maximize', 'minimize']: must give one")])
def test_a_bad_sweeper_knob_is_named(knobs, message):
    with pytest.raises(ConfigError) as refused:
        sweeper_settings(knobs)
    assert str(refused.value).startswith(message)


def test_a_journal_file_keeps_no_heartbeats_so_its_grace_period_is_free():
    assert sweeper_settings({"storage": "journal:///tmp/study.log", "grace_period": 5}).grace_period == 5


def test_a_rung_pruner_whose_first_rung_is_past_the_stage_is_refused():
    with pytest.raises(ConfigError, match="its first rung, eval.eval_every=50, is past the end of grpo.steps=20"):
        pruner_settings(sweeper_settings({"pruner": "hyperband"}), eval_every=50, steps=20)


def test_a_bad_sweeper_knob_stops_the_sweep_in_one_line_before_the_study_opens(tmp_path):
    """A knob (the in-process tests above name each) or, as here, a search space the sampler cannot take."""
    message = "grpo.learning_rate: a grid needs choice(...) or range(...), not an interval"
    done = subprocess.run([sys.executable, "-m", "harness.train", "-m", "sweep=bayes", "hydra.sweeper.sampler=grid",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}"], capture_output=True, text=True, timeout=300)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and last.startswith(f"coldclimb: config error: {message}")
    assert "Traceback" not in done.stderr and not (tmp_path / "sweep").exists()

@pytest.mark.parametrize("preset", ["slurm", "slurm_gpu"])
def test_slurm_presets_use_submitit(preset):
    with initialize_config_module(config_module="harness.conf", version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=[f"hydra/launcher={preset}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
