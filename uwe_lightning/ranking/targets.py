"""Target spaces: the lists ranked against, by name (``esco_skills``, ``esco_occupations``, ``file``).

One place for what ``rank``, ``serve`` and the Python API call a target space: ESCO skill / occupation preferred
labels (ids: ESCO URIs), or a file of one text a line (ids ``line:<n>``) or a table with id and text columns
(CSV/TSV detected by header, parquet/JSONL by ``columns``). Bad files fail with a :class:`DataError` naming the
file and the line or row.
"""

from __future__ import annotations

import codecs
import csv
from dataclasses import dataclass
from pathlib import Path

from uwe_lightning.io import ConfigError, DataError, line_of_byte
from uwe_lightning.ranking.texts import is_blank

#: The named target spaces.
TARGET_SOURCES = ("esco_skills", "esco_occupations", "file")
#: The ranking directions of WorkBench and the target space each ranks against.
DIRECTIONS = {"job2skill": "esco_skills", "skill2job": "esco_occupations"}


@dataclass
class TargetSpace:
    """Target texts with an id per text (ESCO URI, or ``file:line``) and where they came from."""

    source: str
    texts: list[str]
    ids: list[str]


def read_numbered_lines(path: str | Path, what: str) -> list[tuple[int, str]]:
    """``(line number, stripped text)`` of the non-blank lines of a UTF-8 text file (a leading BOM is dropped;
    a line of only invisible characters counts as blank). A missing or empty file, or bytes that are not UTF-8,
    are a :class:`DataError` naming the file (and the line)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{what} {path} is not a file")
    data = path.read_bytes()
    data = data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = line_of_byte(data, err.start)
        raise DataError(f"{what} {path}: line {line}: not valid UTF-8 (byte 0x{data[err.start]:02x}); "
                        "save the file as UTF-8") from err
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    numbered = [(i, line.strip()) for i, line in enumerate(lines, start=1) if not is_blank(line)]
    if not numbered:
        raise DataError(f"{what} {path} holds no text (one text a line)")
    return numbered


def read_lines(path: str | Path, what: str) -> list[str]:
    """Non-blank, stripped lines of a text file; see :func:`read_numbered_lines`."""
    return [text for _, text in read_numbered_lines(path, what)]


#: Header names recognised in a ``targets_file`` table (case-insensitive): its id column and its text column.
ID_COLUMNS = ("uri", "id", "skill_id", "concepturi", "code")
TEXT_COLUMNS = ("label", "text", "preferredlabel", "name", "title")
TABLE_SUFFIXES = (".csv", ".tsv", ".tab")


def table_columns(path: Path, columns) -> tuple[str, str] | None:
    """The (id, text) columns of ``targets_file`` when it is a table: named by ``targets_columns``, or a header
    with a known id and text name (:data:`ID_COLUMNS`, :data:`TEXT_COLUMNS`); parquet / JSONL are always tables.
    None: a plain file, one target text a line (a comma is then part of the text)."""
    if columns:
        names = [str(c) for c in columns]
        if len(names) != 2:
            raise ConfigError(f"targets_columns must name two columns [id, text], got {names}")
        return names[0], names[1]
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES and path.is_file():
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            first = next((line for line in fh if line.strip()), "")
        header = next(csv.reader([first], delimiter="," if suffix == ".csv" else "\t"), [])
        by_name = {h.strip().casefold(): h.strip() for h in header}
        found_id = next((by_name[c] for c in ID_COLUMNS if c in by_name), None)
        found_text = next((by_name[c] for c in TEXT_COLUMNS if c in by_name), None)
        return (found_id, found_text) if found_id and found_text and len(header) >= 2 else None
    if suffix in (".parquet", ".jsonl", ".ndjson"):
        raise ConfigError(f"targets_file {path} is a {suffix[1:]} table: name its columns, e.g. "
                          "targets_columns=[uri,label] (id column, text column)")
    return None


def read_target_table(path: Path, id_column: str, text_column: str) -> TargetSpace:
    """Ids and texts of a target table (CSV/TSV/parquet/JSONL); an empty cell is an error naming its row."""
    from uwe_lightning.io import read_table

    frame = read_table(path)
    missing = [c for c in (id_column, text_column) if c not in frame.columns]
    if missing:
        raise DataError(f"targets_file {path}: no column(s) {missing} (found {list(frame.columns)}); "
                        "name the id and text columns with targets_columns=[<id>,<text>]")
    ids, texts = [], []
    for row, (ident, text) in enumerate(zip(frame[id_column], frame[text_column], strict=True), start=1):
        ident, text = ("" if v is None else str(v).strip() for v in (ident, text))
        if not ident or is_blank(text):
            raise DataError(f"targets_file {path}: row {row}: empty {id_column if not ident else text_column!r}")
        ids.append(ident)
        texts.append(text)
    if not texts:
        raise DataError(f"targets_file {path} holds no rows")
    return TargetSpace(f"file:{path}", texts, ids)


def load_targets(source: str, data_dir=None, targets_file=None, esco_version: str = "v1.2.0",
                 columns=None) -> TargetSpace:
    """The target space ``source``: ESCO skill / occupation preferred labels, or a file: a table with id and text
    columns (:func:`table_columns`; the ids are kept) or plain lines (ids ``line:<n>``)."""
    if source == "file":
        if not targets_file:
            raise ValueError("targets=file needs targets_file=<path> (one target text a line)")
        found = table_columns(Path(targets_file).expanduser(), columns)
        if found is not None:
            return read_target_table(Path(targets_file).expanduser(), *found)
        numbered = read_numbered_lines(targets_file, "targets_file")
        return TargetSpace(f"file:{targets_file}", [t for _, t in numbered], [f"line:{n}" for n, _ in numbered])
    from uwe_lightning import esco

    if source == "esco_skills":
        frame = esco.load_skills(data_dir, esco_version)
    elif source == "esco_occupations":
        frame = esco.load_occupations(data_dir, esco_version)
    else:
        raise ValueError(f"targets must be one of {list(TARGET_SOURCES)}, got {source!r}")
    return TargetSpace(f"{source}/{esco_version}", frame["label"].tolist(), frame["uri"].tolist())
