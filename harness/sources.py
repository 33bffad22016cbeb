"""Where a model's weights come from, found without loading them: an installed package's folder,
the local Hugging Face cache, and a fingerprint of what lies there (part of the stage cache's key); and
the same for a task's data files and reward functions."""

from __future__ import annotations

import functools
import hashlib
import inspect
import importlib.metadata
import importlib.util
import os
from pathlib import Path
from typing import Optional


def cache_root() -> Path:
    """Where coldclimb keeps what it builds: $COLDCLIMB_CACHE, by default ~/.cache/coldclimb."""
    return Path(os.environ.get("COLDCLIMB_CACHE", "~/.cache/coldclimb")).expanduser()


def installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_dir(name: str) -> Optional[Path]:
    """Where an installed package lies, found without importing it (packages that ship weights
    import what we never need); None when it is not installed."""
    spec = importlib.util.find_spec(name)
    return Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None


def in_hub_cache(repo_id: str) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "1") == "0":  # online users may name any Hub model
        return "/" in repo_id
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not even a valid repo id
        return False


def fingerprint(model_cfg) -> dict:
    """What the weights named by model.path or model.package are: a directory by its files' sizes
    and times (rewritten weights are other weights), a package by its version."""
    if model_cfg.package:
        return {"package": model_cfg.package, "version": installed_version(model_cfg.package.replace("_", "-"))}
    folder = Path(model_cfg.path).expanduser() if model_cfg.path else None
    if folder is None or not folder.is_dir():
        return {"path": model_cfg.path}  # the tiny model (built from the config) or a Hub id
    return {str(p.relative_to(folder)): [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(folder.rglob("*"))
            if p.is_file()}


def content_digest(path) -> str:
    """A file's or a folder's content (every file's relative path and bytes, in sorted order), 16 hex digits.
    Read once per process while the files' sizes and modification times stay as they were: every stage key
    of a run holds the digest of its data files, which may be large."""
    root = Path(path).expanduser().resolve()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return _digest_files(root, tuple((file, file.stat().st_size, file.stat().st_mtime_ns) for file in files))


@functools.lru_cache(maxsize=256)
def _digest_files(root: Path, files: tuple) -> str:
    digest = hashlib.sha256()
    for file, _, _ in files:
        if file != root:
            digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def class_source(task_class: type) -> Optional[str]:
    """The content digest of the file defining a task class of the user's (module:Class or an entry point);
    None for a task of harness's own, which the code version names."""
    from harness.tasks import TASKS  # here: harness.tasks imports this module

    return None if task_class in TASKS.values() else content_digest(inspect.getsourcefile(task_class))


def task_sources(task_cfg) -> dict:
    """What the task's inputs outside the config are: its data files' and reward functions' contents, a task
    class's source, reasoning-gym's version. Part of the stage keys and of each stage's recorded config, so
    an edited reward file or data file makes its stages computed again, and refuses a resume."""
    from harness.rewards.functions import source_digest  # here: both import this module
    from harness.tasks import task_class

    sources = {which: source_digest(ref) for which in ("gold", "proxy") if (ref := getattr(task_cfg, which))}
    sources.update({key: content_digest(path) for key in ("train_path", "test_path")
                    if (path := getattr(task_cfg, key)) and Path(path).expanduser().exists()})
    if (source := class_source(task_class(task_cfg.name))) is not None:
        sources["task_class"] = source
    if task_cfg.name == "reasoning_gym":
        sources["reasoning_gym"] = installed_version("reasoning-gym")
    return sources
