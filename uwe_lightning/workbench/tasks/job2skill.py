"""Job2Skill: job title -> the ESCO v1.2.0 skills it requires."""

from __future__ import annotations

from pathlib import Path

from uwe_lightning.esco import RELATION_FILES
from uwe_lightning.workbench.registry import register_task
from uwe_lightning.workbench.tasks.base import RankingTask, TaskSplit
from uwe_lightning.workbench.tasks.builders import merge_duplicate_queries, multi_label_queries
from uwe_lightning.workbench.tasks.sources import (
    STRIPPED_SKILL_MATCH_NOTE,
    VACANCY_TITLES_FILE,
    relation_label_pairs,
    v120_skill_targets,
    vacancy_skills_in_targets,
)


@register_task
class Job2Skill(RankingTask):
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
    esco_version = "v1.2.0"

    def build(self, split: str, data_dir: str | Path | None) -> TaskSplit:
        targets, index = v120_skill_targets(data_dir)
        if split == "test":
            pairs, n_dropped = relation_label_pairs(data_dir, "v1.2.0")
            queries, labels = multi_label_queries(pairs, index)
            notes = ["ESCO v1.2.0 occupation preferredLabels; essential + optional relations."]
            meta = {"sources": [RELATION_FILES["v1.2.0"]], "n_relations_without_label": n_dropped}
            return TaskSplit(queries, targets, labels, notes, meta=meta)
        rows, n_unknown = vacancy_skills_in_targets(data_dir, index)
        raw_queries = [title for title, _ in rows]
        queries, labels = merge_duplicate_queries(raw_queries, [[index[s] for s in skills] for _, skills in rows])
        notes = ["Vacancy titles of workrb's first-commit job_skill_val.parquet; later workrb versions read the hub "
                 "dataset TechWolf/vacancy-job-to-skill instead (not verified to be identical).",
                 STRIPPED_SKILL_MATCH_NOTE]
        meta = {"sources": [VACANCY_TITLES_FILE], "n_skill_mentions_outside_targets": n_unknown,
                "n_merged_duplicate_queries": len(raw_queries) - len(queries),
                "n_queries_without_positives": sum(not row for row in labels)}
        return TaskSplit(queries, targets, labels, notes, meta=meta)
