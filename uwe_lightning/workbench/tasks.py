"""The seven WorkBench (sub)tasks, built from the data pack exactly as the pack README and workrb define them.

Conventions shared by all tasks (README "Known conventions"; workrb 0.6.0 ``RankingDataset``):

* every text (query and target) is whitespace-stripped, and labels are matched on stripped text;
* a target space is the sorted set of its (stripped) texts, as workrb's ``get_*_vocabulary``;
* the positives of a query are sorted, without repeats;
* duplicate queries are merged into one multi-label query, except in JobNorm and SkillSim where every
  row is its own query (README for JobNorm; the paper's 100/900 SkillSim queries are pair counts);
* a label outside the target space is dropped (counted in ``meta``), as workrb does.

``RankingDataset.meta`` carries ``paper_n_queries``/``paper_n_targets`` (paper Table 1), per-task counts
of what was dropped or merged, and ``notes``: why this pack's counts differ from the paper, if they do.
Missing or malformed pack files raise :class:`~uwe_lightning.io.DataError` naming the file; only
SkillSim, whose data is not in the pack, raises :class:`TaskUnavailable`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from uwe_lightning.esco import (
    RELATION_FILES,
    SKILL_FILES,
    load_occupation_skill_relations,
    load_occupations,
    load_skills,
)
from uwe_lightning.io import DataError, read_csv_checked, read_parquet_checked
from uwe_lightning.paths import data_file, resolve_data_dir
from uwe_lightning.workbench.dataset import SPLITS, RankingDataset, TaskUnavailable
from uwe_lightning.workbench.registry import Task, register_task

#: Paper Table 1: (task, split) -> (queries, targets).
PAPER_SIZES: dict[tuple[str, str], tuple[int, int]] = {
    ("Job2Skill", "val"): (5_644, 13_939),
    ("Job2Skill", "test"): (3_039, 13_939),
    ("Skill2Job", "val"): (10_137, 5_644),
    ("Skill2Job", "test"): (13_492, 3_039),
    ("SkillNorm", "val"): (13_222, 13_939),
    ("SkillNorm", "test"): (73_311, 13_939),
    ("SkillExtr-T", "val"): (75, 13_891),
    ("SkillExtr-T", "test"): (338, 13_891),
    ("SkillExtr-H", "val"): (61, 13_891),
    ("SkillExtr-H", "test"): (262, 13_891),
    ("SkillSim", "val"): (100, 2_648),
    ("SkillSim", "test"): (900, 2_648),
    ("JobNorm", "val"): (15_462, 2_942),
    ("JobNorm", "test"): (15_461, 2_942),
}

JOB2SKILL_VAL_FILE = "workbench/job2skill_val/job_skill_val.parquet"
JOBNORM_FILES = {"val": "workbench/jobnorm/titles.csv", "test": "workbench/jobnorm/titles.test.csv"}
SKILL_EXTRACTION_FILE = "workbench/skill_extraction/{subset}_{split}_annotations.csv"
#: SkillSpan labels that are no ESCO skill; a sentence with only these is no query.
NOT_A_SKILL = ("LABEL NOT PRESENT", "UNDERSPECIFIED")

SKILLMATCH_HUB_DATASET = "TechWolf/SkillMatch-1K"
#: Local copy of SkillMatch-1K: one of these files (hub split "test") under ``<data_dir>/``.
SKILLMATCH_LOCAL_DIR = "workbench/skillsim"
SKILLMATCH_LOCAL_FILES = ("test.parquet", "test.csv")
SKILLMATCH_COLUMNS = ("skill_a", "skill_b", "related")


# ----------------------------------------------------------------------------------------------------
# Small pure helpers
# ----------------------------------------------------------------------------------------------------


def _check_split(task: str, split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"{task}: unknown split '{split}'; expected one of {SPLITS}")


def target_index(texts: Iterable[str]) -> tuple[list[str], dict[str, int]]:
    """Sorted unique stripped texts and their positions: workrb's vocabulary convention.

    >>> target_index([" b", "a", "b"])
    (['a', 'b'], {'a': 0, 'b': 1})
    """
    targets = sorted({str(t).strip() for t in texts})
    return targets, {t: i for i, t in enumerate(targets)}


def merge_duplicate_queries(
    queries: Sequence[str], labels: Sequence[Iterable[int]]
) -> tuple[list[str], list[list[int]]]:
    """One query per distinct text (first-appearance order), positives = union, sorted.

    >>> merge_duplicate_queries(["a", "b", "a"], [[2], [1], [0, 2]])
    (['a', 'b'], [[0, 2], [1]])
    """
    merged: dict[str, set[int]] = {}
    for query, row in zip(queries, labels, strict=True):
        merged.setdefault(query, set()).update(row)
    return list(merged), [sorted(row) for row in merged.values()]


def group_in_order(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """key -> values in first-appearance order, without repeats.

    >>> group_in_order([("x", "1"), ("y", "2"), ("x", "1"), ("x", "3")])
    {'x': ['1', '3'], 'y': ['2']}
    """
    grouped: dict[str, dict[str, None]] = {}
    for key, value in pairs:
        grouped.setdefault(key, {})[value] = None
    return {key: list(values) for key, values in grouped.items()}


def shuffle_split(n: int, test_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(val, test) row indices of a seeded shuffle split, identical to scikit-learn's
    ``train_test_split(range(n), test_size=test_fraction, random_state=seed)`` (workrb's SkillSim split):
    ``ceil(test_fraction * n)`` test rows first in one ``RandomState(seed).permutation(n)``, the rest val.

    >>> shuffle_split(10, 0.9, 42)
    ([6], [8, 1, 5, 0, 7, 2, 9, 4, 3])
    """
    n_test = math.ceil(test_fraction * n)
    permutation = np.random.RandomState(seed).permutation(n).tolist()
    return permutation[n_test:], permutation[:n_test]


