"""Checked readers for the ESCO files of the data pack (skills, occupations, occupation-skill relations).

Every WorkBench task and the open training protocol read ESCO through these functions, so that text
cleaning (whitespace stripping, altLabel splitting) is defined once. Bad input fails with a
:class:`~uwe_lightning.io.DataError` naming the file, and the row and field where one is at fault.

Frames are parsed once per (file, modification time) and cached; callers get a copy. The lists in
``alt_labels`` are shared with the cache: treat them as read-only.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pandas as pd

from uwe_lightning.io import DataError, read_csv_checked
from uwe_lightning.paths import data_file

SKILL_FILES: dict[str, str] = {
    "v1.2.0": "esco/v1.2.0/skills_en.csv",
    "v1.1.0": "esco/v1.1.0/skills_en.csv",
}
OCCUPATION_FILES: dict[str, str] = {
    "v1.2.0": "esco/v1.2.0/occupations_en.csv",
    "v1.1.0": "esco/v1.1.0/occupations_en.csv",
    "v1.0.x": "esco/v1.0.x/occupations_en.csv",
}
RELATION_FILES: dict[str, str] = {
    "v1.2.0": "esco/v1.2.0/occupationSkillRelations_en.csv",
    "v1.1.0": "esco/v1.1.0/occupationSkillRelations_en.csv",
}
RELATION_TYPES = ("essential", "optional")

# Official ESCO CSV column -> our column name.
_CONCEPT_COLUMNS = {
    "conceptUri": "uri",
    "preferredLabel": "label",
    "altLabels": "alt_labels",
    "description": "description",
}
_RELATION_COLUMNS = {
    "occupationUri": "occupation_uri",
    "skillUri": "skill_uri",
    "relationType": "relation_type",
}


def split_alt_labels(cell: str) -> list[str]:
    """ESCO stores altLabels newline-separated in one cell; return them stripped, empty ones dropped.

    >>> split_alt_labels("manage staff\\n  lead staff \\n\\n")
    ['manage staff', 'lead staff']
    """
    return [part.strip() for part in str(cell).split("\n") if part.strip()]


def _version_file(files: dict[str, str], version: str, what: str) -> str:
    if version not in files:
        raise ValueError(f"unknown ESCO version '{version}' for {what}; known: {sorted(files)}")
    return files[version]


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns


@functools.lru_cache(maxsize=16)
def _parse_concepts(path_str: str, mtime_ns: int) -> pd.DataFrame:
    """uri, label, alt_labels, description of a skills/occupations file, in file order."""
    path = Path(path_str)
    raw = read_csv_checked(path, list(_CONCEPT_COLUMNS), non_empty=["conceptUri", "preferredLabel"])
    frame = raw[list(_CONCEPT_COLUMNS)].rename(columns=_CONCEPT_COLUMNS).reset_index(drop=True)
    for column in ("uri", "label", "description"):
        frame[column] = frame[column].str.strip()
    frame["alt_labels"] = frame["alt_labels"].map(split_alt_labels)
    duplicated = frame["uri"].duplicated()
    if duplicated.any():
        row = int(duplicated.to_numpy().argmax()) + 1
        raise DataError(f"{path}: row {row} (1-based): conceptUri {frame['uri'].iloc[row - 1]} appears twice")
    return frame


@functools.lru_cache(maxsize=8)
def _parse_relations(path_str: str, mtime_ns: int) -> pd.DataFrame:
    path = Path(path_str)
    raw = read_csv_checked(path, list(_RELATION_COLUMNS), non_empty=list(_RELATION_COLUMNS))
    frame = raw[list(_RELATION_COLUMNS)].rename(columns=_RELATION_COLUMNS).reset_index(drop=True)
    frame = frame.apply(lambda column: column.str.strip())
    unknown = ~frame["relation_type"].isin(RELATION_TYPES)
    if unknown.any():
        row = int(unknown.to_numpy().argmax()) + 1
        raise DataError(
            f"{path}: row {row} (1-based): relationType '{frame['relation_type'].iloc[row - 1]}' "
            f"is not one of {list(RELATION_TYPES)}"
        )
    return frame


def _load_concepts(data_dir: str | os.PathLike | None, relpath: str) -> pd.DataFrame:
    path = data_file(data_dir, relpath)
    return _parse_concepts(str(path.resolve()), _mtime(path)).copy()


def load_skills(data_dir: str | os.PathLike | None, version: str = "v1.2.0") -> pd.DataFrame:
    """ESCO skills: ``uri, label, alt_labels (list[str]), description``, stripped, in FILE order.

    File order matters: the SkillNorm validation/test split walks the skills in it.
    """
    return _load_concepts(data_dir, _version_file(SKILL_FILES, version, "skills"))


def load_occupations(data_dir: str | os.PathLike | None, version: str = "v1.2.0") -> pd.DataFrame:
    """ESCO occupations: ``uri, label, alt_labels (list[str]), description``, stripped, in file order."""
    return _load_concepts(data_dir, _version_file(OCCUPATION_FILES, version, "occupations"))


def load_occupation_skill_relations(
    data_dir: str | os.PathLike | None, version: str = "v1.2.0"
) -> pd.DataFrame:
    """ESCO occupation-skill relations: ``occupation_uri, skill_uri, relation_type`` (essential/optional).

    All relations are kept, in file order; a pair that is both essential and optional appears twice.
    """
    path = data_file(data_dir, _version_file(RELATION_FILES, version, "relations"))
    return _parse_relations(str(path.resolve()), _mtime(path)).copy()


def skill_texts_with_alt_labels(data_dir: str | os.PathLike | None = None, version: str = "v1.2.0") -> list[str]:
    """Skill preferredLabels followed by all altLabels, deduplicated in order (~100k texts for v1.2.0)."""
    frame = load_skills(data_dir, version)
    texts = list(frame["label"]) + [alt for alts in frame["alt_labels"] for alt in alts]
    return list(dict.fromkeys(texts))


def clear_cache() -> None:
    """Forget parsed files (tests that rewrite a file within one mtime tick)."""
    _parse_concepts.cache_clear()
    _parse_relations.cache_clear()
