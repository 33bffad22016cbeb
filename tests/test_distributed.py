"""Data parallelism equal to one process: two gloo ranks, each holding whole groups of one generation batch
(uneven: three groups and one, or all and none), give the gradient, loss and metrics of one process on the whole batch, for
every loss type and scaling, with and without micro-batches, pi_old and a reference model, under DDP and under
FSDP2 (whose ranks must run as many micro-batches and forwards: the uneven layouts test that); and they share
the step's prompts and dynamic sampling's live groups as one process would hold them, and follow rank 0's
decisions (its pruner's stop among them)."""

import itertools
from datetime import timedelta
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from harness.config import ModelConfig
from harness.distributed import data_parallel, from_writer, in_lockstep, my_share, whole_tensor
from harness.faults import TrialStopped
from harness.grpo import policy_update, rank_advantages
from harness.losses import LOSS_TYPES, SCALINGS
from harness.models import build_tiny_model, build_tokenizer
from harness.rollout.base import Rollout, SamplingParams, completion_mask
from harness.sampling import Groups, kept_live

K, GROUPS, LENGTH = 2, 4, 5
RANK_ROWS = [slice(0, 3 * K), slice(3 * K, GROUPS * K)]  # three groups on rank 0, one on rank 1
CASES = list(itertools.product(LOSS_TYPES, [0, K], SCALINGS))  # micro_batch_size 0: the whole (rank's) batch
# Dynamic sampling may keep every group of rank 0 and none of rank 1's, which still joins each all-reduce.
EMPTY_ROWS = [slice(0, GROUPS * K), slice(GROUPS * K, GROUPS * K)]
EMPTY_CASES = list(itertools.product(LOSS_TYPES, [0, K], ["batch"]))  # batch: its std over both ranks
# FSDP2: the gradient is reduce-scattered rather than all-reduced; the losses' weighting is the same as DDP's
FSDP_CASES = [(case, layout) for case in itertools.product(LOSS_TYPES, [0, K], ["batch"]) for layout in (RANK_ROWS,
                                                                                                      EMPTY_ROWS)]


def batch():
    """The step's generation batch and the models, the same in every process (seeded)."""
    tokenizer = build_tokenizer(["a", "b", "c"])
    shape = ModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    model, reference = (build_tiny_model(shape, tokenizer, seed=seed) for seed in (0, 1))
    g = torch.Generator().manual_seed(0)
    completions = torch.randint(4, 7, (GROUPS * K, LENGTH), generator=g)
    ends = torch.randint(1, LENGTH, (GROUPS * K,), generator=g)
    completions[torch.arange(GROUPS * K), ends] = tokenizer.eos_token_id  # lengths vary
    mask, truncated = completion_mask(completions, tokenizer.eos_token_id)
    rollout = Rollout(torch.tensor([[1, 4]] * GROUPS * K), torch.ones(GROUPS * K, 2, dtype=torch.long), completions,
                      mask, [""] * GROUPS * K, truncated)
    rewards = torch.rand(GROUPS * K, generator=g)
    return model, reference, rollout, rewards


def one_group(name: str) -> Groups:
    one = torch.ones(1, 1, dtype=torch.long)
    return Groups([name], Rollout(one, one, one, one, [""], torch.zeros(1, dtype=torch.bool)), *torch.zeros(3, 1),
                  num_generations=1, failures={})


def update(model, reference, rollout, rewards, case, how: str = "ddp") -> tuple[torch.Tensor, torch.Tensor, dict]:
    trained = data_parallel(model, how)  # FSDP shards the model in place: one model per update
    assert in_lockstep(trained) == (how == "fsdp")
    return update_trained(trained, reference, rollout, rewards, case)