def class_uniform_split(
    alt_to_skills: dict[str, list[int]],
) -> tuple[tuple[list[str], list[list[int]]], tuple[list[str], list[list[int]]]]:
    """SkillNorm's split: walking the altLabels in order, one goes to validation when one of its skills
    has no validation altLabel yet, otherwise to test (workrb counts every earlier altLabel of a skill;
    the first altLabel of a skill always goes to val, so both readings agree).
    Returns ((val queries, labels), (test queries, labels)).

    >>> class_uniform_split({"a": [0], "b": [0], "c": [0, 1], "d": [1]})
    ((['a', 'c'], [[0], [0, 1]]), (['b', 'd'], [[0], [1]]))
    """
    seen: set[int] = set()
    val: tuple[list[str], list[list[int]]] = ([], [])
    test: tuple[list[str], list[list[int]]] = ([], [])
    for alt, skills in alt_to_skills.items():
        if not skills:
            continue
        side = val if any(s not in seen for s in skills) else test
        side[0].append(alt)
        side[1].append(sorted(skills))
        seen.update(skills)
    return val, test


def _size_note(task: str, split: str, n_queries: int, n_targets: int) -> str:
    paper = PAPER_SIZES.get((task, split))
    here = f"{n_queries:,} queries x {n_targets:,} targets"
    if paper is None:
        return here
    same = paper == (n_queries, n_targets)
    return f"{here}; paper Table 1: {paper[0]:,} x {paper[1]:,}" + (" (same)" if same else "")


def _dataset(
    task: str,
    split: str,
    queries: list[str],
    targets: list[str],
    labels: list[list[int]],
    notes: Sequence[str],
    exclude: list[list[int]] | None = None,
    **meta,
) -> RankingDataset:
    """A RankingDataset whose meta says how it compares with the paper and why."""
    if not targets:
        raise DataError(f"{task}/{split}: empty target space (are the ESCO files empty?)")
    paper = PAPER_SIZES.get((task, split), (None, None))
    meta = {
        "paper_n_queries": paper[0],
        "paper_n_targets": paper[1],
        **meta,
        "notes": [_size_note(task, split, len(queries), len(targets)), *notes],
    }
    return RankingDataset(task, split, queries, targets, labels, exclude=exclude, meta=meta)


