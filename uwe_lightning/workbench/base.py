"""What a WorkBench task is: a named builder of ranking datasets, registered by name.

A :class:`RankingDataset` is (query texts, target space, positive target indices per query), plus
optional per-query targets to exclude from the ranking (SkillSim excludes the query itself). Models and
metrics never see how a task was built; tasks never see a model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("val", "test")


class TaskUnavailable(RuntimeError):
    """The task's data is not present; reported as unavailable, never as a zero."""


@dataclass
class RankingDataset:
    task: str
    split: str
    queries: list[str]
    targets: list[str]
    labels: list[list[int]]  # positive target indices per query
    exclude: list[list[int]] | None = None  # per query: target indices removed from its ranking
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError(f"{self.task}/{self.split}: empty target space")
        if len(self.queries) != len(self.labels):
            raise ValueError(f"{self.task}/{self.split}: {len(self.queries)} queries but {len(self.labels)} label rows")
        if self.exclude is not None and len(self.exclude) != len(self.queries):
            raise ValueError(f"{self.task}/{self.split}: exclude has {len(self.exclude)} rows for {len(self.queries)} queries")
        n = len(self.targets)
        for i, row in enumerate(self.labels):
            if any(t < 0 or t >= n for t in row):
                raise ValueError(f"{self.task}/{self.split}: query {i} has a label outside the {n} targets")

    @property
    def n_queries(self) -> int:
        return len(self.queries)

    @property
    def n_targets(self) -> int:
        return len(self.targets)


class Task(ABC):
    """A WorkBench (sub)task. ``group`` is its task type in the macro average (SkillExtr-H/-T share one)."""

    name: str = ""
    group: str = ""
    description: str = ""

    @abstractmethod
    def load(self, split: str, data_dir: str | Path | None = None) -> RankingDataset:
        """Build the split from the data pack; raise :class:`TaskUnavailable` when its data is absent."""


TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    if not cls.name or not cls.group:
        raise ValueError(f"{cls.__name__} needs a name and a group")
    if cls.name in TASKS:
        raise ValueError(f"task {cls.name} registered twice")
    TASKS[cls.name] = cls
    return cls


def _register_builtin_tasks() -> None:
    """Importing these modules registers the WorkBench tasks and the open protocol's task variants."""
    import uwe_lightning.data.protocol  # noqa: F401
    import uwe_lightning.workbench.tasks  # noqa: F401


def get_task(name: str) -> Task:
    _register_builtin_tasks()
    if name not in TASKS:
        raise KeyError(f"unknown task '{name}'; known tasks: {sorted(TASKS)}")
    return TASKS[name]()


def task_names() -> list[str]:
    _register_builtin_tasks()
    return list(TASKS)
