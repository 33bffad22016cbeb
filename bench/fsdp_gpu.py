"""FSDP2 on a GPU, for bench/gpu_check.sh (a one-GPU machine cannot run two NCCL ranks): on a one-rank NCCL group,
the GRPO update through fully_shard gives the unwrapped model's gradient (tests/test_distributed's batch), HF
generate runs on the gathered weights, and the whole state (weights, and AdamW's after a step) comes back for
saving and goes back into a fresh optimizer. Prints one RESULT line.
Without a GPU it runs the same on the CPU, with gloo (a dry run of the check)."""

import os

import torch
import torch.distributed as dist

from harness.distributed import fsdp, load_optimizer_state, optimizer_state, whole_state, whole_weights
from harness.models import build_tokenizer
from harness.rollout.base import SamplingParams
from harness.rollout.hf import HFEngine
from tests.test_distributed import K, batch, update, update_trained

CASE = ("dapo", K, "batch")  # micro-batches of one group, the batch's std
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def on_gpu():
    model, reference, rollout, rewards = batch()
    return model.to(DEVICE), reference.to(DEVICE), rollout.to(DEVICE), rewards


def main() -> None:
    plain = update(*on_gpu(), CASE)[0]  # no process group: the model itself
    os.environ.update(MASTER_ADDR="localhost", MASTER_PORT=os.environ.get("MASTER_PORT", "29517"), RANK="0",
                      WORLD_SIZE="1")
    if DEVICE == "cuda":
        dist.init_process_group("nccl", device_id=torch.device("cuda", 0))
    else:
        dist.init_process_group("gloo")
    model, reference, rollout, rewards = on_gpu()
    sharded = update_trained(fsdp(model), reference, rollout, rewards, CASE)[0]  # one rank: data_parallel would not
    gap = (sharded - plain).abs().max().item()
    assert gap < 1e-5, f"FSDP's gradient is {gap} from the unwrapped model's"
    with whole_weights(model):
        completions = HFEngine(model, build_tokenizer(["a", "b", "c"])).generate(["a b"], 4, SamplingParams(1.0, 1.0, 6))
    state = whole_state(model)
    assert all(t.device.type == "cpu" and not hasattr(t, "placements") for t in state.values())
    stepped, fresh = (torch.optim.AdamW(model.parameters(), lr=1e-3) for _ in range(2))
    stepped.step()  # on the update's gradients
    saved = optimizer_state(model, stepped)
    model.zero_grad(set_to_none=True)  # as on a resume: the state loads before any backward
    load_optimizer_state(model, fresh, saved)
    restored = optimizer_state(model, fresh)["state"]
    assert saved["state"] and all(torch.equal(restored[name]["exp_avg"], moments["exp_avg"])
                                  for name, moments in saved["state"].items())
    dist.destroy_process_group()
    where = torch.cuda.get_device_name() if DEVICE == "cuda" else "the CPU"
    print(f"RESULT gradient within {gap:.1e} of the unwrapped model's, {len(completions.texts)} completions "
          f"generated on gathered weights, {len(state)} whole tensors and AdamW's state saved and restored, on {where}")


if __name__ == "__main__":
    main()
