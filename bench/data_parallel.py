"""GRPO step time on 1 and N ranks at the same global batch (trial.processes): where the time goes.

    python bench/data_parallel.py                       # tiny model, CPU, 1 and 2 ranks
    python bench/data_parallel.py --ranks 1,2,4 --device cuda --overrides model=smollm2

Each configuration is one run of the GRPO stage alone (`python -m harness.train pipeline.stages=[grpo]`), its
steps after the first averaged from metrics.jsonl: the rollout, the update (the slowest rank's: DDP's
gradient all-reduce included) and the step. The all-reduce alone is timed apart: one all_reduce of a tensor
the size of the model's gradient on N ranks of the same backend, as DDP's buckets move it in the update.
Prints one JSON line per configuration and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file
from harness.launch import on_local_ranks, process_group
from harness.store import read_jsonl

RUN = ["pipeline.stages=[grpo]", "tracking=disabled", "cache.stages=false", "eval.eval_every=1000",
       "eval.kl_to_initial=false", "eval.best_of_n=0", "rollout.group_seeds=true"]


def run(ranks: int, args) -> dict:
    """One GRPO stage on `ranks` ranks: the mean of its steps after the first, and the model's size."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "harness.train", *RUN, f"trial.processes={ranks}", f"device={args.device}",
                   f"grpo.steps={args.steps + 1}", f"grpo.prompts_per_step={args.prompts}",
                   f"grpo.num_generations={args.num_generations}", f"output_dir={out}", f"hydra.run.dir={out}/h",
                   *args.overrides]
        subprocess.run(command, check=True, capture_output=True)
        steps = read_jsonl(Path(out) / "grpo" / "metrics.jsonl")[1:]  # the first step warms up
        weights = load_file(Path(out) / "grpo" / "checkpoint" / "model.safetensors")
    mean = {key: sum(row[key] for row in steps) / len(steps)
            for key in ("timing/rollout", "timing/update", "step_time")}
    return {"ranks": ranks, "rollout_s": mean["timing/rollout"], "update_s": mean["timing/update"],
            "step_s": mean["step_time"], "parameters": sum(w.numel() for w in weights.values())}


def all_reduce_seconds(numel: int, device: str, repeats: int) -> float:
    """One rank's mean time for an all_reduce of `numel` float32s, in the run's own process group."""
    with process_group(device):
        gradient = torch.ones(numel, device="cuda" if device.startswith("cuda") else "cpu")
        dist.all_reduce(gradient)  # warm-up: the connections are made here
        start = time.perf_counter()
        for _ in range(repeats):
            dist.all_reduce(gradient)
        if gradient.is_cuda:
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / repeats


def timed_all_reduce(ranks: int, numel: int, device: str, repeats: int = 20) -> float:
    return max(on_local_ranks(ranks, all_reduce_seconds, numel, device, repeats).values()) if ranks > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=5, help="timed steps, after one warm-up step")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per step, over every rank")
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--overrides", nargs="*", default=[], help="more key=value for harness.train")
    args = parser.parse_args()
    rows = []
    for ranks in map(int, args.ranks.split(",")):
        row = run(ranks, args)
        row["all_reduce_s"] = timed_all_reduce(ranks, row["parameters"], args.device)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\n| ranks | step (s) | rollout (s) | update (s) | an all-reduce of the gradient (s) | speed-up |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['ranks']} | {row['step_s']:.3f} | {row['rollout_s']:.3f} | {row['update_s']:.3f} | "
              f"{row['all_reduce_s']:.4f} | {rows[0]['step_s'] / row['step_s']:.2f}x |")


if __name__ == "__main__":
    main()
