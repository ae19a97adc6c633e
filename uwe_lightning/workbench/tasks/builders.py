"""Pure helpers every WorkBench task is built with, so that all tasks follow one set of conventions.

Conventions shared by all tasks (data pack README "Known conventions"; workrb 0.6.0 ``RankingDataset``):

* every text (query and target) is whitespace-stripped, and labels are matched on stripped text;
* a target space is the sorted set of its (stripped) texts, as workrb's ``get_*_vocabulary``;
* the positives of a query are sorted, without repeats;
* duplicate queries are merged into one multi-label query, except in JobNorm and SkillSim where every
  row is its own query (README for JobNorm; the paper's 100/900 SkillSim queries are pair counts);
* a label outside the target space is dropped (counted in ``meta``), as workrb does.

``RankingDataset.meta`` carries ``paper_n_queries``/``paper_n_targets`` (paper Table 1), per-task counts
of what was dropped or merged, and ``notes``: why this pack's counts differ from the paper, if they do.
Missing or malformed pack files raise :class:`~uwe_lightning.io.DataError` naming the file; only
SkillSim, whose data is not in the pack, raises :class:`~uwe_lightning.workbench.dataset.TaskUnavailable`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from uwe_lightning.io import DataError
from uwe_lightning.workbench.dataset import SPLITS, RankingDataset

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


def check_split(task: str, split: str) -> None:
    """Fail early on a split name WorkBench does not have, before any file is read."""
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


def label_rows(rows: Iterable[Iterable[str]], index: Mapping[str, int]) -> list[list[int]]:
    """Each row of target texts as its positives: the sorted distinct target indices.

    >>> label_rows([["b", "a", "b"], ["a"]], {"a": 0, "b": 1})
    [[0, 1], [0]]
    """
    return [sorted({index[text] for text in row}) for row in rows]


def multi_label_queries(
    pairs: Iterable[tuple[str, str]], index: Mapping[str, int]
) -> tuple[list[str], list[list[int]]]:
    """(query, target text) pairs as one query per distinct query (first-appearance order) with its positives.

    >>> multi_label_queries([("chef", "cook"), ("nurse", "care"), ("chef", "plan")], {"care": 0, "cook": 1, "plan": 2})
    (['chef', 'nurse'], [[1, 2], [0]])
    """
    grouped = group_in_order(pairs)
    return list(grouped), label_rows(grouped.values(), index)


def stable_unit(key: str, salt: str) -> float:
    """A number in [0, 1) fixed by (salt, key) on every machine and run (SHA-256, not Python's ``hash``): the
    open protocol's splits and the O*NET tasks' val/test rule.

    >>> round(stable_unit("data engineer", "uwe-open/J"), 6) == round(stable_unit("data engineer", "uwe-open/J"), 6)
    True
    >>> 0.0 <= stable_unit("x", "salt") < 1.0
    True
    """
    digest = hashlib.sha256(f"{salt}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def hash_split_side(key: str, salt: str, val_fraction: float, test_fraction: float) -> str | None:
    """``"val"`` when ``stable_unit(key, salt) < val_fraction``, ``"test"`` when it is below
    ``val_fraction + test_fraction``, else None (left unused, so that a test split can be sized for CPU runs).

    >>> [hash_split_side(k, "s", 0.5, 0.5) in ("val", "test") for k in "abc"]
    [True, True, True]
    >>> hash_split_side("a", "s", 0.0, 0.0) is None
    True
    """
    unit = stable_unit(key, salt)
    if unit < val_fraction:
        return "val"
    return "test" if unit < val_fraction + test_fraction else None


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


def size_note(task: str, split: str, n_queries: int, n_targets: int) -> str:
    """This split's size beside the paper's, so a reader sees at once whether they agree.

    >>> size_note("SkillExtr-H", "val", 61, 13_891)
    '61 queries x 13,891 targets; paper Table 1: 61 x 13,891 (same)'
    """
    paper = PAPER_SIZES.get((task, split))
    here = f"{n_queries:,} queries x {n_targets:,} targets"
    if paper is None:
        return here
    same = paper == (n_queries, n_targets)
    return f"{here}; paper Table 1: {paper[0]:,} x {paper[1]:,}" + (" (same)" if same else "")


def make_dataset(
    task: str,
    split: str,
    queries: list[str],
    targets: list[str],
    labels: list[list[int]],
    notes: Sequence[str],
    exclude: list[list[int]] | None = None,
    **meta: Any,
) -> RankingDataset:
    """A RankingDataset whose meta says how it compares with the paper and why."""
    if not targets:
        raise DataError(f"{task}/{split}: empty target space (are the ESCO files empty?)")
    paper = PAPER_SIZES.get((task, split), (None, None))
    meta = {
        "paper_n_queries": paper[0],
        "paper_n_targets": paper[1],
        **meta,
        "notes": [size_note(task, split, len(queries), len(targets)), *notes],
    }
    return RankingDataset(task, split, queries, targets, labels, exclude=exclude, meta=meta)