# ----------------------------------------------------------------------------------------------------
# Shared readers
# ----------------------------------------------------------------------------------------------------


def _relation_label_pairs(
    data_dir: str | os.PathLike | None, version: str
) -> tuple[list[tuple[str, str]], int]:
    """(occupation label, skill label) for every ESCO relation, essential and optional, in file order;
    plus how many relations were dropped because a URI has no label (workrb drops them too)."""
    occupations = load_occupations(data_dir, version)
    skills = load_skills(data_dir, version)
    relations = load_occupation_skill_relations(data_dir, version)
    occupation_label = dict(zip(occupations["uri"], occupations["label"], strict=True))
    skill_label = dict(zip(skills["uri"], skills["label"], strict=True))
    pairs = []
    for occupation_uri, skill_uri in zip(relations["occupation_uri"], relations["skill_uri"], strict=True):
        occupation, skill = occupation_label.get(occupation_uri), skill_label.get(skill_uri)
        if occupation is not None and skill is not None:
            pairs.append((occupation, skill))
    return pairs, len(relations) - len(pairs)


def _as_text_list(cell, path: Path, row: int) -> list[str]:
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return []
    if isinstance(cell, str) or not hasattr(cell, "__iter__"):
        raise DataError(
            f"{path}: row {row} (1-based): skill_name must be a list of skill labels, got {cell!r}"
        )
    return [str(s).strip() for s in cell]


def _vacancy_title_skills(
    data_dir: str | os.PathLike | None, known_skills: dict[str, int]
) -> tuple[list[tuple[str, list[str]]], int]:
    """(stripped title, its skills in the target space) per row of job_skill_val.parquet, in file order,
    and the number of skill mentions outside the target space (dropped)."""
    path = data_file(data_dir, JOB2SKILL_VAL_FILE)
    frame = read_parquet_checked(path, ["title", "skill_name"])
    rows, n_unknown = [], 0
    for row, (title, cell) in enumerate(zip(frame["title"], frame["skill_name"], strict=True), start=1):
        if not isinstance(title, str) or not title.strip():
            raise DataError(f"{path}: row {row} (1-based): empty or missing title")
        skills = _as_text_list(cell, path, row)
        kept = [s for s in skills if s in known_skills]
        n_unknown += len(skills) - len(kept)
        rows.append((title.strip(), kept))
    return rows, n_unknown


_STRIPPED_SKILL_MATCH_NOTE = (
    "Skill names are matched to ESCO v1.2.0 labels on stripped text. workrb 0.6.0 matches raw text and, "
    "because 4 preferredLabels of the pack's file end in a space that the parquet lacks, would lose 4 "
    "skills (Skill2Job val 10,133 instead of the paper's 10,137) and positives of 315 Job2Skill val titles."
)


def _v120_skill_targets(data_dir: str | os.PathLike | None) -> tuple[list[str], dict[str, int]]:
    return target_index(load_skills(data_dir, "v1.2.0")["label"])


# ----------------------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------------------


