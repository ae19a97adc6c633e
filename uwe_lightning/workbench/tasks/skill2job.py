"""Skill2Job: ESCO v1.2.0 skill -> the job titles requiring it (Job2Skill inverted)."""

from __future__ import annotations

from pathlib import Path

from uwe_lightning.esco import RELATION_FILES, load_occupations
from uwe_lightning.workbench.registry import register_task
from uwe_lightning.workbench.tasks.base import RankingTask, TaskSplit
from uwe_lightning.workbench.tasks.builders import multi_label_queries, target_index
from uwe_lightning.workbench.tasks.sources import (
    STRIPPED_SKILL_MATCH_NOTE,
    VACANCY_TITLES_FILE,
    relation_label_pairs,
    v120_skill_targets,
    vacancy_skills_in_targets,
)


@register_task
class Skill2Job(RankingTask):
    """ESCO v1.2.0 skill -> the job titles requiring it (inverted Job2Skill, multi-label).

    test: every v1.2.0 skill with at least one relation -> ESCO v1.2.0 occupations (13,492 x 3,039 =
    paper). val: every skill of ``job_skill_val.parquet`` -> the vacancy titles tagged with it; the target
    space is all 5,644 distinct titles (10,137 x 5,644 = paper; workrb 0.6.0 gets 10,133 on this pack
    because it matches skill names on raw text, see :class:`~uwe_lightning.workbench.tasks.Job2Skill`).
    """

    name = "Skill2Job"
    group = "Skill2Job"
    description = "ESCO v1.2.0 skill -> job titles requiring it"
    esco_version = "v1.2.0"

    def build(self, split: str, data_dir: str | Path | None) -> TaskSplit:
        if split == "test":
            targets, index = target_index(load_occupations(data_dir, "v1.2.0")["label"])
            pairs, n_dropped = relation_label_pairs(data_dir, "v1.2.0")
            queries, labels = multi_label_queries(((skill, job) for job, skill in pairs), index)
            notes = ["Skills with at least one ESCO v1.2.0 relation (essential + optional)."]
            meta = {"sources": [RELATION_FILES["v1.2.0"]], "n_relations_without_label": n_dropped}
            return TaskSplit(queries, targets, labels, notes, meta=meta)
        _, skill_index = v120_skill_targets(data_dir)
        rows, n_unknown = vacancy_skills_in_targets(data_dir, skill_index)
        targets, index = target_index(title for title, _ in rows)
        queries, labels = multi_label_queries(((skill, title) for title, skills in rows for skill in skills), index)
        notes = ["Inverted job_skill_val.parquet: target space = its distinct vacancy titles.",
                 STRIPPED_SKILL_MATCH_NOTE]
        meta = {"sources": [VACANCY_TITLES_FILE], "n_skill_mentions_outside_targets": n_unknown}
        return TaskSplit(queries, targets, labels, notes, meta=meta)
