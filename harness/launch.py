"""A run on several processes, data parallel (`trial.processes=N`; harness.distributed says what each rank does).

Locally, torchrun's own launcher (torch.distributed.launcher, the elastic agent torchrun runs) starts the N
ranks from the run's process, which stays the job a sweeper sees: it beats to the study's trial and tells it
the outcome, while rank 0 reports the evaluations and may be pruned (every rank then stops). Under SLURM the
job's N tasks are the ranks (submitit's distributed environment; the launcher presets ask for
trial.processes tasks). A rank that fails or dies stops them all and fails the run with its error;
`resume=true` (a sweeper's retry) goes on from the last resume state, which rank 0 wrote.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from harness.distributed import is_writer, rank

PEER_GONE = ("connection closed by peer", "remote worker", "connection reset")  # a rank hit by another's failure


# Rank 0 may wait on the stage cache's lock while another trial computes that stage, its peers in a collective
# meanwhile; a rank that dies is ended by the launcher (or srun), not by this timeout.
COLLECTIVE_TIMEOUT = timedelta(hours=6)


class RankFailed(RuntimeError):
    pass


def on_local_ranks(processes: int, entrypoint, *args) -> dict:
    """entrypoint(*args) on `processes` ranks of this machine, as torchrun starts them (env:// set in each, no
    restart); {rank: what it returned}. A rank that fails or dies stops them all: ChildFailedError."""
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    launcher = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=processes, run_id=f"coldclimb-{os.getpid()}",
                            rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.5,
                            start_method="spawn")
    return elastic_launch(launcher, entrypoint)(*args)


def launch(config, run_dir: Path) -> dict:
    """The recipe on config.trial.processes local ranks; rank 0's status record (RankFailed if any rank failed)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    try:
        return on_local_ranks(config.trial.processes, rank_main, config, run_dir)[0]
    except ChildFailedError as error:
        raise RankFailed(first_cause(error.failures)) from None


def first_cause(failures: dict) -> str:
    """The failed ranks in one line, those that failed of themselves first (the others only lost a peer)."""
    def said(failure) -> str:  # a traceback's last unindented line is its error (details may follow, indented)
        message = failure.message.get("message", "") if isinstance(failure.message, dict) else failure.message
        lines = (message or f"exit code {failure.exitcode}").strip().splitlines()
        return ([line for line in lines if not line[:1].isspace()] or lines)[-1][:300]
    ranked = sorted(failures.items(), key=lambda item: (lost_peer(said(item[1])), item[0]))
    return "; ".join(f"rank {rank} failed: {said(failure)}" for rank, failure in ranked)


def lost_peer(error) -> bool:
    """Whether a rank's error (or its message) says only that another rank went away."""
    return isinstance(error, dist.DistError) or any(s in str(error).lower() for s in PEER_GONE)


def rank_main(config, run_dir: Path) -> dict:
    """One local rank, its environment set by the launcher: the recipe, rank 0 reporting to the study's trial (the
    launching process beats and tells)."""
    from harness.faults import TrialSuperseded
    from harness.train import run_recipe

    with process_group(config.device):
        # rank 0 speaks for the run; the others only when something is wrong
        logging.basicConfig(level=logging.INFO if is_writer() else logging.WARNING,
                            format=f"[%(asctime)s][%(name)s][%(levelname)s][rank {rank()}] - %(message)s")
        on_eval = None
        if config.trial.trial_id is not None and is_writer():
            from sweeps.trial import TrialReporter

            on_eval = TrialReporter(config.trial)
        try:
            return run_recipe(config, run_dir, on_eval=on_eval)
        except TrialSuperseded as error:  # raised on every rank (distributed.from_writer): its retry owns the run
            return {"status": "superseded", "error": str(error)}


_JOINED: dict = {}  # this rank's way into the ranks' group (process_group), kept so that it can join again


@contextmanager
def process_group(device: str):
    """torch.distributed's default group for this rank, from the variables torchrun and submitit set (env://):
    gloo on the CPU, NCCL on GPUs, each rank on its own. The rendezvous store is kept, for `rejoin_if_left`."""
    cuda = device.startswith("cuda")
    if cuda:  # under SLURM each task may see only its own GPU
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    store, rank, size = next(dist.rendezvous("env://", timeout=COLLECTIVE_TIMEOUT))
    _JOINED.update(store=store, backend="nccl" if cuda else "gloo", rank=rank, size=size, joins=0)
    rejoin_if_left()
    try:
        yield
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        _JOINED.clear()


def rejoin_if_left() -> None:
    """Join the ranks' default group, under a fresh prefix of the same store, where this rank of a run on several
    is in none: at its start, and after a stage whose vLLM engine's shutdown destroyed the group it had adopted."""
    if not _JOINED or dist.is_initialized():
        return
    joined = _JOINED
    dist.init_process_group(joined["backend"], store=dist.PrefixStore(f"coldclimb/{joined['joins']}", joined["store"]),
                            rank=joined["rank"], world_size=joined["size"], timeout=COLLECTIVE_TIMEOUT)
    joined["joins"] += 1


def slurm_ranks(processes: int) -> bool:
    """Whether this process is one of a SLURM job's tasks that together are the run's ranks; exports
    torch.distributed's environment for them."""
    if processes == 1 or os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return False
    from submitit.helpers import TorchDistributedEnvironment

    tasks = int(os.environ.get("SLURM_NTASKS", 1))
    if tasks != processes:
        raise RankFailed(f"trial.processes={processes} but the SLURM job has {tasks} tasks "
                         f"(hydra.launcher.tasks_per_node x nodes must equal it)")
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return True
