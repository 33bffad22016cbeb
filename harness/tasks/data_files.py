"""A user's data file read with Hugging Face `datasets`, offline: JSONL/JSON, Parquet and CSV by suffix, a
`save_to_disk` folder as itself.

Every read goes through a throwaway cache folder and stays in memory: nothing is left in the Hugging Face
cache, and an edited file is always read afresh (datasets' own cache is keyed by path and modification
time, not content). A file that cannot be read is refused in one line that names it.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where it reads (read_table's docstring says why)
    import datasets

BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def read_table(path: str, setting: str, split: str, text_columns: tuple[str, ...] = ()) -> datasets.Dataset:
    """The rows of `path` (named `setting` in errors, e.g. task.train_path). A saved DatasetDict gives its
    `split` ("train" or "test"), or its only split. CSV cells of `text_columns` are kept as written
    ("007" stays "007"); other CSV columns are typed as pandas guesses. (`datasets` is imported by the
    functions that read: it takes pyarrow and pandas, which a reward worker building a task never needs.)"""
    file = Path(path).expanduser()
    if not file.exists():
        raise ValueError(f"{setting}={path!r} does not exist")
    if not file.is_dir() and file.suffix not in BUILDERS:
        raise ValueError(f"{setting}={path!r}: cannot read {file.suffix or 'a file without a suffix'} "
                         f"(a {', '.join(BUILDERS)} file or a datasets.save_to_disk folder)")
    if not file.is_dir() and file.stat().st_size == 0:
        raise ValueError(f"{setting}={path!r} is empty")
    try:
        with _quiet():
            table = _from_folder(file, split) if file.is_dir() else _from_file(file, text_columns)
    except ValueError as error:
        raise ValueError(f"{setting}={path!r}: {' '.join(str(error).split())}") from None
    except Exception as error:  # datasets raises many kinds for one bad file (StopIteration, ArrowInvalid, ...)
        raise ValueError(f"{setting}={path!r} cannot be read: {_one_line(_root_cause(error))}") from None
    if len(table) == 0:
        raise ValueError(f"{setting}={path!r}: has no rows")
    return table


def _from_file(file: Path, text_columns: tuple[str, ...]) -> datasets.Dataset:
    import datasets

    builder = BUILDERS[file.suffix]
    options = {"converters": {column: str for column in text_columns}} if builder == "csv" else {}
    with tempfile.TemporaryDirectory() as cache:
        try:
            return datasets.load_dataset(builder, data_files=str(file), split="train", cache_dir=cache,
                                         keep_in_memory=True, **options)
        except ValueError as error:  # datasets' words for a file with a header or schema and no rows
            if "corresponds to no data" in str(error):
                raise ValueError("has no rows") from None
            raise


def _from_folder(folder: Path, split: str) -> datasets.Dataset:
    import datasets

    saved = datasets.load_from_disk(str(folder))
    if isinstance(saved, datasets.Dataset):
        return saved
    if split in saved:
        return saved[split]
    if len(saved) == 1:
        return next(iter(saved.values()))
    raise ValueError(f"holds the splits {', '.join(saved)} and no {split!r} split")


@contextmanager
def _quiet():
    """No progress bars while reading (they would fill the run's log), as they were afterwards."""
    import datasets

    were_disabled = datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not were_disabled:
            datasets.enable_progress_bars()


def _root_cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())
