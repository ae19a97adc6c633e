"""Readers of the O*NET 29.2 text files of the pack (``extra/onet-29.2``), shared by the four O*NET tasks.

O*NET files are tab-separated with a header row and no quoting (a ``"`` is an ordinary character), so they are
read with ``quoting=QUOTE_NONE``. Texts are whitespace-stripped, as in every WorkBench task. The occupation
target space of ONET-JobNorm, ONET-Tech2Occ and ONET-Task2Occ is the same for all three: the sorted titles of
all 1,016 occupations of ``Occupation Data.txt`` (also those without technology skills or task statements).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable

from uwe_lightning.data.graphs import normalize_text
from uwe_lightning.io import DataError, read_csv_checked
from uwe_lightning.paths import data_file
from uwe_lightning.workbench.tasks.builders import group_in_order, hash_split_side, target_index

ONET_DIR = "extra/onet-29.2"
ONET_FILES: dict[str, str] = {
    "occupations": f"{ONET_DIR}/Occupation Data.txt",
    "alternate_titles": f"{ONET_DIR}/Alternate Titles.txt",
    "technology_skills": f"{ONET_DIR}/Technology Skills.txt",
    "task_statements": f"{ONET_DIR}/Task Statements.txt",
}
CODE = "O*NET-SOC Code"
#: Paper and data README: the paper reports O*NET rows on v30.1; the pack has 29.2 (same O*NET-SOC 2019 codes).
VERSION_NOTE = ("O*NET 29.2 (February 2025; the paper's O*NET rows use 30.1, which the pack does not have). "
                "Zero-shot only: no training protocol reads O*NET, and no validation uses it.")


def read_onet(data_dir: str | os.PathLike | None, what: str, columns: list[str]) -> list[dict[str, str]]:
    """Rows of one O*NET file (``what`` in :data:`ONET_FILES`) as dicts of stripped strings; the ``columns``
    must exist and be non-empty (the error names the file, row and field)."""
    path = data_file(data_dir, ONET_FILES[what])
    frame = read_csv_checked(path, columns, non_empty=columns, sep="\t", quoting=csv.QUOTE_NONE)
    return [{c: str(v).strip() for c, v in zip(columns, row, strict=True)}
            for row in frame[columns].itertuples(index=False)]


def occupation_titles(data_dir: str | os.PathLike | None) -> dict[str, str]:
    """O*NET-SOC code -> occupation title (``Occupation Data.txt``); a repeated code is an error."""
    rows = read_onet(data_dir, "occupations", [CODE, "Title"])
    titles: dict[str, str] = {}
    for i, row in enumerate(rows, start=1):
        if row[CODE] in titles:
            raise DataError(f"{data_file(data_dir, ONET_FILES['occupations'])}: row {i} (1-based): "
                            f"O*NET-SOC code {row[CODE]} appears twice")
        titles[row[CODE]] = row["Title"]
    return titles


def occupation_targets(data_dir: str | os.PathLike | None) -> tuple[dict[str, str], list[str], dict[str, int]]:
    """(code -> title, sorted target titles, title -> target index): the shared occupation target space."""
    titles = occupation_titles(data_dir)
    targets, index = target_index(titles.values())
    return titles, targets, index


def code_rows(data_dir: str | os.PathLike | None, what: str, text_column: str,
              titles: dict[str, str]) -> list[tuple[str, str]]:
    """(code, text) of every row of ``what``; a code missing from ``Occupation Data.txt`` is an error."""
    rows = read_onet(data_dir, what, [CODE, text_column])
    for i, row in enumerate(rows, start=1):
        if row[CODE] not in titles:
            raise DataError(f"{data_file(data_dir, ONET_FILES[what])}: row {i} (1-based): O*NET-SOC code "
                            f"{row[CODE]} is not in {data_file(data_dir, ONET_FILES['occupations'])}")
    return [(row[CODE], row[text_column]) for row in rows]


def split_grouped(
    grouped: dict[str, list[str]], split: str, salt: str, val_fraction: float, test_fraction: float,
    key: Callable[[str], str] = normalize_text,
) -> dict[str, list[str]]:
    """The entries of ``grouped`` (query -> its labels) whose hash side (:func:`~.builders.hash_split_side` of
    ``key(query)``) is ``split``, in their order."""
    return {query: labels for query, labels in grouped.items()
            if hash_split_side(key(query), salt, val_fraction, test_fraction) == split}


def text_to_codes(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Text -> the codes it belongs to (first-appearance order): identical texts of several occupations form one
    multi-label query."""
    return group_in_order((text, code) for code, text in pairs)


def check_fractions(task: str, val_fraction: float, test_fraction: float) -> None:
    if min(val_fraction, test_fraction) < 0.0 or val_fraction + test_fraction > 1.0:
        raise ValueError(f"{task}: val_fraction and test_fraction must be >= 0 with a sum <= 1; got "
                         f"{val_fraction}, {test_fraction}")