@register_task
class Job2Skill(Task):
    """Job title -> its ESCO v1.2.0 skills, ranked against all 13,939 v1.2.0 skills (multi-label).

    test: each ESCO v1.2.0 occupation (preferredLabel) with all its related skills, essential AND optional
    (3,039 x 13,939 = paper). val: the 5,644 vacancy titles of ``job_skill_val.parquet`` (workrb's first
    commit) with their tagged skills (5,644 x 13,939 = paper); skill names are matched to v1.2.0 labels
    on stripped text (workrb 0.6.0 matches raw text and loses 4 skills on this pack; ``meta["notes"]``).
    Occupations and titles with identical stripped text are merged (none in the real pack).
    """

    name = "Job2Skill"
    group = "Job2Skill"
    description = "job title -> ESCO v1.2.0 skills it requires"

    def load(self, split: str, data_dir: str | Path | None = None) -> RankingDataset:
        _check_split(self.name, split)
        targets, index = _v120_skill_targets(data_dir)
        if split == "test":
            pairs, n_dropped = _relation_label_pairs(data_dir, "v1.2.0")
            grouped = group_in_order(pairs)
            queries = list(grouped)
            labels = [sorted(index[s] for s in skills) for skills in grouped.values()]
            return _dataset(
                self.name,
                split,
                queries,
                targets,
                labels,
                notes=["ESCO v1.2.0 occupation preferredLabels; essential + optional relations."],
                esco_version="v1.2.0",
                sources=[RELATION_FILES["v1.2.0"]],
                n_relations_without_label=n_dropped,
            )
        rows, n_unknown = _vacancy_title_skills(data_dir, index)
        raw_queries = [title for title, _ in rows]
        queries, labels = merge_duplicate_queries(
            raw_queries, [[index[s] for s in skills] for _, skills in rows]
        )
        return _dataset(
            self.name,
            split,
            queries,
            targets,
            labels,
            notes=[
                "Vacancy titles of workrb's first-commit job_skill_val.parquet; later workrb versions read "
                "the hub dataset TechWolf/vacancy-job-to-skill instead (not verified to be identical).",
                _STRIPPED_SKILL_MATCH_NOTE,
            ],
            esco_version="v1.2.0",
            sources=[JOB2SKILL_VAL_FILE],
            n_skill_mentions_outside_targets=n_unknown,
            n_merged_duplicate_queries=len(raw_queries) - len(queries),
            n_queries_without_positives=sum(not row for row in labels),
        )


@register_task
class Skill2Job(Task):
    """ESCO v1.2.0 skill -> the job titles requiring it (inverted Job2Skill, multi-label).

    test: every v1.2.0 skill with at least one relation -> ESCO v1.2.0 occupations (13,492 x 3,039 =
    paper). val: every skill of ``job_skill_val.parquet`` -> the vacancy titles tagged with it; the target
    space is all 5,644 distinct titles (10,137 x 5,644 = paper; workrb 0.6.0 gets 10,133 on this pack
    because it matches skill names on raw text, see :class:`Job2Skill`).
    """

    name = "Skill2Job"
    group = "Skill2Job"
    description = "ESCO v1.2.0 skill -> job titles requiring it"

    def load(self, split: str, data_dir: str | Path | None = None) -> RankingDataset:
        _check_split(self.name, split)
        if split == "test":
            targets, index = target_index(load_occupations(data_dir, "v1.2.0")["label"])
            pairs, n_dropped = _relation_label_pairs(data_dir, "v1.2.0")
            grouped = group_in_order((skill, occupation) for occupation, skill in pairs)
            labels = [sorted(index[o] for o in occupations) for occupations in grouped.values()]
            return _dataset(
                self.name,
                split,
                list(grouped),
                targets,
                labels,
                notes=["Skills with at least one ESCO v1.2.0 relation (essential + optional)."],
                esco_version="v1.2.0",
                sources=[RELATION_FILES["v1.2.0"]],
                n_relations_without_label=n_dropped,
            )
        _, skill_index = _v120_skill_targets(data_dir)
        rows, n_unknown = _vacancy_title_skills(data_dir, skill_index)
        targets, index = target_index(title for title, _ in rows)
        grouped = group_in_order((skill, title) for title, skills in rows for skill in skills)
        labels = [sorted(index[t] for t in titles) for titles in grouped.values()]
        return _dataset(
            self.name,
            split,
            list(grouped),
            targets,
            labels,
            notes=[
                "Inverted job_skill_val.parquet: target space = its distinct vacancy titles.",
                _STRIPPED_SKILL_MATCH_NOTE,
            ],
            esco_version="v1.2.0",
            sources=[JOB2SKILL_VAL_FILE],
            n_skill_mentions_outside_targets=n_unknown,
        )


