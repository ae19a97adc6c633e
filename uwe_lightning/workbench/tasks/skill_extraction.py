"""SkillExtr-H / SkillExtr-T: SkillSpan vacancy sentences -> the ESCO v1.1.0 skills they mention."""

from __future__ import annotations

from pathlib import Path

from uwe_lightning.esco import SKILL_FILES, load_skills
from uwe_lightning.io import read_csv_checked
from uwe_lightning.paths import data_file
from uwe_lightning.workbench.dataset import RankingDataset
from uwe_lightning.workbench.registry import Task, register_task
from uwe_lightning.workbench.tasks.builders import check_split, group_in_order, make_dataset, target_index

SKILL_EXTRACTION_FILE = "workbench/skill_extraction/{subset}_{split}_annotations.csv"
#: SkillSpan labels that are no ESCO skill; a sentence with only these is no query.
NOT_A_SKILL = ("LABEL NOT PRESENT", "UNDERSPECIFIED")


class _SkillExtract(Task):
    """SkillSpan sentences -> the ESCO v1.1.0 skills annotated in them, among all 13,891 v1.1.0 skills.

    One row per annotated span; the labels of a (stripped) sentence are grouped into one multi-label
    query; labels ``LABEL NOT PRESENT`` / ``UNDERSPECIFIED`` and any label that is no v1.1.0
    preferredLabel are dropped, and a sentence left without labels is no query.
    """

    group = "SkillExtract"
    subset = ""

    def source(self, split: str) -> str:
        """The pack file of this subset's split (SkillSpan calls val "validation")."""
        return SKILL_EXTRACTION_FILE.format(
            subset=self.subset, split="validation" if split == "val" else "test"
        )

    def load(self, split: str, data_dir: str | Path | None = None) -> RankingDataset:
        check_split(self.name, split)
        targets, index = target_index(load_skills(data_dir, "v1.1.0")["label"])
        relpath = self.source(split)
        spans = read_csv_checked(
            data_file(data_dir, relpath), ["sentence", "label"], non_empty=["sentence", "label"]
        )
        sentences = spans["sentence"].str.strip()
        span_labels = spans["label"].str.strip()
        is_sentinel = span_labels.isin(NOT_A_SKILL)
        in_targets = span_labels.isin(index)
        grouped = group_in_order(
            (sentence, label)
            for sentence, label, ok in zip(sentences, span_labels, in_targets, strict=True)
            if ok
        )
        queries = list(grouped)
        labels = [sorted(index[s] for s in skills) for skills in grouped.values()]
        return make_dataset(
            self.name,
            split,
            queries,
            targets,
            labels,
            notes=["Sentences with at least one real ESCO v1.1.0 label (SkillSpan + Decorte et al. 2022)."],
            esco_version="v1.1.0",
            sources=[relpath, SKILL_FILES["v1.1.0"]],
            n_sentences=int(sentences.nunique()),
            n_sentinel_label_rows=int(is_sentinel.sum()),
            n_label_rows_outside_targets=int((~is_sentinel & ~in_targets).sum()),
        )


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
