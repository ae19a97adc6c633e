"""The protocol's WorkBench task variants, registered on import, in the groups of their base tasks.

* ``Job2Skill@open``: val = the titles held out of graph J only; test = the standard Job2Skill test.
* ``Skill2Job@open``: val targets = the held-out titles; test = the standard Skill2Job test.
* ``SkillNorm@heldout``: val/test = SkillNorm queries whose label skills all lie in the held-out half.

Each takes the protocol's fractions as options (``get_task("Job2Skill@open", val_fraction=0.05)``); a run
builds them from the same configured fractions as its graphs (:meth:`OpenProtocolSource.task_options`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from uwe_lightning.esco import load_skills
from uwe_lightning.protocol.splits import (
    DEFAULT_ALTLABEL_TRAIN_FRACTION,
    DEFAULT_VAL_FRACTION,
    is_altlabel_training_skill,
    is_validation_title,
)
from uwe_lightning.workbench.dataset import RankingDataset
from uwe_lightning.workbench.registry import Task, get_task, register_task


def _restrict_targets(dataset: RankingDataset, keep: Iterable[bool], task: str, note: str) -> RankingDataset:
    """Keep only some targets (order preserved), remap labels, drop queries left without a label."""
    keep = np.fromiter(keep, dtype=bool, count=len(dataset.targets))
    new_index = np.cumsum(keep) - 1
    queries, labels = [], []
    for query, row in zip(dataset.queries, dataset.labels, strict=True):
        kept = [int(new_index[j]) for j in row if keep[j]]
        if kept:
            queries.append(query)
            labels.append(kept)
    targets = [t for t, k in zip(dataset.targets, keep, strict=True) if k]
    meta = {**dataset.meta, "notes": [*dataset.meta.get("notes", []), note]}
    return RankingDataset(task, dataset.split, queries, targets, labels, meta=meta)


def _restrict_queries(dataset: RankingDataset, keep: Iterable[bool], task: str, note: str) -> RankingDataset:
    rows = [i for i, k in enumerate(keep) if k]
    meta = {**dataset.meta, "notes": [*dataset.meta.get("notes", []), note]}
    exclude = [dataset.exclude[i] for i in rows] if dataset.exclude is not None else None
    return RankingDataset(
        task,
        dataset.split,
        [dataset.queries[i] for i in rows],
        list(dataset.targets),
        [list(dataset.labels[i]) for i in rows],
        exclude=exclude,
        meta=meta,
    )


class _OpenTitlesTask(Task):
    """``base_task`` under the open protocol: test = the standard test; val keeps only the vacancy titles held out
    of graph J (``titles_are`` says whether they are the base task's ``queries`` or its ``targets``), so validation
    never sees a training title."""

    base_task = ""
    titles_are = "queries"

    def __init__(self, val_fraction: float = DEFAULT_VAL_FRACTION) -> None:
        self.val_fraction = val_fraction

    def load(self, split: str, data_dir: str | Path | None = None) -> RankingDataset:
        base = get_task(self.base_task).load(split, data_dir)
        if split == "test":
            return _restrict_queries(base, [True] * base.n_queries, self.name, f"Standard {self.base_task} test.")
        if self.titles_are == "queries":
            keep = [is_validation_title(q, self.val_fraction) for q in base.queries]
            return _restrict_queries(
                base, keep, self.name, f"Open protocol: only the {sum(keep)} titles held out of graph J."
            )
        keep = [is_validation_title(t, self.val_fraction) for t in base.targets]
        return _restrict_targets(
            base, keep, self.name, f"Open protocol: target space = the {sum(keep)} titles held out of graph J."
        )


@register_task
class Job2SkillOpen(_OpenTitlesTask):
    """Job2Skill under the open protocol: val = the held-out vacancy titles only; test = standard test."""

    name = "Job2Skill@open"
    group = base_task = "Job2Skill"
    description = "Job2Skill, validation on the titles held out of the open protocol's J graph"


@register_task
class Skill2JobOpen(_OpenTitlesTask):
    """Skill2Job under the open protocol: val targets = the held-out vacancy titles; test = standard test."""

    name = "Skill2Job@open"
    group = base_task = "Skill2Job"
    description = "Skill2Job, validation on the titles held out of the open protocol's J graph"
    titles_are = "targets"


@register_task
class SkillNormHeldout(Task):
    """SkillNorm restricted to queries whose label skills all lie in the held-out half (no altLabel of theirs
    is a training text): the clean SkillNorm number under the open protocol."""

    name = "SkillNorm@heldout"
    group = "SkillNorm"
    description = "SkillNorm on the skills whose altLabels the open protocol holds out"

    def __init__(self, altlabel_train_fraction: float = DEFAULT_ALTLABEL_TRAIN_FRACTION) -> None:
        self.altlabel_train_fraction = altlabel_train_fraction

    def load(self, split: str, data_dir: str | Path | None = None) -> RankingDataset:
        base = get_task("SkillNorm").load(split, data_dir)
        label_to_uri = dict(zip(*_skill_label_uri(data_dir), strict=True))
        held_out = [not is_altlabel_training_skill(label_to_uri[t], self.altlabel_train_fraction) for t in base.targets]
        keep = [all(held_out[j] for j in row) for row in base.labels]
        return _restrict_queries(
            base, keep, self.name, "Open protocol: only queries whose skills' altLabels are not training texts."
        )


def _skill_label_uri(data_dir: str | os.PathLike | None) -> tuple[list[str], list[str]]:
    skills = load_skills(data_dir, "v1.2.0")
    return skills["label"].tolist(), skills["uri"].tolist()


PROTOCOL_TASKS = (Job2SkillOpen.name, Skill2JobOpen.name, SkillNormHeldout.name)
