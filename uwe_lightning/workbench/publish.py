"""Publish WorkBench's task splits as ``datasets`` tables (``python -m uwe_lightning.publish``); the layout and the
reader are in :mod:`uwe_lightning.workbench.tables`."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from uwe_lightning.io import DataError, atomic_write_json, make_dirs, publish_tree
from uwe_lightning.paths import PUBLISHED_INDEX_FILE
from uwe_lightning.workbench.dataset import SPLITS
from uwe_lightning.workbench.runner import load_tasks
from uwe_lightning.workbench.tables import PUBLISHED_FORMAT, PUBLISHED_VERSION, to_dataset_dict


def _version() -> str:
    try:
        return metadata.version("uwe_lightning")
    except metadata.PackageNotFoundError:  # a source tree that is not installed
        return "0.0.0+unknown"


def publish_workbench(out: str | os.PathLike, tasks: Sequence[str], splits: Sequence[str] = SPLITS,
                      data_dir: str | os.PathLike | None = None,
                      task_options: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Write ``tasks`` x ``splits`` built from the data pack as ``datasets`` tables into the new directory ``out``
    (module docstring); returns the index. Staged beside ``out`` and renamed into place: never half written."""
    out = Path(out)
    if out.exists():
        raise DataError(f"{out} exists; publish into a new directory (or remove it first)")
    make_dirs(out.parent)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    index: dict[str, Any] = {"format": PUBLISHED_FORMAT, "version": PUBLISHED_VERSION,
                             "uwe_lightning": _version(), "splits": {}}
    try:
        for split in splits:
            built, unavailable = load_tasks(list(tasks), split, data_dir, task_options)
            for task, reason in unavailable.items():
                index["splits"][f"{task}/{split}"] = {"unavailable": reason}
            for task, dataset in built.items():
                relpath = f"{task}/{split}"
                to_dataset_dict(dataset).save_to_disk(str(stage / relpath))
                index["splits"][relpath] = {
                    "path": relpath, "queries": dataset.n_queries, "targets": dataset.n_targets,
                    "positives": sum(len(row) for row in dataset.labels), "exclude": dataset.exclude is not None,
                    "options": dict((task_options or {}).get(task, {})), "meta": dataset.meta}
        atomic_write_json(stage / PUBLISHED_INDEX_FILE, index)
        publish_tree(stage)
        os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return index
