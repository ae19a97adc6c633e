"""WorkBench as ``datasets`` tables: each task split as a ``DatasetDict`` (Arrow, memory-mapped), and reading them back.

One directory per split, ``<out>/<task>/<split>/``, written by ``DatasetDict.save_to_disk`` with two tables:

- ``queries``: ``query_id`` (row number), ``text``, ``positives`` (the target ids of its positives: the qrels, one
  row per query), ``excluded`` (target ids removed from its ranking, e.g. SkillSim's query itself);
- ``targets``: ``target_id`` (row number), ``text``: the split's target space, in the order the ids refer to.

``<out>/workbench-datasets.json`` indexes the splits (sizes, the task options they were built with, the task's
meta) and records each unavailable task with its reason, never as an empty table. Anyone reads a split with
``datasets.load_from_disk("<out>/JobNorm/test")`` (and may ``push_to_hub`` it); uwe_lightning reads the whole
directory as a data directory: ``evaluate paths.data_dir=<out>`` scores the published splits and gives the numbers
of the data pack it was built from (:func:`load_published_split`, called by the runner's ``load_tasks``).
:func:`~uwe_lightning.workbench.publish.publish_workbench` (``python -m uwe_lightning.publish``) writes them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from uwe_lightning.io import DataError
from uwe_lightning.paths import PUBLISHED_INDEX_FILE
from uwe_lightning.workbench.dataset import RankingDataset, TaskUnavailable

PUBLISHED_FORMAT = "uwe-workbench-datasets"
PUBLISHED_VERSION = 1


def _features() -> tuple[Any, Any]:
    import datasets
    from datasets import Features, Value

    ids = (datasets.List if hasattr(datasets, "List") else datasets.Sequence)(Value("int64"))  # List: datasets >= 4
    queries = Features({"query_id": Value("int64"), "text": Value("string"), "positives": ids, "excluded": ids})
    return queries, Features({"target_id": Value("int64"), "text": Value("string")})


def to_dataset_dict(dataset: RankingDataset) -> Any:
    """One split as a ``DatasetDict`` with tables ``queries`` and ``targets`` (module docstring)."""
    from datasets import Dataset, DatasetDict

    query_features, target_features = _features()
    n = dataset.n_queries
    queries = Dataset.from_dict({"query_id": list(range(n)), "text": dataset.queries, "positives": dataset.labels,
                                 "excluded": dataset.exclude if dataset.exclude is not None else [[]] * n},
                                features=query_features)
    targets = Dataset.from_dict({"target_id": list(range(dataset.n_targets)), "text": dataset.targets},
                                features=target_features)
    return DatasetDict({"queries": queries, "targets": targets})


def _columns(table: Any, names: Sequence[str]) -> list[list]:
    arrow = table.with_format("arrow")[:]  # honours an indices mapping (a filtered or shuffled table)
    return [arrow.column(name).to_pylist() for name in names]


def from_dataset_dict(tables: Any, task: str, split: str, has_exclude: bool = True,
                      meta: Mapping[str, Any] | None = None) -> RankingDataset:
    """The :class:`RankingDataset` of a ``DatasetDict`` written by :func:`to_dataset_dict`; ids must be row numbers."""
    missing = [name for name in ("queries", "targets") if name not in tables]
    if missing:
        raise DataError(f"{task}/{split}: the DatasetDict has no table(s) {missing} (it has {sorted(tables)})")
    query_ids, queries, labels, exclude = _columns(tables["queries"], ("query_id", "text", "positives", "excluded"))
    target_ids, targets = _columns(tables["targets"], ("target_id", "text"))
    for what, ids in (("query_id", query_ids), ("target_id", target_ids)):
        if ids != list(range(len(ids))):
            raise DataError(f"{task}/{split}: column {what} must be the row numbers 0..n-1 in order (positives "
                            "refer to targets by it); do not shuffle or filter a published split")
    return RankingDataset(task=task, split=split, queries=queries, targets=targets, labels=labels,
                          exclude=exclude if has_exclude else None, meta=dict(meta or {}))


def read_index(root: Path) -> dict[str, Any]:
    path = root / PUBLISHED_INDEX_FILE
    try:
        index = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: unreadable ({err}); publish the tasks again") from err
    if index.get("format") != PUBLISHED_FORMAT or index.get("version") != PUBLISHED_VERSION:
        raise DataError(f"{path}: not a {PUBLISHED_FORMAT} v{PUBLISHED_VERSION} index (found "
                        f"{index.get('format')!r} v{index.get('version')!r}); publish the tasks again")
    return index


def load_published_split(root: str | os.PathLike, task: str, split: str,
                         options: Mapping[str, Any] | None = None) -> RankingDataset:
    """The split ``task``/``split`` of a published directory; :class:`TaskUnavailable` when it was unavailable
    or not published, :class:`DataError` when ``options`` differ from those it was built with."""
    from datasets import load_from_disk

    root = Path(root)
    entry = read_index(root).get("splits", {}).get(f"{task}/{split}")
    if entry is None:
        raise TaskUnavailable(f"{task}/{split} is not published in {root}; publish it with tasks including {task}")
    if "unavailable" in entry:
        raise TaskUnavailable(entry["unavailable"])
    asked = dict(options or {})
    if any(entry.get("options", {}).get(k) != v for k, v in asked.items()):
        raise DataError(f"{root}: {task}/{split} was published with options {entry.get('options', {})}, the run "
                        f"asks for {asked}; publish it with the run's options")
    tables = load_from_disk(str(root / entry["path"]))
    return from_dataset_dict(tables, task, split, entry["exclude"], {**entry["meta"], "published_from": str(root)})
