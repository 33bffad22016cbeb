"""The GRPO training loop: task -> rollout -> reward -> advantage -> loss -> metrics -> tracker."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from harness.checkpoint import StageCheckpoints
from harness.config import GRPOConfig
from harness.distributed import BatchSize, all_max, all_sum, data_parallel, from_writer, gathered, in_lockstep, \
    syncing, unwrapped, whole_tensor, whole_weights, world_size
from harness.faults import require_finite
from harness.logprobs import completion_logprobs
from harness.metrics import completion_metrics, dead_group_cost, logprob_gap, reward_metrics, sample_rows
from harness.objective import LossSpec, compute_advantages, grpo_loss, micro_batch_share
from harness.rewards.reward import failure_metrics
from harness.rollout.base import Rollout, SamplingParams
from harness.sampling import Groups, GroupSampler
from harness.tracking import StageTracker

COMPLETIONS_PER_TABLE = 8
log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """How a GRPO stage is judged on held-out prompts: at its start, every `every` steps and at its end."""

    measure: Callable[[], dict]
    every: int
    # Sees every evaluation after the start: a sweeper reports it, and may stop the stage there by raising.
    on_eval: Optional[Callable[[int, dict], None]] = None
    at_start: Optional[dict] = None  # the evaluation at step 0 when already known (the stage cache's); None: measure


def train_grpo(policy: PreTrainedModel, groups: GroupSampler, *, cfg: GRPOConfig, evaluation: Evaluation,
               tracker: StageTracker, reference: Optional[PreTrainedModel] = None,
               checkpoints: Optional[StageCheckpoints] = None, parallel: str = "ddp") -> dict:
    """Run cfg.steps GRPO steps on `policy`; return the last held-out evaluation. `groups` samples each step's
    groups from the policy and scores them; `reference` is the KL penalty's (cfg.beta > 0 only).
    `checkpoints` saves the loop's state as it goes; when it holds a resumed state, the loop goes on
    from there, the policy already holding its weights. `parallel`: how several ranks share the update
    (trial.data_parallel); under FSDP every rollout and evaluation runs on the weights gathered whole.
    """
    K = cfg.num_generations
    trained = data_parallel(policy, parallel)  # one process: the policy itself; FSDP shards it in place
    # after sharding: under FSDP each rank's optimizer holds the state of its shard alone
    optimizer = torch.optim.AdamW(trained.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
    if world_size() > 1:
        log.info("%s: the update on %d ranks, as %s", tracker.stage, world_size(), type(trained).__name__)

    def measure() -> dict:
        with whole_weights(policy):
            return evaluation.measure()

    if checkpoints is not None and checkpoints.resumed is not None:
        state = checkpoints.restore(policy, optimizer)
        first_step, total_tokens, last_eval = state["step"] + 1, state["total_tokens"], state["last_eval"]
    else:
        first_step, total_tokens = 1, 0
        last_eval = measure() if evaluation.at_start is None else evaluation.at_start
        tracker.log_eval(0, last_eval)
    for step in (bar := tqdm(range(first_step, cfg.steps + 1), desc=tracker.stage, leave=False, disable=None)):
        # Rollout and reward: K completions per prompt, both rewards measured, one trains.
        start = time.perf_counter()
        with whole_weights(policy):
            rounds, to_train = groups(cfg)
        rollout_time = time.perf_counter() - start

        # Advantage, loss and update: num_iterations passes over the batch, one optimizer step each.
        start = time.perf_counter()
        update = {}
        [kept] = all_sum([len(to_train.problems)])
        if kept:  # dynamic sampling can come back with no live group at all (or none of this rank's: it joins in)
            advantages = rank_advantages(to_train.reward, cfg)
            update = policy_update(trained, optimizer, to_train.rollout, advantages, reference, cfg, groups.sampling)
            groups.engine.sync_weights()
        update_time = time.perf_counter() - start

        sampled = Groups.whole(rounds, groups.engine.pad_token_id)  # every rank's: the step's metrics are the batch's
        total_tokens += sampled.rollout.num_tokens
        metrics = {**step_metrics(sampled, to_train, K, rollout_time, update_time), **update,
                   "dynamic_sampling/rounds": len(rounds), "num_tokens": total_tokens,
                   "learning_rate": cfg.learning_rate}
        tracker.log(step, metrics)
        if tracker.completions_due(step):
            tracker.log_completions(step, sample_rows(sampled.prompts, sampled.rollout, sampled.gold, sampled.proxy,
                                                      COMPLETIONS_PER_TABLE))
        if step % evaluation.every == 0 or step == cfg.steps:
            last_eval = measure()
            tracker.log_eval(step, last_eval)
            # rank 0 reports (a sweeper's hook, where there is one); what it raises stops every rank
            from_writer(lambda: None if evaluation.on_eval is None else evaluation.on_eval(step, last_eval))
        if checkpoints is not None and checkpoints.due(step, cfg.steps):
            checkpoints.save(step, policy, optimizer, total_tokens=total_tokens, last_eval=last_eval)
        bar.set_postfix(reward=f"{metrics['reward']:.2f}", gold=f"{metrics['rewards/gold/mean']:.2f}")
    return last_eval


def step_metrics(sampled, to_train, K: int, rollout_time: float, update_time: float) -> dict:
    """What one step's groups (all `sampled` over every rank, and this rank's `to_train` of them) and its timings
    (the slowest rank's) measure."""
    rollout_time, update_time = all_max(rollout_time), all_max(update_time)
    trained, live = all_sum([len(to_train.problems), len(to_train.live_indices())])
    step_time = rollout_time + update_time
    return {
        **reward_metrics(sampled.gold, sampled.proxy, sampled.reward, K),
        **dead_group_cost(sampled.reward, sampled.rollout, K),
        **completion_metrics(sampled.rollout),
        **failure_metrics(sampled.failures),
        "groups": len(sampled.problems),  # every group sampled this step, the live fraction's denominator
        "update/groups": int(trained),
        "update/dead_group_frac": 1 - live / max(trained, 1),
        "step_time": step_time,
        "timing/rollout": rollout_time,
        "timing/update": update_time,
        "timing/rollout_frac": rollout_time / step_time,
        "tokens_per_second": sampled.rollout.num_tokens / step_time,
    }


def rank_advantages(rewards: torch.Tensor, cfg: GRPOConfig) -> torch.Tensor:
    """This rank's rows' advantages, computed over the whole batch: a group never spans ranks, but
    scale_rewards=batch divides by the std of every rank's rewards."""
    everyone, start = gathered(rewards)
    advantages = compute_advantages(everyone, cfg.num_generations, cfg.scale_rewards, cfg.advantage_std_floor)
    return advantages[start:start + len(rewards)]


def policy_update(policy: PreTrainedModel, optimizer: torch.optim.Optimizer, rollout: Rollout,
                  advantages: torch.Tensor, reference: Optional[PreTrainedModel], cfg: GRPOConfig,
                  sampling: SamplingParams) -> dict:
    """num_iterations optimizer steps on one generation batch, in micro-batches; their metrics,
    averaged over tokens and passes. Under data parallelism `policy` is DDP-wrapped and holds this rank's
    groups: each micro-batch weighs what it weighs in the whole batch over every rank, and DDP's average
    of the ranks' gradients is the whole batch's gradient (hence the loss times the world size). Under FSDP each
    forward and backward is a collective: every rank runs as many micro-batches (zero-weight repeats make up
    the count) with as many forwards each."""
    temperature, spec = sampling.temperature, LossSpec.of(cfg, sampling.max_completion_length)
    module, lockstep = unwrapped(policy), in_lockstep(policy)  # pi_old's and the reference's passes need no DDP
    advantages = advantages.to(module.device)  # rewards are scored on the CPU, the policy may be on a GPU
    joining = not rollout.texts  # dynamic sampling kept no group of this rank: it joins each all-reduce at zero loss
    if joining:
        rollout, advantages = stand_in(rollout, module.device), advantages.new_zeros(1)
    if lockstep:  # completion_logprobs makes a second forward for completions of two tokens or more
        rollout = widened(rollout, 2)
    slices, mask = micro_batches(rollout, cfg)
    slices, weights = as_many_as_any_rank(slices) if lockstep else (slices, [1.0] * len(slices))

    def scored(model, part: slice):
        """pi_old, the reference and pi in one precision and on the same micro-batches: the very same computation,
        so that a ratio of 1 stays exactly 1 (and pi_old's pass holds one micro-batch's logits at a time)."""
        with torch.autocast(module.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            return completion_logprobs(model, rollout, temperature, part)

    with torch.no_grad():
        # With one pass, pi_old is the current policy: every ratio is 1 (TRL does the same).
        old_logp = [scored(module, part)[0] for part in slices] if cfg.num_iterations > 1 else None
        ref_logp = [scored(reference, part)[0] for part in slices] if cfg.beta > 0 else None
    batch, ranks = BatchSize.of(mask[:0] if joining else mask), world_size()
    tokens, averaged, first_pass_logp = max(batch.tokens, 1), {}, []  # first pass: pi_old, against the engine's
    policy.train()
    for iteration in range(cfg.num_iterations):
        optimizer.zero_grad(set_to_none=True)
        for i, part in enumerate(slices):
            with syncing(policy, sync=i == len(slices) - 1):
                logp, entropy = scored(policy, part)
                if iteration == 0 and weights[i]:
                    first_pass_logp.append(logp.detach())
                out = grpo_loss(logp, logp.detach() if old_logp is None else old_logp[i], advantages[part],
                                mask[part], spec, ref_logp=None if ref_logp is None else ref_logp[i],
                                num_items_in_batch=tokens)
                require_finite(out.loss, "the GRPO loss")
                # Micro-batches of unequal size (dynamic sampling keeps any number of live groups)
                # each weigh what their rows or tokens weigh in the whole batch.
                share = micro_batch_share(cfg.loss_type, mask[part], batch) * weights[i]
                (out.loss * (share * ranks)).backward()
            if weights[i]:
                for key, value in micro_batch_metrics(out, entropy, mask[part], share, tokens).items():
                    averaged[key] = averaged.get(key, 0.0) + value / cfg.num_iterations
        grad_norm = whole_tensor(torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm))
        require_finite(grad_norm, "the GRPO gradient norm")
        optimizer.step()
    policy.eval()
    averaged = dict(zip(averaged, all_sum(list(averaged.values()))))  # each rank's part of the batch's means
    if rollout.engine_logprobs is not None:
        averaged.update(logprob_gap(rollout, torch.cat(first_pass_logp)))
    return {**averaged, "grad_norm": grad_norm.item()}


def stand_in(empty: Rollout, device: torch.device) -> Rollout:
    """One row that weighs nothing (its completion masked out), for a rank with no row to train on: its passes
    join DDP's gradient all-reduce with zeros, as the other ranks' wait for it."""
    one = torch.ones(1, 1, dtype=torch.long, device=device)
    return Rollout(one * 0, one, one * 0, one * 0, [""], torch.zeros(1, dtype=torch.bool, device=device),
                   None if empty.engine_logprobs is None else torch.zeros(1, 1, device=device))


def as_many_as_any_rank(slices: list[slice]) -> tuple[list[slice], list[float]]:
    """The micro-batches and their weights, as many as any rank holds: a rank with fewer repeats its first at zero
    weight, so that the ranks' forwards and backwards (FSDP's collectives) pair up."""
    repeats = int(all_max(len(slices))) - len(slices)
    return slices + slices[:1] * repeats, [1.0] * len(slices) + [0.0] * repeats


def widened(rollout: Rollout, width: int) -> Rollout:
    """The rollout with at least `width` completion columns, the added ones masked out (they change no score)."""
    short = width - rollout.completion_ids.size(1)
    if short <= 0:
        return rollout
    pad = lambda t: None if t is None else torch.nn.functional.pad(t, (0, short))  # noqa: E731
    return replace(rollout, completion_ids=pad(rollout.completion_ids), completion_mask=pad(rollout.completion_mask),
                   engine_logprobs=pad(rollout.engine_logprobs))


def micro_batches(rollout: Rollout, cfg: GRPOConfig) -> tuple[list[slice], torch.Tensor]:
    """The update's micro-batches (row slices of cfg.micro_batch_size; 0: one), and the mask of the tokens it
    trains on."""
    rows = len(rollout.texts)
    micro = cfg.micro_batch_size or rows
    mask = rollout.completion_mask
    if cfg.mask_truncated_completions:  # a cut-off completion is not judged on an ending it never had
        mask = mask * (~rollout.truncated).unsqueeze(1)
    return [slice(s, s + micro) for s in range(0, rows, micro)], mask


def micro_batch_metrics(out, entropy: torch.Tensor, mask: torch.Tensor, share: float, tokens: int) -> dict:
    """A micro-batch's part of the update's metrics: its loss as weighted in the batch's, its tokens' part
    of the entropy, clip fractions and KL (means over the whole batch's `tokens` once summed)."""
    weight = mask.sum().item() / tokens
    parts = {"loss": out.loss.item() * share,
             "entropy": (entropy * mask).sum().item() / tokens,
             "clip_ratio/low_mean": out.clip_low.item() * weight,
             "clip_ratio/high_mean": out.clip_high.item() * weight,
             "clip_ratio/region_mean": out.clip_region.item() * weight}
    if out.kl is not None:
        parts["kl"] = out.kl.item() * weight
    return parts
