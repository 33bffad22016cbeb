"""GPU placement on a machine with several GPUs, with the GPUs faked (CUDA_VISIBLE_DEVICES): no CUDA
is initialised, so this runs on any machine."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.gpus import gpu_slots, try_claim

CLAIM = """
import os, sys, time
from harness.gpus import claim_gpu
gpu = claim_gpu(jobs_per_gpu=1, poll_seconds=0.05)
print(gpu, os.environ["CUDA_VISIBLE_DEVICES"], time.time(), flush=True)
time.sleep(float(sys.argv[1]))
print("released", time.time(), flush=True)
"""


def test_jobs_fill_every_gpu_before_sharing_one_and_never_exceed_jobs_per_gpu(tmp_path):
    claims = [try_claim(tmp_path, ["0", "1"], jobs_per_gpu=2) for _ in range(5)]
    assert [c[0] for c in claims[:4]] == ["0", "1", "0", "1"]
    assert claims[4] is None  # two GPUs, two jobs each: a fifth waits
    claims[1][1].close()  # a job on GPU 1 ends
    freed = try_claim(tmp_path, ["0", "1"], jobs_per_gpu=2)
    assert freed is not None and freed[0] == "1"


def test_processes_each_see_only_the_gpu_they_claimed_and_a_third_waits_for_a_free_one(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "4,7", "TMPDIR": str(tmp_path)}
    holders = [subprocess.Popen([sys.executable, "-c", CLAIM, "4"], env=env, stdout=subprocess.PIPE, text=True)
               for _ in range(2)]
    first = [holder.stdout.readline().split() for holder in holders]  # both have claimed
    late = subprocess.Popen([sys.executable, "-c", CLAIM, "0"], env=env, stdout=subprocess.PIPE, text=True)
    released = [float(holder.stdout.readline().split()[1]) for holder in holders]
    gpu, visible, claimed_at = late.stdout.readline().split()
    for process in (*holders, late):
        assert process.wait(timeout=60) == 0
    assert sorted(row[0] for row in first) == ["4", "7"]
    assert all(row[0] == row[1] for row in first)  # CUDA sees the claimed GPU alone
    assert gpu == visible and gpu in ("4", "7")
    assert float(claimed_at) >= min(released)  # it waited for a place to free


def test_a_sweep_keeps_no_more_jobs_in_flight_than_the_gpus_hold():
    assert gpu_slots(4, gpus=2, jobs_per_gpu=1) == 2
    assert gpu_slots(4, gpus=2, jobs_per_gpu=3) == 4
    assert gpu_slots(1, gpus=8, jobs_per_gpu=1) == 1
    with pytest.raises(RuntimeError, match="no GPU"):
        gpu_slots(2, gpus=0, jobs_per_gpu=1)


def test_a_job_counts_the_gpus_it_may_use_without_initialising_cuda(monkeypatch):
    from harness.gpus import visible_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 3,5")
    assert visible_gpus() == ["2", "3", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []


def test_a_job_lets_its_place_go_at_its_end_and_a_process_set_up_on_a_gpu_keeps_to_it(tmp_path, monkeypatch):
    from harness import gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,7")
    monkeypatch.setattr(gpus, "_held", {})
    monkeypatch.setattr(gpus, "lock_dir", lambda: tmp_path)
    assert gpus.claim_gpu(jobs_per_gpu=1) == "4" and os.environ["CUDA_VISIBLE_DEVICES"] == "4"
    assert try_claim(tmp_path, ["4"], jobs_per_gpu=1) is None  # held while the job runs
    gpus.release_gpu()
    other = try_claim(tmp_path, ["4"], jobs_per_gpu=1)
    assert other is not None  # free for another job once this one ended
    other[1].close()
    assert gpus.claim_gpu(jobs_per_gpu=1) == "4"  # this process's next job: CUDA would see only GPU 4 now
    gpus.release_gpu()


def test_under_slurm_the_scheduler_has_placed_the_gpus(monkeypatch):
    from harness import gpus

    monkeypatch.setenv("SLURM_JOB_ID", "123")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setattr(gpus, "_held", {})
    assert gpus.claim_gpu(jobs_per_gpu=1) is None and os.environ["CUDA_VISIBLE_DEVICES"] == "0"
