"""SkillExtr-H / SkillExtr-T: SkillSpan vacancy sentences -> the ESCO v1.1.0 skills they mention."""

from __future__ import annotations

from pathlib import Path

from uwe_lightning.esco import SKILL_FILES, load_skills
from uwe_lightning.io import read_csv_checked
from uwe_lightning.paths import data_file
from uwe_lightning.workbench.registry import register_task
from uwe_lightning.workbench.tasks.base import RankingTask, TaskSplit
from uwe_lightning.workbench.tasks.builders import multi_label_queries, target_index

SKILL_EXTRACTION_FILE = "workbench/skill_extraction/{subset}_{split}_annotations.csv"
#: SkillSpan labels that are no ESCO skill; a sentence with only these is no query.
NOT_A_SKILL = ("LABEL NOT PRESENT", "UNDERSPECIFIED")


class _SkillExtract(RankingTask):
    """SkillSpan sentences -> the ESCO v1.1.0 skills annotated in them, among all 13,891 v1.1.0 skills.

    One row per annotated span; the labels of a (stripped) sentence are grouped into one multi-label
    query; labels ``LABEL NOT PRESENT`` / ``UNDERSPECIFIED`` and any label that is no v1.1.0
    preferredLabel are dropped, and a sentence left without labels is no query.
    """

    group = "SkillExtract"
    esco_version = "v1.1.0"
    subset = ""

    def source(self, split: str) -> str:
        """The pack file of this subset's split (SkillSpan calls val "validation")."""
        return SKILL_EXTRACTION_FILE.format(
            subset=self.subset, split="validation" if split == "val" else "test"
        )

    def build(self, split: str, data_dir: str | Path | None) -> TaskSplit:
        targets, index = target_index(load_skills(data_dir, "v1.1.0")["label"])
        relpath = self.source(split)
        spans = read_csv_checked(
            data_file(data_dir, relpath), ["sentence", "label"], non_empty=["sentence", "label"]
        )
        sentences = spans["sentence"].str.strip()
        span_labels = spans["label"].str.strip()
        is_sentinel = span_labels.isin(NOT_A_SKILL)
        in_targets = span_labels.isin(index)
        queries, labels = multi_label_queries(
            ((sentence, label) for sentence, label, ok in zip(sentences, span_labels, in_targets, strict=True) if ok),
            index,
        )
        notes = ["Sentences with at least one real ESCO v1.1.0 label (SkillSpan + Decorte et al. 2022)."]
        meta = {"sources": [relpath, SKILL_FILES["v1.1.0"]], "n_sentences": int(sentences.nunique()),
                "n_sentinel_label_rows": int(is_sentinel.sum()),
                "n_label_rows_outside_targets": int((~is_sentinel & ~in_targets).sum())}
        return TaskSplit(queries, targets, labels, notes, meta=meta)


@register_task
class SkillExtrH(_SkillExtract):
    """SkillSpan HOUSE sentences -> ESCO v1.1.0 skills (rules: the base class).

    Real pack: 61 / 262 x 13,891 = paper.
    """

    name = "SkillExtr-H"
    subset = "house"
    description = "HOUSE vacancy sentence -> ESCO v1.1.0 skills it mentions"


@register_task
class SkillExtrT(_SkillExtract):
    """SkillSpan TECH sentences -> ESCO v1.1.0 skills (rules: the base class).

    Real pack: 75 / 338 x 13,891 = paper.
    """

    name = "SkillExtr-T"
    subset = "tech"
    description = "TECH vacancy sentence -> ESCO v1.1.0 skills it mentions"
