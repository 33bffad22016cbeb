"""A run on two ranks (trial.processes=2, gloo on the CPU) against one process: the same numbers under FSDP2, a
killed rank failing the run in one line, the run resuming from rank 0's last resume state (gathered from the
shards, and shared out again), and a second run, under DDP, taking SFT from the stage cache and again logging
one process's numbers."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.launch import first_cause
from harness.store import read_jsonl

# SFT from the solver, then 6 GRPO steps with a resume state every 2; groups sampled from seeds of their own, so
# that two ranks sample what one process does. Dynamic sampling, micro-batches and two passes: the ranks hold
# unequal numbers of micro-batches (FSDP's lockstep). One thread per rank, as the one process has.
RUN = ["experiment=smoke", "pipeline.stages=[sft,grpo]", "sft.source=solver", "grpo.steps=6", "checkpoint.every=2",
       "eval.eval_every=3", "rollout.group_seeds=true", "tracking=disabled", "grpo.dynamic_sampling=true",
       "grpo.dynamic_sampling_max_rounds=2", "grpo.micro_batch_size=2", "grpo.num_iterations=2"]
WALL_CLOCK = ("timing/", "step_time", "tokens_per_second")


def numbers(run_dir: Path, stage: str, name: str) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.startswith(WALL_CLOCK)} for row in read_jsonl(run_dir / stage / name)]


def assert_same_numbers(one: Path, two: Path, files: list[tuple[str, str]]) -> None:
    """Two runs logged the same steps, each with the same numbers (wall-clock times aside)."""
    for stage, name in files:
        rows_one, rows_two = numbers(one, stage, name), numbers(two, stage, name)
        assert [r["step"] for r in rows_one] == [r["step"] for r in rows_two], (stage, name)
        for a, b in zip(rows_one, rows_two):
            assert_close(a, b)


def assert_close(one, two, tolerance: float = 1e-5) -> None:
    """Equal keys; numbers (and lists of them) equal to within float tolerance, anything else equal."""
    assert one.keys() == two.keys(), set(one) ^ set(two)
    for key in one:
        a, b = (v if isinstance(v, list) else [v] for v in (one[key], two[key]))
        assert len(a) == len(b) and all(math.isclose(x, y, rel_tol=tolerance, abs_tol=tolerance)
                                        if isinstance(x, float) else x == y for x, y in zip(a, b)), (key, a, b)


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def rank_process(launcher: subprocess.Popen, rank: int) -> int:
    """The pid of the launcher's worker that is rank `rank`. torchrun's agent sets the run's id (coldclimb-<launcher's
    pid>) and the rank in each worker's os.environ once it starts, so they show in the environment of the worker's
    own children (its reward workers), not in its own."""
    wanted = {f"TORCHELASTIC_RUN_ID=coldclimb-{launcher.pid}".encode(), f"RANK={rank}".encode()}
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if wanted <= set(environ.read_bytes().split(b"\0")):
                worker = parent(int(environ.parent.name))
                if parent(worker) == launcher.pid:
                    return worker
        except OSError:  # not ours to read, or gone
            continue
    raise LookupError(f"no rank {rank} under launcher {launcher.pid}")


@pytest.mark.slow  # three runs of the tiny recipe, two of them on two ranks: about 2 minutes on 2 cores
def test_two_ranks_match_one_process_and_a_killed_rank_fails_the_run_which_resumes(train, model_cache, tmp_path):
    one = tmp_path / "one"
    train(one, *RUN, "threads=1")

    # Two ranks sharding the policy, rank 1 killed once rank 0 has saved a resume state and logged a step past it.
    two, ranks = tmp_path / "two", ["trial.processes=2", "threads=1"]
    command = [sys.executable, "-m", "harness.train", f"hydra.run.dir={two}", *RUN, *ranks, "trial.data_parallel=fsdp"]
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "COLDCLIMB_CACHE": str(model_cache)})
    pointer, deadline = two / "grpo" / "resume" / "latest.json", time.monotonic() + 300
    while launcher.poll() is None and time.monotonic() < deadline:
        if pointer.exists() and any(row["step"] > json.loads(pointer.read_text())["step"]
                                    for row in read_jsonl(two / "grpo" / "metrics.jsonl")):
            os.kill(rank_process(launcher, 1), signal.SIGKILL)
            break
        time.sleep(0.01)
    _, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode == 1, stderr[-2000:]
    status = json.loads((two / "status.json").read_text())
    assert status["status"] == "failed" and status["error"].startswith("rank 1 failed: Signal 9 (SIGKILL)")
    assert f"coldclimb: {status['error']}" in stderr
    saved = json.loads(pointer.read_text())["step"]

    resumed = train(tmp_path / "hydra", *RUN, *ranks, "trial.data_parallel=fsdp", f"output_dir={two}", "resume=true")
    assert f"goes on after step {saved}" in resumed.stderr
    assert "grpo: the update on 2 ranks, as FSDPLlamaForCausalLM" in resumed.stderr
    grpo = [("grpo", "metrics.jsonl"), ("grpo", "eval.jsonl")]
    assert_same_numbers(one, two, [("sft", "metrics.jsonl"), ("sft", "eval.jsonl"), *grpo])
    outcome = [{k: v for k, v in json.loads((run / "status.json").read_text()).items()
                if not k.startswith("cost/") and k != "threads_used"} for run in (one, two)]
    assert_close(*outcome)
    assert not (two / "grpo" / "resume").exists() and not any(two.glob("*/wandb"))

    # The same two ranks under DDP: rank 0 finds SFT in the stage cache and every rank follows it; GRPO's key names
    # how the ranks share the update, so it runs again, and again logs one process's numbers.
    again = tmp_path / "again"
    assert "grpo: the update on 2 ranks, as DistributedDataParallel" in train(again, *RUN, *ranks).stderr
    reused = {stage: json.loads((again / stage / "summary.json").read_text()).get("reused_from") for stage in
              ("sft", "grpo")}
    assert reused == {"sft": str(two), "grpo": None}
    assert_same_numbers(one, again, grpo)


def failure(message, exitcode=1):
    return SimpleNamespace(message={"message": message} if message else "", exitcode=exitcode)


def test_a_failed_rank_is_named_before_those_that_only_lost_their_peer():
    failures = {0: failure("RuntimeError: [pair.cc:553] Connection closed by peer [127.0.0.1]:11487."),
                1: failure("Traceback (most recent call last):\n  ...\nNonFiniteLoss: the GRPO loss is nan"),
                2: failure("", exitcode=-9),
                3: failure("Traceback (most recent call last):\n  ...\npydantic_core.ValidationError: 1 validation "
                           "error for ModelConfig\n  Value error, Invalid local directory\n    For further information")}
    said = first_cause(failures)
    assert said.startswith("rank 1 failed: NonFiniteLoss: the GRPO loss is nan; rank 2 failed: exit code -9; rank 3 "
                           "failed: pydantic_core.ValidationError: 1 validation error for ModelConfig; rank 0")
    assert "\n" not in said
