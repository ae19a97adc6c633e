"""Input and output every layer shares: :class:`DataError`, atomic writes, and checked table readers.

A bad input file fails with a :class:`DataError` that names the file (and the row and field where one is at
fault); every result, checkpoint and cache file is published atomically (temporary file beside it, fsync,
``os.replace``), so a reader never sees half a file and a crash leaves the previous version in place. Published
files are ``0644`` and the directories made for them ``0755`` whatever the process umask (results, models and
caches are shared), and JSON is always strict (NaN/infinity become null).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
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


#: The pip extra (pyproject.toml ``[project.optional-dependencies]``) that brings each optional package.
EXTRA_OF = {
    "fastapi": "serve", "uvicorn": "serve",
    "onnx": "onnx", "onnxscript": "onnx", "onnxruntime": "onnx",
    "faiss": "ann", "usearch": "ann", "lancedb": "engine",
    "workrb": "workrb", "sentence_transformers": "st",
    "optuna": "sweeps", "hydra_plugins": "sweeps", "submitit": "cluster",
    "openai": "enrich", "pylate": "pylate", "mkdocs": "docs",
}


def require(module: str, feature: str) -> Any:
    """Import the optional package ``module`` for ``feature``, or fail with one line: the extra that provides it
    and the exact pip command (the one place every optional import goes through)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        if (err.name or top).split(".")[0] != top:
            raise  # the package is there but one of ITS imports failed: that traceback is the useful one
        extra = EXTRA_OF.get(top, "all")
        raise MissingDependencyError(
            f"{feature} needs the '{top}' package, which is not installed: pip install 'uwe_lightning[{extra}]' "
            f"(in a source checkout: pip install -e '.[{extra}]')"
        ) from err


#: The mode of every published file and of the directories made for them, whatever the umask: what the project
#: writes (results, models, caches) is read by other users and services (a model saved 0600 cannot be served).
FILE_MODE = 0o644
DIR_MODE = 0o755


#: The switch that lets a command download a dataset from the Hugging Face hub (SkillSim, ``hf:`` edge sources).
ALLOW_HUB_ENV = "UWE_ALLOW_HUB"


def hub_allowed() -> bool:
    """Whether hub downloads are allowed (env ``UWE_ALLOW_HUB=1``): never by default, so offline runs fail fast."""
    return os.environ.get(ALLOW_HUB_ENV, "").strip().lower() in ("1", "true", "yes")