def skillnorm_alt_to_skills(skills: pd.DataFrame, index: dict[str, int]) -> dict[str, list[int]]:
    """altLabel -> its skills' target indices, in skill FILE order then altLabel order.

    As workrb: an altLabel equal to its skill's preferredLabel (after stripping) is dropped, and so is a
    one-character altLabel (none in the pack); an altLabel string shared by several skills becomes one
    multi-label query, placed where it first appears.
    """
    alt_to_skills: dict[str, list[int]] = {}
    for label, alts in zip(skills["label"], skills["alt_labels"], strict=True):
        skill = index[label]
        for alt in alts:
            # README over workrb: compare stripped texts (workrb compares with the raw preferredLabel).
            if len(alt) <= 1 or alt == label:
                continue
            members = alt_to_skills.setdefault(alt, [])
            if skill not in members:
                members.append(skill)
    return alt_to_skills


@register_task
class SkillNorm(Task):
    """ESCO v1.2.0 altLabel -> its skill(s) among all 13,939 v1.2.0 skills.

    Class-uniform split (workrb ``class_uniform_split``): walking the skills in FILE order and their
    altLabels in order, an altLabel goes to validation when one of its skills has no validation altLabel
    yet, else to test. This pack gives 13,502 / 72,006 queries (as its README says) against the paper's
    13,222 / 73,311 (see ``meta["notes"]``): (1) the pack's skills file is sorted by URI, not in ESCO's
    original row order, which moves altLabels between val and test; (2) the paper's total, 86,533, equals
    the number of non-empty altLabel entries of the pack's file, whereas dropping the 515 altLabels equal
    to their preferredLabel and merging 510 identical strings of several skills (README, workrb) leaves
    85,508 distinct queries; the pack cannot tell how the published total arose.
    Unlike workrb 0.6.0, the altLabel/preferredLabel comparison is on stripped text: workrb compares with
    the raw preferredLabel, so on this pack it keeps 2 altLabels ("supervise coffee roasting", "weld
    mining machinery") that equal a preferredLabel carrying a trailing space (13,502 / 72,008 there).
    """

    name = "SkillNorm"
    group = "SkillNorm"
    description = "ESCO altLabel -> its ESCO v1.2.0 skill"

    def load(self, split: str, data_dir: str | Path | None = None) -> RankingDataset:
        _check_split(self.name, split)
        skills = load_skills(data_dir, "v1.2.0")
        targets, index = target_index(skills["label"])
        alt_to_skills = skillnorm_alt_to_skills(skills, index)
        val, test = class_uniform_split(alt_to_skills)
        queries, labels = val if split == "val" else test
        n_alt_entries = int(skills["alt_labels"].map(len).sum())
        return _dataset(
            self.name,
            split,
            queries,
            targets,
            labels,
            notes=[
                "The class-uniform split walks skills in file order; this pack's skills file is sorted by "
                "URI, not ESCO's original order, which moves altLabels between val and test (README: "
                "zero-shot MAP moves by about 0.3).",
                f"Queries are distinct altLabel strings: {len(alt_to_skills):,} in val + test, from "
                f"{n_alt_entries:,} non-empty altLabel entries after dropping altLabels equal to their "
                "preferredLabel and merging identical strings of several skills (README, workrb). The "
                "paper's 13,222 + 73,311 = 86,533 equals the raw entry count of the pack's v1.2.0 file.",
                "AltLabel == preferredLabel is tested on stripped text (workrb 0.6.0 compares with the raw "
                "label and keeps 2 such altLabels on this pack: 72,008 test queries there).",
            ],
            esco_version="v1.2.0",
            sources=[SKILL_FILES["v1.2.0"]],
            n_alt_label_entries=n_alt_entries,
            n_distinct_alt_labels=len(alt_to_skills),
            n_multi_skill_queries=sum(len(row) > 1 for row in labels),
        )


