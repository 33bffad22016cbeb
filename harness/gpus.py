"""Which GPU a job takes, on a machine with several: one holding fewer than `jobs_per_gpu` jobs.

A job with `device=cuda` claims a place on a GPU by holding a file lock while it runs
(`<tmp>/coldclimb-gpus-<uid>/gpu<id>-<place>.lock`, machine-local like the GPUs), then makes
that GPU the only one CUDA sees (CUDA_VISIBLE_DEVICES, which vLLM's workers inherit too). Jobs
fill the GPUs one place at a time, so two jobs on two GPUs get one each; a job that finds every
place taken waits for one. A process that runs another job after (a joblib worker) has CUDA set
up on its GPU already, so its next job waits for a place on that same GPU. Under SLURM the
scheduler has placed the job's GPUs (and may number each job's GPU 0): no claim is made.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import IO, Optional

import torch

log = logging.getLogger(__name__)
_held: dict = {}  # {"gpu": id, "lock": open file whose flock is the claim}; "gpu" outlives the job


def visible_gpus() -> list[str]:
    """The GPUs this process may use, without initialising CUDA (which reads CUDA_VISIBLE_DEVICES
    once, at its initialisation; torch counts through NVML)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip()]
    return [str(index) for index in range(torch.cuda.device_count())]


def lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"coldclimb-gpus-{os.getuid()}"


def try_claim(folder: Path, gpus: list[str], jobs_per_gpu: int) -> Optional[tuple[str, IO]]:
    """A free place, first places first (spreading jobs over the GPUs): (GPU id, the held lock)."""
    folder.mkdir(parents=True, exist_ok=True)
    for place in range(jobs_per_gpu):
        for gpu in gpus:
            handle = open(folder / f"gpu{gpu}-{place}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            return gpu, handle
    return None


def claim_gpu(jobs_per_gpu: int, poll_seconds: float = 2.0) -> str | None:
    """Hold a place on a GPU until release_gpu and make it the GPU CUDA sees; its id (None under
    SLURM, whose scheduler placed the job)."""
    if os.environ.get("SLURM_JOB_ID"):
        return None
    if "gpu" in _held:  # this process set CUDA up on that GPU: it can use no other
        gpus = [_held["gpu"]]
    else:
        gpus = visible_gpus()
        if not gpus:
            raise RuntimeError("device=cuda: no GPU is visible to this process")
        if torch.cuda.is_initialized():  # too late to choose: CUDA has fixed the GPUs it sees
            raise RuntimeError("device=cuda: CUDA was initialised before the job claimed a GPU")
    waited = False
    while (claimed := try_claim(lock_dir(), gpus, jobs_per_gpu)) is None:
        if not waited:
            log.info("every place on GPUs %s is taken (jobs_per_gpu=%d); waiting", ",".join(gpus), jobs_per_gpu)
            waited = True
        time.sleep(poll_seconds)
    gpu, handle = claimed
    _held.update(gpu=gpu, lock=handle)
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    log.info("this job runs on GPU %s", gpu)
    return gpu


def release_gpu() -> None:
    """Let the job's place go, and the memory torch cached there, for the next job."""
    lock = _held.pop("lock", None)
    if lock is not None:
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()
        lock.close()


def gpu_slots(n_jobs: int, gpus: int, jobs_per_gpu: int) -> int:
    """Jobs a sweep keeps in flight with device=cuda when its launcher runs them on this machine:
    no more than its GPUs hold."""
    if gpus == 0:
        raise RuntimeError("device=cuda: no GPU is visible to the sweep")
    return min(n_jobs, gpus * jobs_per_gpu)