def make_dirs(path: str | os.PathLike) -> Path:
    """``mkdir -p path``; each directory it creates gets :data:`DIR_MODE` (``mkdir`` alone would take the
    umask's, e.g. 0700 under ``umask 077``); directories that already exist keep their mode."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    path.mkdir(parents=True, exist_ok=True)
    for made in reversed(missing):
        with suppress(PermissionError):  # made by another user at the same moment: theirs to set
            os.chmod(made, DIR_MODE)
    return path


def publish_tree(path: str | os.PathLike) -> Path:
    """Give a directory tree we wrote (a staged model, an export) :data:`DIR_MODE` directories and
    :data:`FILE_MODE` files, before it is renamed into place; libraries that write into it (``transformers``
    writes ``model.safetensors`` 0600) or ``tempfile.mkdtemp`` (0700) would leave it unreadable to others.
    Symbolic links are left alone (their targets are not ours)."""
    root = Path(path)
    for entry in [root, *root.rglob("*")]:
        if entry.is_symlink():
            continue
        os.chmod(entry, DIR_MODE if entry.is_dir() else FILE_MODE)
    return root


@contextmanager
def atomic_write_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; once written it is fsynced and ``os.replace``-d onto ``path``.

    Readers never see half a file and a crash leaves the previous version in place; on error the temporary
    file is removed. Every result, checkpoint and cache file of the project is published through this. The
    file gets :data:`FILE_MODE` (not mkstemp's private 0600, nor a stricter umask's), and missing parent
    directories :data:`DIR_MODE`, so results and caches stay readable by whoever may read the directory.
    """
    target = Path(path)
    make_dirs(target.parent)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        publish_file(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish_file(tmp: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Make a finished ``tmp`` file (in ``target``'s directory) the file ``target``: fsync, :data:`FILE_MODE`,
    ``os.replace``. What :func:`atomic_write_path` does on success; also the last step of a resumable download
    (whose ``.part`` name must stay fixed between runs)."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, target)
    return Path(target)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int | None = 2, **dumps_kwargs: Any) -> None:
    """``data`` as strict JSON (:func:`strict_json`: NaN/infinity as null, non-JSON values through ``str``),
    published atomically. Why strict: Python's ``json`` writes a bare ``NaN``, which other readers reject."""
    atomic_write_text(path, strict_json(data, indent=indent, **dumps_kwargs) + "\n")


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
    guessing). Used for user data that has no manifest to be checked against (edge files, custom skill
    vocabularies and skill lists), so text formats are parsed strictly: a CSV/TSV row with fewer or more fields
    than the header, or a JSONL object with other keys than the first one, is a :class:`DataError` naming the
    row (pandas would pad a short row with empty fields, and make a long first row's extra field an index)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    try:
        if suffix in (".csv", ".tsv", ".tab"):
            return _read_delimited(path, "," if suffix == ".csv" else "\t")
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in (".jsonl", ".ndjson"):
            return _read_jsonl(path)
    except DataError:
        raise
    except Exception as err:  # parser errors: name the file
        raise DataError(f"{path}: cannot be read as {suffix[1:]}: {err}") from err
    raise DataError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .parquet or .jsonl")


def _fields(n: int) -> str:
    return f"{n} field" + ("" if n == 1 else "s")


def _read_delimited(path: Path, delimiter: str) -> pd.DataFrame:
    """A delimited text file with a header line, every data row holding exactly the header's number of fields.

    Rows are numbered like the readers' own errors (1-based data row, header and blank lines not counted), with
    the line where the row ends (a quoted field may span lines). A UTF-8 BOM is dropped; bytes that are not
    UTF-8 name their line."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            header = next((row for row in reader if row), None)
            if header is None:
                raise DataError(f"{path}: empty file; the first line must be the header (column names)")
            repeated = sorted({name for name in header if header.count(name) > 1})
            if repeated:
                raise DataError(f"{path}: the header names column(s) {repeated} more than once")
            rows = []
            for row in reader:
                if not row:  # a blank line
                    continue
                if len(row) != len(header):
                    hint = (f"quote a field that holds {'a comma' if delimiter == ',' else 'a tab'}"
                            if len(row) > len(header) else "is the line cut, or a field missing?")
                    raise DataError(
                        f"{path}: row {len(rows) + 1} (line {reader.line_num}): {_fields(len(row))}, but the "
                        f"header has {_fields(len(header))} {header}; {hint}"
                    )
                rows.append(row)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: {first_line_of_byte(path)}: not UTF-8 text ({err.reason}); re-save the file "
                        "as UTF-8") from err
    except csv.Error as err:
        raise DataError(f"{path}: line {reader.line_num}: malformed {'CSV' if delimiter == ',' else 'TSV'} "
                        f"({err})") from err
    return pd.DataFrame(rows, columns=header, dtype=str)


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
            if rows and row.keys() != rows[0].keys():
                missing = [key for key in rows[0] if key not in row]
                extra = [key for key in row if key not in rows[0]]
                what = "; ".join(part for part in (f"missing {missing}" if missing else "",
                                                   f"extra {extra}" if extra else "") if part)
                raise DataError(f"{path}: line {line_no}: the object's keys differ from the first line's "
                                f"{list(rows[0])} ({what}); give every line the same keys (null for no value)")
            rows.append(row)
    return pd.DataFrame(rows)
