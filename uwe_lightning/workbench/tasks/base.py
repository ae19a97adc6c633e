"""The shape every pack-built task shares: queries ranked against a target space, with binary qrels.

A task file declares its ``name``, ``group``, ``description`` and :meth:`RankingTask.build`, which reads the pack
and returns a :class:`TaskSplit`: what is particular to the task. :meth:`RankingTask.load` does what is the same
for all (as workrb's ranking tasks leave it to their base): it refuses an unknown split before any file is read,
and wraps the split with the paper's sizes and the notes (:func:`~.builders.make_dataset`).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uwe_lightning.workbench.dataset import RankingDataset
from uwe_lightning.workbench.registry import Task
from uwe_lightning.workbench.tasks.builders import check_split, make_dataset


@dataclass
class TaskSplit:
    """One split as a task builds it: the queries, the target space, each query's positive target indices, why its
    counts are what they are (``notes``), per-query targets left out of its ranking, and the task's meta entries."""

    queries: list[str]
    targets: list[str]
    labels: list[list[int]]
    notes: list[str]
    exclude: list[list[int]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class RankingTask(Task):
    """A task whose splits are built from the data pack by :meth:`build`."""

    #: The ESCO release the task reads (its meta's ``esco_version``); None for a task on other data.
    esco_version: str | None = None

    def load(self, split: str, data_dir: str | Path | None = None) -> RankingDataset:
        check_split(self.name, split)
        built = self.build(split, data_dir)
        meta = built.meta if self.esco_version is None else {"esco_version": self.esco_version, **built.meta}
        return make_dataset(self.name, split, built.queries, built.targets, built.labels, built.notes,
                            exclude=built.exclude, **meta)

    @abstractmethod
    def build(self, split: str, data_dir: str | Path | None) -> TaskSplit:
        """Split ``split`` (already checked to be ``val`` or ``test``) from the pack at ``data_dir``."""
