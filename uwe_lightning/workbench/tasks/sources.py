"""Readers of pack files that more than one task (or the open training protocol) builds on.

One reader per file, so that every user of a file sees the same rows under the same validity rules.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from uwe_lightning.esco import load_occupation_skill_relations, load_occupations, load_skills
from uwe_lightning.io import DataError, read_parquet_checked
from uwe_lightning.paths import data_file
from uwe_lightning.workbench.tasks.builders import target_index

#: workrb's first-commit vacancy file: Job2Skill/Skill2Job val, and the open protocol's J graph.
VACANCY_TITLES_FILE = "workbench/job2skill_val/job_skill_val.parquet"

#: Why Job2Skill/Skill2Job val may differ from workrb 0.6.0 on this pack (both tasks carry it in meta).
STRIPPED_SKILL_MATCH_NOTE = (
    "Skill names are matched to ESCO v1.2.0 labels on stripped text. workrb 0.6.0 matches raw text and, "
    "because 4 preferredLabels of the pack's file end in a space that the parquet lacks, would lose 4 "
    "skills (Skill2Job val 10,133 instead of the paper's 10,137) and positives of 315 Job2Skill val titles."
)


def _skill_labels(cell: Any, path: Path, row: int) -> list[str]:
    """A ``skill_name`` cell as stripped labels; a missing list is no skills, a non-list is an error."""
    if cell is None or cell is pd.NA or (isinstance(cell, float) and math.isnan(cell)):
        return []
    if isinstance(cell, str) or not hasattr(cell, "__iter__"):
        raise DataError(
            f"{path}: row {row} (1-based): field 'skill_name' must be a list of skill labels, got {cell!r}"
        )
    return [str(label).strip() for label in cell]


def read_vacancy_titles(data_dir: str | os.PathLike | None) -> list[tuple[str, list[str]]]:
    """(stripped title, its stripped skill labels) per row of ``job_skill_val.parquet``, in file order.

    Rows are neither merged nor filtered, and labels are not checked against any vocabulary: each user
    decides that. An empty title or a ``skill_name`` that is a string or no list raises
    :class:`~uwe_lightning.io.DataError` naming the file, row and field; a missing list (None/NaN) is [].
    """
    path = data_file(data_dir, VACANCY_TITLES_FILE)
    frame = read_parquet_checked(path, ["title", "skill_name"])
    rows = []
    for row, (title, cell) in enumerate(zip(frame["title"], frame["skill_name"], strict=True), start=1):
        if not isinstance(title, str) or not title.strip():
            raise DataError(f"{path}: row {row} (1-based): empty or missing field 'title'")
        rows.append((title.strip(), _skill_labels(cell, path, row)))
    return rows


def vacancy_skills_in_targets(
    data_dir: str | os.PathLike | None, known_skills: Mapping[str, int]
) -> tuple[list[tuple[str, list[str]]], int]:
    """:func:`read_vacancy_titles` with only the skills in the target space, and how many mentions were
    dropped (workrb drops them too)."""
    rows: list[tuple[str, list[str]]] = []
    n_unknown = 0
    for title, skills in read_vacancy_titles(data_dir):
        kept = [s for s in skills if s in known_skills]
        n_unknown += len(skills) - len(kept)
        rows.append((title, kept))
    return rows, n_unknown


def relation_label_pairs(
    data_dir: str | os.PathLike | None, version: str
) -> tuple[list[tuple[str, str]], int]:
    """(occupation label, skill label) for every ESCO relation, essential and optional, in file order;
    plus how many relations were dropped because a URI has no label (workrb drops them too)."""
    occupations = load_occupations(data_dir, version)
    skills = load_skills(data_dir, version)
    relations = load_occupation_skill_relations(data_dir, version)
    occupation_label = dict(zip(occupations["uri"], occupations["label"], strict=True))
    skill_label = dict(zip(skills["uri"], skills["label"], strict=True))
    pairs: list[tuple[str, str]] = []
    for occupation_uri, skill_uri in zip(relations["occupation_uri"], relations["skill_uri"], strict=True):
        occupation, skill = occupation_label.get(occupation_uri), skill_label.get(skill_uri)
        if occupation is not None and skill is not None:
            pairs.append((occupation, skill))
    return pairs, len(relations) - len(pairs)


def v120_skill_targets(data_dir: str | os.PathLike | None) -> tuple[list[str], dict[str, int]]:
    """The 13,939 ESCO v1.2.0 skills as a target space: Job2Skill's targets, Skill2Job's vocabulary."""
    return target_index(load_skills(data_dir, "v1.2.0")["label"])

