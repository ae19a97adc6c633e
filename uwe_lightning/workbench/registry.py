"""Tasks by name: :class:`Task` (a named builder of ranking datasets), :func:`register_task`, :func:`get_task`.

Tasks register themselves with :func:`register_task` when their module is imported: the built-in WorkBench
tasks (``uwe_lightning.workbench.tasks``, one file per task as in WorkRB) on any import of
``uwe_lightning.workbench``, the layers above (the open protocol's variants) when they are imported, and
``import uwe_lightning`` imports them all. The registry itself imports no task module.

Every task belongs to a *suite*: ``workbench`` (the paper's benchmark and its protocol variants: in the WorkBench
macro average, usable for validation) or a zero-shot suite such as ``onet`` (O*NET 29.2: a target space no
training protocol may see; never validated on, reported in its own table, never in the WorkBench macro average).
Suite ``own`` (the ``edges`` task: a user's held-out edges) is validated on by ``data=edges`` runs but, like a
zero-shot suite, averaged in its own table.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from uwe_lightning.workbench.dataset import RankingDataset

#: The suite of the paper's benchmark (and its protocol variants); every other suite is zero-shot only.
WORKBENCH_SUITE = "workbench"
#: The suite of a user's own held-out edges (``data=edges``): validated on, averaged on its own, never in WorkBench.
OWN_SUITE = "own"


class Task(ABC):
    """A WorkBench (sub)task. ``group`` is its task type in the macro average (SkillExtr-H/-T share one)."""

    name: str = ""
    group: str = ""
    description: str = ""
    #: ``workbench``, or a zero-shot-only suite (``onet``): see the module docstring.
    suite: str = WORKBENCH_SUITE

    @abstractmethod
    def load(self, split: str, data_dir: str | Path | None = None) -> RankingDataset:
        """Build the split from the data pack; raise :class:`TaskUnavailable` when its data is absent."""


TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make ``cls`` reachable as ``get_task(cls.name)``."""
    if not cls.name or not cls.group:
        raise ValueError(f"{cls.__name__} needs a name and a group")
    if cls.name in TASKS and TASKS[cls.name] is not cls:
        raise ValueError(f"task {cls.name} registered twice")
    TASKS[cls.name] = cls
    return cls


def get_task(name: str, **options: Any) -> Task:
    """The task registered as ``name``, built with ``options`` (e.g. ``get_task("JobNorm", drop_retired_uris=True)``).

    An option the task does not take fails here, naming the task and the options it accepts.
    """
    if name not in TASKS:
        raise KeyError(f"unknown task '{name}'; known tasks: {sorted(TASKS)}")
    cls = TASKS[name]
    if options:
        accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise TypeError(f"task {name!r} takes no option(s) {unknown}; it accepts {accepted or 'none'}")
    return cls(**options)


def task_names(suite: str | None = None) -> list[str]:
    """Every registered task name (of ``suite`` only, if given), in registration order."""
    return [name for name, cls in TASKS.items() if suite is None or cls.suite == suite]


def task_suite(name: str) -> str:
    """The suite of a registered task (``workbench`` or a zero-shot suite such as ``onet``)."""
    if name not in TASKS:
        raise KeyError(f"unknown task '{name}'; known tasks: {sorted(TASKS)}")
    return TASKS[name].suite


def is_zero_shot_only(name: str) -> bool:
    """Whether ``name`` is a task no training protocol may see (not in the WorkBench suite). Unknown: False."""
    return name in TASKS and TASKS[name].suite not in (WORKBENCH_SUITE, OWN_SUITE)


def list_tasks() -> dict[str, str]:
    """Registered task name -> its one-line description."""
    return {name: cls.description for name, cls in TASKS.items()}
