"""WorkBench splits as compact files: what an offline bundle ships instead of the raw data pack.

A derived data directory (``paths.DERIVED_INDEX_FILE`` at its root, written by :mod:`uwe_lightning.offline`)
holds every split a run evaluates as one gzipped JSON file (queries, targets, labels, exclusions, meta) and,
for the tasks whose data was absent when it was built, the reason. :func:`load_derived_split` is what
:func:`~uwe_lightning.workbench.runner.load_tasks` reads there, so validation and test need no raw pack.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from uwe_lightning.io import DataError, atomic_write_bytes, strict_json
from uwe_lightning.paths import DERIVED_INDEX_FILE
from uwe_lightning.workbench.dataset import RankingDataset, TaskUnavailable

DERIVED_FORMAT = "uwe-derived"
DERIVED_VERSION = 1
TASKS_DIR = "workbench"


def write_gz_json(path: Path, data: Any) -> int:
    """Write ``data`` as gzipped compact JSON (mtime 0, so equal data gives equal bytes); returns the size."""
    raw = strict_json(data, ensure_ascii=False, separators=(",", ":")).encode()
    payload = gzip.compress(raw, compresslevel=9, mtime=0)
    atomic_write_bytes(path, payload)
    return len(payload)


def read_gz_json(path: Path) -> Any:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, EOFError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: unreadable derived data file ({err}); unpack the bundle again") from err


def split_file(task: str, split: str) -> str:
    """Relative path of one split inside a derived directory (task names may hold ``@``, never ``/``)."""
    return f"{TASKS_DIR}/{task}.{split}.json.gz"


def dataset_record(dataset: RankingDataset) -> dict[str, Any]:
    return {"task": dataset.task, "split": dataset.split, "queries": dataset.queries, "targets": dataset.targets,
            "labels": dataset.labels, "exclude": dataset.exclude, "meta": dataset.meta}


def read_index(root: Path) -> dict[str, Any]:
    index = json.loads((root / DERIVED_INDEX_FILE).read_text())
    if index.get("format") != DERIVED_FORMAT or index.get("version") != DERIVED_VERSION:
        raise DataError(f"{root / DERIVED_INDEX_FILE}: not a {DERIVED_FORMAT} v{DERIVED_VERSION} index "
                        f"(found {index.get('format')!r} v{index.get('version')!r}); rebuild the bundle")
    return index


def load_derived_split(root: Path, task: str, split: str, options: Mapping[str, Any] | None = None) -> RankingDataset:
    """The split ``task``/``split`` of the derived directory ``root``.

    Raises :class:`TaskUnavailable` when the bundle recorded the task as unavailable or left it out, and a
    :class:`DataError` when ``options`` differ from the ones the split was built with (a bundle built for other
    protocol fractions cannot answer).
    """
    entry = read_index(root).get("splits", {}).get(f"{task}/{split}")
    if entry is None:
        raise TaskUnavailable(f"{task}/{split} is not in the derived data directory {root}; pack a bundle with it")
    if "unavailable" in entry:
        raise TaskUnavailable(entry["unavailable"])
    built_with = entry.get("options", {})
    asked = {k: v for k, v in dict(options or {}).items()}
    if any(built_with.get(k) != v for k, v in asked.items()):
        raise DataError(f"{root}: {task}/{split} was built with {built_with}, the run asks for {asked}; "
                        "pack the bundle with the run's data options")
    record = read_gz_json(root / entry["file"])
    return RankingDataset(task=record["task"], split=record["split"], queries=record["queries"],
                          targets=record["targets"], labels=record["labels"], exclude=record["exclude"],
                          meta={**record["meta"], "derived_from": str(root)})


def write_derived_split(root: Path, dataset: RankingDataset, options: Mapping[str, Any]) -> dict[str, Any]:
    """Write one split; returns its index entry."""
    relpath = split_file(dataset.task, dataset.split)
    size = write_gz_json(root / relpath, dataset_record(dataset))
    return {"file": relpath, "bytes": size, "options": dict(options), "queries": dataset.n_queries,
            "targets": dataset.n_targets}