class _SkillExtract(Task):
    """SkillSpan sentences -> the ESCO v1.1.0 skills annotated in them, among all 13,891 v1.1.0 skills.

    One row per annotated span; the labels of a (stripped) sentence are grouped into one multi-label
    query; labels ``LABEL NOT PRESENT`` / ``UNDERSPECIFIED`` and any label that is no v1.1.0
    preferredLabel are dropped, and a sentence left without labels is no query.
    """

    group = "SkillExtract"
    subset = ""

    def source(self, split: str) -> str:
        return SKILL_EXTRACTION_FILE.format(
            subset=self.subset, split="validation" if split == "val" else "test"
        )

    def load(self, split: str, data_dir: str | Path | None = None) -> RankingDataset:
        _check_split(self.name, split)
        targets, index = target_index(load_skills(data_dir, "v1.1.0")["label"])
        relpath = self.source(split)
        spans = read_csv_checked(
            data_file(data_dir, relpath), ["sentence", "label"], non_empty=["sentence", "label"]
        )
        sentences = spans["sentence"].str.strip()
        span_labels = spans["label"].str.strip()
        is_sentinel = span_labels.isin(NOT_A_SKILL)
        in_targets = span_labels.isin(index)
        grouped = group_in_order(
            (sentence, label)
            for sentence, label, ok in zip(sentences, span_labels, in_targets, strict=True)
            if ok
        )
        queries = list(grouped)
        labels = [sorted(index[s] for s in skills) for skills in grouped.values()]
        return _dataset(
            self.name,
            split,
            queries,
            targets,
            labels,
            notes=["Sentences with at least one real ESCO v1.1.0 label (SkillSpan + Decorte et al. 2022)."],
            esco_version="v1.1.0",
            sources=[relpath, SKILL_FILES["v1.1.0"]],
            n_sentences=int(sentences.nunique()),
            n_sentinel_label_rows=int(is_sentinel.sum()),
            n_label_rows_outside_targets=int((~is_sentinel & ~in_targets).sum()),
        )


@register_task
class SkillExtrH(_SkillExtract):
    """SkillSpan HOUSE sentences -> ESCO v1.1.0 skills (rules: the base class).

    Real pack: 61 / 262 x 13,891 = paper.
    """

    name = "SkillExtr-H"
    subset = "house"
    description = "HOUSE vacancy sentence -> ESCO v1.1.0 skills it mentions"


@register_task
class SkillExtrT(_SkillExtract):
    """SkillSpan TECH sentences -> ESCO v1.1.0 skills (rules: the base class).

    Real pack: 75 / 338 x 13,891 = paper.
    """

    name = "SkillExtr-T"
    subset = "tech"
    description = "TECH vacancy sentence -> ESCO v1.1.0 skills it mentions"


def _related_flags(values: pd.Series, source: str) -> list[bool]:
    """SkillMatch ``related`` column (0/1, bool or their strings) as booleans."""
    flags = []
    for row, value in enumerate(values, start=1):
        text = str(value).strip().lower()
        if text in ("1", "1.0", "true"):
            flags.append(True)
        elif text in ("0", "0.0", "false"):
            flags.append(False)
        else:
            raise DataError(f"{source}: row {row} (1-based): field 'related' must be 0/1, got {value!r}")
    return flags


def read_skillmatch_local(data_dir: str | os.PathLike | None) -> tuple[pd.DataFrame, str] | None:
    """The local SkillMatch-1K copy (``<data_dir>/workbench/skillsim/test.parquet`` or ``test.csv``,
    columns skill_a, skill_b, related) and its path, or None when there is none."""
    directory = resolve_data_dir(data_dir) / SKILLMATCH_LOCAL_DIR
    for name in SKILLMATCH_LOCAL_FILES:
        path = directory / name
        if path.is_file():
            if path.suffix == ".parquet":
                return read_parquet_checked(path, SKILLMATCH_COLUMNS), str(path)
            return read_csv_checked(path, SKILLMATCH_COLUMNS, non_empty=SKILLMATCH_COLUMNS), str(path)
    return None


