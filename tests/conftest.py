import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_module

from harness.tasks import countdown, ordering
from harness.train import to_config


@pytest.fixture(scope="session")
def compose():
    """The validated Config that `python -m harness.train OVERRIDES...` would run with."""

    def make(*overrides: str):
        with initialize_config_module(config_module="harness.conf", version_base="1.3"):
            return to_config(hydra_compose(config_name="config", overrides=list(overrides)))

    return make


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory) -> Path:
    """One cache of tiny base models and stage outputs for the whole session, never the user's
    (COLDCLIMB_CACHE reuses one across sessions)."""
    cache = Path(os.environ.get("COLDCLIMB_CACHE") or tmp_path_factory.mktemp("cache"))
    os.environ["COLDCLIMB_CACHE"] = str(cache)  # in-process runs and their subprocesses alike
    return cache


@pytest.fixture(scope="session")
def train(model_cache):
    """Run `python -m harness.train` with overrides, as a user would; return the finished process."""

    def run(run_dir: Path, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
        env = {**os.environ, "COLDCLIMB_CACHE": str(model_cache)}
        command = [sys.executable, "-m", "harness.train", f"hydra.run.dir={run_dir}", *overrides]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    return run


@pytest.fixture(scope="session")
def smoke_run(train, tmp_path_factory) -> Path:
    """The whole recipe, tiny, once per session, with W&B offline."""
    run_dir = tmp_path_factory.mktemp("smoke")
    train(run_dir, "experiment=smoke", "run_name=smoke-test")
    return run_dir


@pytest.fixture(scope="session")
def small_sweep(model_cache, tmp_path_factory) -> Path:
    """A real sweep, small: gold and proxy reward x beta 0 and 0.1 x seeds 0 and 1 (8 runs)."""
    sweep_dir = tmp_path_factory.mktemp("sweep")
    env = {**os.environ, "COLDCLIMB_CACHE": str(model_cache)}
    command = [sys.executable, "-m", "harness.train", "-m", "experiment=smoke", "pipeline.stages=[sft,grpo]",
               "sft.source=solver", "task.reward=gold,proxy", "grpo.beta=0,0.1", "seed=0,1",
               f"hydra.sweep.dir={sweep_dir}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir


@pytest.fixture(scope="session")
def smoke_sweep(model_cache):
    """Run a multirun at smoke sizes (SFT on solver demonstrations, then GRPO) with overrides."""

    def run(sweep_dir: Path, *overrides: str) -> Path:
        env = {**os.environ, "COLDCLIMB_CACHE": str(model_cache)}
        command = [sys.executable, "-m", "harness.train", "-m", "experiment=smoke", "pipeline.stages=[sft,grpo]",
                   "sft.source=solver", f"hydra.sweep.dir={sweep_dir}", *overrides]
        result = subprocess.run(command, capture_output=True, text=True, timeout=1200, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        return sweep_dir

    return run


@pytest.fixture(scope="session")
def bayes_sweep(smoke_sweep, tmp_path_factory) -> Path:
    """A real Optuna study: 12 TPE trials over learning rate, K and beta, successive halving, W&B offline."""
    return smoke_sweep(tmp_path_factory.mktemp("bayes"), "sweep=bayes", "hydra.sweeper.n_trials=12")


@pytest.fixture
def no_code_execution(monkeypatch):
    """Inside the tasks' modules, eval, exec and compile fail loudly: a verifier using them would show."""
    def refuse(*_, **__):
        raise AssertionError("model text reached eval/exec/compile")
    for module in (countdown, ordering):
        for name in ("eval", "exec", "compile"):
            monkeypatch.setattr(module, name, refuse, raising=False)