def update_trained(trained, reference, rollout, rewards, case) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """One policy_update of `trained` (the model, or its data-parallel wrapper): its whole gradient, the rows'
    advantages and the update's metrics."""
    loss_type, micro_batch_size, scale_rewards = case
    cfg = SimpleNamespace(micro_batch_size=micro_batch_size, mask_truncated_completions=False, num_iterations=2,
                          beta=0.04, loss_type=loss_type, epsilon=0.2, epsilon_high=None, bf16=False,
                          importance_sampling_level="token", max_grad_norm=1e9, num_generations=K,
                          scale_rewards=scale_rewards, advantage_std_floor=0.0)
    advantages = rank_advantages(rewards, cfg)
    metrics = policy_update(trained, torch.optim.SGD(trained.parameters(), lr=0.0), rollout, advantages,
                            reference, cfg, SamplingParams(1.0, 1.0, LENGTH))
    return torch.cat([whole_tensor(p.grad).flatten() for p in trained.parameters()]), advantages, metrics


def rank_main(rank: int, init: str, out: str) -> None:
    # a collective that one rank never joins fails within a minute, rather than hanging the suite
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=len(RANK_ROWS),
                            timeout=timedelta(seconds=60))
    torch.set_num_threads(1)
    model, reference, rollout, rewards = batch()
    rows = list(range(GROUPS * K))[RANK_ROWS[rank]]
    results = [update(model, reference, rollout.select(rows), rewards[rows], case) for case in CASES]
    rows = list(range(GROUPS * K))[EMPTY_ROWS[rank]]
    results += [update(model, reference, rollout.select(rows), rewards[rows], case) for case in EMPTY_CASES]
    for case, layout in FSDP_CASES:
        model, reference, rollout, rewards = batch()
        rows = list(range(GROUPS * K))[layout[rank]]
        results.append(update(model, reference, rollout.select(rows), rewards[rows], case, how="fsdp"))
    # dynamic sampling's cut: rank 0 found 3, 1, 2 live groups in three rounds, rank 1 found 2, 2, 0
    sharing = {"share": my_share(list(range(7))), "kept": kept_live([[3, 1, 2], [2, 2, 0]][rank], budget=6),
               "decided": from_writer(lambda: f"rank {dist.get_rank()}'s"),
               "whole": Groups.whole([one_group(f"round {i}, rank {rank}") for i in range(2)], 0).problems}

    def pruner():
        raise TrialStopped(f"pruned by rank {dist.get_rank()}")
    try:  # rank 0's pruner stops every rank
        from_writer(pruner)
    except TrialStopped as error:
        sharing["stopped"] = str(error)
    torch.save((results, sharing), f"{out}/{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes: about 35 s on 2 cores
def test_two_ranks_give_one_process_gradient_loss_and_metrics(tmp_path):
    mp.start_processes(rank_main, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=len(RANK_ROWS),
                       start_method="spawn")
    ranks, sharing = zip(*(torch.load(tmp_path / f"{rank}.pt") for rank in range(len(RANK_ROWS))))
    assert [s["share"] for s in sharing] == [[0, 1, 2, 3], [4, 5, 6]]  # in rank order, the whole list
    # one process holds round 1's groups (rank 0's 3, rank 1's 2), then round 2's: the first 6 live groups
    assert [s["kept"] for s in sharing] == [[3, 1, 0], [2, 0, 0]]
    assert [(s["decided"], s["stopped"]) for s in sharing] == [("rank 0's", "pruned by rank 0")] * 2
    # a step's groups over two rounds of dynamic sampling, in one process's order: round by round
    assert [s["whole"] for s in sharing] == [["round 0, rank 0", "round 0, rank 1", "round 1, rank 0",
                                              "round 1, rank 1"]] * 2
    model, reference, rollout, rewards = batch()
    layouts = [(case, RANK_ROWS) for case in CASES] + [(case, EMPTY_ROWS) for case in EMPTY_CASES] + FSDP_CASES
    for i, (case, layout) in enumerate(layouts):
        gradient, advantages, metrics = update(model, reference, rollout, rewards, case)
        assert gradient.abs().max() > 1e-3, case  # a gradient worth comparing
        for rank, rows in enumerate(layout):
            rank_gradient, rank_advantage, rank_metrics = ranks[rank][i]
            torch.testing.assert_close(rank_gradient, gradient, atol=1e-6, rtol=0, msg=f"{case}, rank {rank}")
            torch.testing.assert_close(rank_advantage, advantages[rows], atol=1e-6, rtol=0)
            assert rank_metrics.keys() == metrics.keys()
            assert rank_metrics == pytest.approx(metrics, abs=1e-6), case
