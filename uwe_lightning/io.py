"""Input and output every layer shares: :class:`DataError`, atomic writes, and checked table readers.

A bad input file fails with a :class:`DataError` that names the file (and the row and field where one is at
fault); every result, checkpoint and cache file is published atomically (temporary file beside it, fsync,
``os.replace``), so a reader never sees half a file and a crash leaves the previous version in place.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd


class DataError(RuntimeError):
    """Bad or missing input data; the message names the file, row or field."""


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key (``trainer.max_steps``) and what to do."""


def check_whole_number(value: Any, key: str, optional: bool = False, what: str = "") -> None:
    """A config value that must be a whole number >= 1 (``optional``: or null); else a ConfigError naming ``key``.

    >>> check_whole_number(3, "k"); check_whole_number(None, "max_queries", optional=True)
    >>> check_whole_number(2.7, "k")
    Traceback (most recent call last):
    ...
    uwe_lightning.io.ConfigError: k must be a whole number >= 1, got 2.7 (e.g. k=10)
    """
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        allowed = "a whole number >= 1" + (" or null" if optional else "")
        raise ConfigError(f"{key} must be {allowed}{what}, got {value!r} (e.g. {key}=10)")


class ModelNotFoundError(FileNotFoundError):
    """A model name or directory that does not resolve; the message says what would."""


class MissingDependencyError(ImportError):
    """An optional package a requested feature needs is not installed; the message names the pip extra."""


@contextmanager
def atomic_write_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; once written it is fsynced and ``os.replace``-d onto ``path``.

    Readers never see half a file and a crash leaves the previous version in place; on error the temporary
    file is removed. Every result, checkpoint and cache file of the project is published through this. The
    file gets the mode a plain ``open()`` would give (``0o666`` minus the umask), not mkstemp's private 0600,
    so results and caches stay readable by whoever may read the directory.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        publish_file(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish_file(tmp: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Make a finished ``tmp`` file (in ``target``'s directory) the file ``target``: fsync, the mode a plain
    ``open()`` gives, ``os.replace``. What :func:`atomic_write_path` does on success; also the last step of a
    resumable download (whose ``.part`` name must stay fixed between runs)."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o666 & ~_current_umask())
    os.replace(tmp, target)
    return Path(target)


def _current_umask() -> int:
    """The process umask, read without changing it where the OS allows (``os.umask`` can only be read by
    setting it, which briefly affects files other threads create)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    """``data`` as indented JSON (non-JSON values through ``str``), published atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_copy(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Copy ``source`` onto ``path`` atomically (publishing a result next to where it was written)."""
    with atomic_write_path(path, suffix=Path(path).suffix) as tmp:
        shutil.copyfile(source, tmp)
    return Path(path)


def atomic_save_figure(fig: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """``fig.savefig`` (a matplotlib figure, as PNG) published atomically; the figure is closed afterwards, also
    on an error (pyplot keeps every open figure alive)."""
    try:
        with atomic_write_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return Path(path)


def finite_or_none(data: Any) -> Any:
    """``data`` with every non-finite float (NaN, +-inf) replaced by None, in nested dicts/lists/tuples.

    >>> finite_or_none({"map": float("nan"), "rows": [1.0, float("inf")], "n": 3})
    {'map': None, 'rows': [1.0, None], 'n': 3}
    """
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite_or_none(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_or_none(value) for value in data]
    return data


def strict_json(data: Any, **dumps_kwargs: Any) -> str:
    """``json.dumps`` that never writes NaN/Infinity (they become null); non-JSON values through ``str``."""
    dumps_kwargs.setdefault("default", str)
    return json.dumps(finite_or_none(data), allow_nan=False, **dumps_kwargs)


def line_of_byte(data: bytes, position: int) -> int:
    """The 1-based line of byte ``position`` in ``data``; ``\\r\\n``, ``\\r`` and ``\\n`` each end a line.

    >>> line_of_byte(b"a\\r\\nb\\rc\\xff", 6)
    3
    """
    return data[:position].replace(b"\r\n", b"\n").replace(b"\r", b"\n").count(b"\n") + 1


def first_line_of_byte(path: Path, encoding: str = "utf-8") -> str:
    """``"line N"`` (1-based, header included) of the first byte that is not valid ``encoding``."""
    data = Path(path).read_bytes()
    try:
        data.decode(encoding)
    except UnicodeDecodeError as err:
        return f"line {line_of_byte(data, err.start)}"
    return "somewhere"


def read_csv_checked(
    path: str | os.PathLike,
    required_columns: Sequence[str],
    *,
    non_empty: Iterable[str] = (),
    **read_csv_kwargs,
) -> pd.DataFrame:
    """Read a CSV whose ``required_columns`` must exist and whose ``non_empty`` fields must be filled.

    Cells are read as strings and never turned into NaN (a vacancy titled "NA" stays "NA"); an empty
    cell is ``""``. Raises :class:`DataError` naming the file for a missing file, a missing column, a
    row pandas cannot parse, or an empty ``non_empty`` field (with its 1-based data row number, header
    not counted).
    """
    path = Path(path)
    non_empty = list(non_empty)
    required = list(dict.fromkeys([*required_columns, *non_empty]))
    if not path.is_file():
        raise DataError(f"missing data file {path}")
    read_csv_kwargs.setdefault("dtype", str)
    read_csv_kwargs.setdefault("keep_default_na", False)
    try:
        frame = pd.read_csv(path, **read_csv_kwargs)
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: malformed CSV row: {err}") from err
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: {first_line_of_byte(path)}: not UTF-8 text ({err.reason}); re-save the file "
                        "as UTF-8") from err
    except pd.errors.EmptyDataError as err:
        raise DataError(f"{path}: unreadable CSV: {err}") from err
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; the file has {list(frame.columns)}")
    for column in non_empty:
        values = frame[column]
        empty = (values.isna() | (values.astype(str).str.strip() == "")).to_numpy()
        if empty.any():
            row = int(empty.argmax()) + 1
            raise DataError(
                f"{path}: row {row} (1-based, header not counted): required field '{column}' is empty "
                f"({int(empty.sum())} empty in total)"
            )
    return frame


def read_parquet_checked(path: str | os.PathLike, required_columns: Sequence[str]) -> pd.DataFrame:
    """Read a parquet file whose ``required_columns`` must exist; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing data file {path}")
    try:
        frame = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several unrelated types for a corrupt file
        raise DataError(f"{path}: unreadable parquet file: {err}") from err
    missing = [c for c in required_columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; the file has {list(frame.columns)}")
    return frame


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A CSV/TSV/Parquet/JSONL file as a frame (type by suffix); text formats are read as strings (no NA
    guessing). Used for edge files and custom skill vocabularies."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    try:
        if suffix in (".csv", ".tsv", ".tab"):
            sep = "," if suffix == ".csv" else "\t"
            return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in (".jsonl", ".ndjson"):
            return _read_jsonl(path)
    except DataError:
        raise
    except Exception as err:  # parser errors: name the file
        raise DataError(f"{path}: cannot be read as {suffix[1:]}: {err}") from err
    raise DataError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .parquet or .jsonl")


def _read_jsonl(path: Path) -> pd.DataFrame:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: line {line_no}: invalid JSON ({err.msg})") from err
            if not isinstance(row, dict):
                raise DataError(f"{path}: line {line_no}: expected a JSON object with 'skill' and 'text'")
            rows.append(row)
    return pd.DataFrame(rows)
