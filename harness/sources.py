"""Where a model's weights come from, found without loading them: an installed package's folder,
the local Hugging Face cache, and a fingerprint of what lies there (part of the stage cache's key)."""

from __future__ import annotations

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