def read_skillmatch_hub(dataset: str = SKILLMATCH_HUB_DATASET, cache_dir: str | None = None) -> pd.DataFrame:
    """Split "test" of SkillMatch-1K through ``datasets.load_dataset`` (a hub name or a local folder in
    the hub layout); failures become :class:`TaskUnavailable`."""
    try:
        from datasets import load_dataset

        frame = load_dataset(dataset, split="test", cache_dir=cache_dir).to_pandas()
    except Exception as err:  # network, auth, missing dataset: all mean "not available here"
        raise TaskUnavailable(
            f"SkillSim: could not load '{dataset}' with datasets.load_dataset: {err}"
        ) from err
    missing = [c for c in SKILLMATCH_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{dataset}: missing column(s) {missing}; it has {list(frame.columns)}")
    return frame


def _hub_allowed_by_env() -> bool:
    return os.environ.get("UWE_ALLOW_HUB", "").strip().lower() in ("1", "true", "yes")


@register_task
class SkillSim(Task):
    """SkillMatch-1K skill -> its related skill (one positive per related pair).

    Target space: all distinct skills of all pairs, related or not (2,648); the query itself is
    excluded from its own ranking through ``RankingDataset.exclude`` (paper; workrb 0.6.0 does not
    exclude it). The related pairs are split 10/90 into val/test with workrb's seeded split (scikit-learn
    ``train_test_split``, seed 42), reproduced by :func:`shuffle_split`: 100 / 900 queries. Each related
    pair is its own query, also when a skill has several partners (the paper's counts are pair counts).

    The data is not in the pack. Sources, in order: ``<data_dir>/workbench/skillsim/test.parquet`` or
    ``test.csv`` (columns ``skill_a, skill_b, related``: the hub dataset's "test" split); else, only when
    allowed (``allow_hub=True`` or env ``UWE_ALLOW_HUB=1``), ``datasets.load_dataset(hub_dataset)``;
    else :class:`TaskUnavailable`.
    """

    name = "SkillSim"
    group = "SkillSim"
    description = "skill -> related skills (SkillMatch-1K)"

    def __init__(
        self,
        allow_hub: bool | None = None,
        hub_dataset: str = SKILLMATCH_HUB_DATASET,
        hub_cache_dir: str | None = None,
        seed: int = 42,
        test_fraction: float = 0.9,
    ) -> None:
        self.allow_hub = _hub_allowed_by_env() if allow_hub is None else allow_hub
        self.hub_dataset = hub_dataset
        self.hub_cache_dir = hub_cache_dir
        self.seed = seed
        self.test_fraction = test_fraction

    def read_pairs(self, data_dir: str | Path | None) -> tuple[pd.DataFrame, str]:
        """The SkillMatch-1K rows and where they came from."""
        local = read_skillmatch_local(data_dir)
        if local is not None:
            return local
        if self.allow_hub:
            return read_skillmatch_hub(self.hub_dataset, self.hub_cache_dir), f"datasets:{self.hub_dataset}"
        where = resolve_data_dir(data_dir) / SKILLMATCH_LOCAL_DIR
        raise TaskUnavailable(
            f"SkillSim needs SkillMatch-1K, which is not in the data pack: put "
            f"{' or '.join(SKILLMATCH_LOCAL_FILES)} (columns {', '.join(SKILLMATCH_COLUMNS)}; "
            "the 'test' split "
            f"of hub dataset {SKILLMATCH_HUB_DATASET}) into {where}, or set UWE_ALLOW_HUB=1 to load it "
            "with datasets.load_dataset."
        )

    def load(self, split: str, data_dir: str | Path | None = None) -> RankingDataset:
        _check_split(self.name, split)
        frame, source = self.read_pairs(data_dir)
        skill_a = frame["skill_a"].astype(str).str.strip().tolist()
        skill_b = frame["skill_b"].astype(str).str.strip().tolist()
        targets, index = target_index(skill_a + skill_b)
        related = _related_flags(frame["related"], source)
        pairs = [(a, b) for a, b, r in zip(skill_a, skill_b, related, strict=True) if r]
        val_rows, test_rows = shuffle_split(len(pairs), self.test_fraction, self.seed)
        rows = val_rows if split == "val" else test_rows
        queries = [pairs[i][0] for i in rows]
        labels = [[index[pairs[i][1]]] for i in rows]
        # Paper over workrb: workrb does not exclude the query from its own ranking; the paper does.
        exclude = [[index[q]] for q in queries]
        return _dataset(
            self.name,
            split,
            queries,
            targets,
            labels,
            exclude=exclude,
            notes=["SkillMatch-1K is not in the pack; sizes match the paper only with the original data."],
            source=source,
            n_pairs=len(frame),
            n_related_pairs=len(pairs),
            seed=self.seed,
        )


@register_task
class JobNorm(Task):
    """Vacancy title -> its ESCO occupation, among the 2,942 ESCO v1.0.x occupations (single label).

    JobBERT evaluation dataset: ``titles.csv`` (val) and ``titles.test.csv`` (test), 15,463 rows each;
    every row is its own query (README: duplicate titles are NOT merged, unlike workrb 0.6.0, which
    merges them by default; the paper-era workrb kept them). The paper reports 15,462 / 15,461: exactly
    1 val row and 2 test rows point at occupations that no longer exist in ESCO v1.2.0 (val row 15322
    "Radiation Therapy Technologist #MAT" -> therapeutic radiographer; test rows 15460 "meat & Vegetables
    Executives" -> fruit and vegetable preserver and 15462 "Engineer Officer (Landing Craft)" -> wind
    energy engineer), so the published copy most likely dropped retired occupations. ``drop_retired_uris``
    reproduces that; by default all rows are kept (README).
    """

    name = "JobNorm"
    group = "JobNorm"
    description = "vacancy title -> ESCO v1.0.x occupation"

    def __init__(self, drop_retired_uris: bool = False) -> None:
        self.drop_retired_uris = drop_retired_uris

    def load(self, split: str, data_dir: str | Path | None = None) -> RankingDataset:
        _check_split(self.name, split)
        occupations = load_occupations(data_dir, "v1.0.x")
        targets, index = target_index(occupations["label"])
        uri_to_target = {
            uri: index[label] for uri, label in zip(occupations["uri"], occupations["label"], strict=True)
        }
        path = data_file(data_dir, JOBNORM_FILES[split])
        rows = read_csv_checked(
            path, ["vacancyTitle", "conceptUri"], non_empty=["vacancyTitle", "conceptUri"]
        )
        uris = rows["conceptUri"].str.strip()
        unknown = ~uris.isin(uri_to_target)
        if unknown.any():
            row = int(unknown.to_numpy().argmax()) + 1
            raise DataError(
                f"{path}: row {row} (1-based): conceptUri {uris.iloc[row - 1]} is not an occupation of "
                f"{data_file(data_dir, 'esco/v1.0.x/occupations_en.csv')}"
            )
        # README over workrb 0.6.0 (whose RankingDataset merges duplicate queries by default): every row
        # is its own query, as in the paper-era workrb.
        keep = np.ones(len(rows), dtype=bool)
        if self.drop_retired_uris:
            keep = uris.isin(set(load_occupations(data_dir, "v1.2.0")["uri"])).to_numpy()
        queries = rows["vacancyTitle"].str.strip()[keep].tolist()
        labels = [[uri_to_target[u]] for u in uris[keep]]
        return _dataset(
            self.name,
            split,
            queries,
            targets,
            labels,
            notes=[
                "Every row is its own query (duplicate titles not merged, README).",
                "Paper 15,462 / 15,461: 1 val and 2 test rows point at occupations absent from ESCO v1.2.0; "
                "JobNorm(drop_retired_uris=True) drops them and reproduces the paper's counts.",
            ],
            esco_version="v1.0.x",
            sources=[JOBNORM_FILES[split]],
            n_rows=len(rows),
            n_dropped_retired=int((~keep).sum()),
            n_duplicate_titles=len(queries) - len(set(queries)),
        )
