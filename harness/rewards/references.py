"""A reward function found by its reference, and the digest of its source.

`module:function` is imported; `path/to/file.py:function` (relative to the current directory, or
absolute) is loaded from that file under a module name of its own; a built-in's name (the registry's
BUILTIN_REWARDS: `math_verify`, the TRL-style function below) loads it. A reference that does not name a
callable is refused in one line naming it and the cause.
The source digest goes into the stage cache keys: editing a reward's file recomputes the stages that read it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Callable, Optional

from harness.registry import BUILTIN_REWARDS, load
from harness.sources import installed_version

DIGEST_CHARS = 16


def math_verify_reward(completions: list[str], answer: list, **others) -> list[float]:
    """TRL-style: 1.0 where the completion's answer (a \\boxed{}, $...$ or a bare number, the last found)
    equals the `answer` column's, as math_verify compares them (1/2, 0.5 and \\frac12 are equal).
    math_verify's own alarm-based timeouts are off: they work only in a main thread and would replace
    the reward pool's, which bounds every call (task.reward_timeout)."""
    from math_verify import parse, verify  # here: sympy and ANTLR take a second, and most rewards never need them

    return [float(verify(parse(as_latex(str(gold)), parsing_timeout=None), parse(completion, parsing_timeout=None),
                         timeout_seconds=None)) for completion, gold in zip(completions, answer)]


def as_latex(answer: str) -> str:
    """A bare reference answer boxed, so math_verify reads all of it: unboxed, "x^2 + 1" parses as 1."""
    delimited = any(mark in answer for mark in ("$", "\\boxed", "\\(", "\\["))
    return answer if delimited else f"\\boxed{{{answer}}}"


def load_function(ref: str) -> Callable:
    """The callable `ref` names; ValueError in one line naming it and the cause."""
    if ref in BUILTIN_REWARDS:
        path, needs = BUILTIN_REWARDS[ref]
        if installed_version(needs) is None:
            raise ValueError(f"{ref!r} needs {needs}: pip install 'coldclimb[tasks]'")
        return load(path)
    location, _, attribute = ref.rpartition(":")
    if not location or not attribute:
        raise ValueError(f"{ref!r} is not module:function, path/to/file.py:function or a built-in "
                         f"({', '.join(BUILTIN_REWARDS)})")
    module = _module_from_file(location, ref) if location.endswith(".py") else _module_by_name(location, ref)
    function = getattr(module, attribute, None)
    if function is None:
        raise ValueError(f"{ref!r}: {location} has no attribute {attribute!r}")
    if not callable(function):
        raise ValueError(f"{ref!r}: {attribute} is a {type(function).__name__}, not a function")
    return function


def _module_by_name(name: str, ref: str):
    try:
        return importlib.import_module(name)
    except Exception as error:  # ImportError, or anything the user's module raises as it runs
        raise ValueError(f"{ref!r}: cannot import {name} ({one_line(error)})") from None


def _module_from_file(location: str, ref: str):
    path = Path(location).expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"{ref!r}: no such file {path}")
    name = f"coldclimb_reward_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"  # one per file
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickle look a module up by its name
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # anything the user's file raises as it runs
        del sys.modules[name]
        raise ValueError(f"{ref!r}: importing {path} raised {one_line(error)}") from None
    return module


def source_digest(ref: str) -> Optional[str]:
    """sha256 (16 hex) of the file that defines `ref` (the .py file, or the named module's own file: a
    function it re-exports from elsewhere is not followed); for a built-in, of its module's file and the
    version of the distribution it needs. None where there is no such file. Stage cache keys hold it."""
    if ref in BUILTIN_REWARDS:
        path, needs = BUILTIN_REWARDS[ref]
        return _digest(_defining_file(path.partition(":")[0]).read_bytes() + str(installed_version(needs)).encode())
    found = _defining_file(ref.rpartition(":")[0])
    return _digest(found.read_bytes()) if found is not None else None


def _defining_file(location: str) -> Optional[Path]:
    """A path/to/file.py, or the file of the module a dotted name names; None where there is none."""
    if location.endswith(".py"):
        path = Path(location).expanduser()
    else:
        try:
            spec = importlib.util.find_spec(location)
        except (ImportError, ValueError):  # a missing parent package; a name that is not a module's
            return None
        path = Path(spec.origin) if spec is not None and spec.origin else None
    return path if path is not None and path.is_file() else None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:DIGEST_CHARS]


def one_line(error: BaseException) -> str:
    """'TypeName: message' on one line, for the one-line errors a reference or its function gets."""
    return " ".join(f"{type(error).__name__}: {error}".split())
