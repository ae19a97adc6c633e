"""ONET-Occ2Tech: O*NET 29.2 occupation -> the technology skills it uses (zero-shot suite ``onet``)."""

from __future__ import annotations

from pathlib import Path

from uwe_lightning.workbench.dataset import RankingDataset
from uwe_lightning.workbench.registry import register_task
from uwe_lightning.workbench.tasks.builders import check_split, group_in_order, make_dataset, target_index
from uwe_lightning.workbench.tasks.onet_base import OnetTask
from uwe_lightning.workbench.tasks.onet_sources import (
    ONET_FILES,
    VERSION_NOTE,
    code_rows,
    occupation_titles,
    split_grouped,
)


@register_task
class OnetOcc2Tech(OnetTask):
    """Occupation title -> its technology skills (``Technology Skills.txt`` ``Example``: "Microsoft Excel",
    "Python", ...), ranked against all 8,768 distinct examples (multi-label; O*NET's Job2Skill analogue).

    Queries: the occupations with at least one technology skill (923 of 1,016). Split (documented rule): the
    SHA-256 unit value of ``"uwe-onet/Occ2Tech\\0" + O*NET-SOC code`` below ``val_fraction`` (0.2) -> val, the
    rest (``test_fraction`` 0.8) -> test. Both splits rank against the full example space.
    """

    name = "ONET-Occ2Tech"
    group = "ONET-Occ2Tech"
    description = "O*NET 29.2 occupation -> its technology skills (zero-shot)"
    salt = "uwe-onet/Occ2Tech"

    def load(self, split: str, data_dir: str | Path | None = None) -> RankingDataset:
        check_split(self.name, split)
        titles = occupation_titles(data_dir)
        pairs = code_rows(data_dir, "technology_skills", "Example", titles)
        targets, index = target_index(example for _, example in pairs)
        by_code = split_grouped(group_in_order(pairs), split, self.salt, self.val_fraction, self.test_fraction,
                                key=lambda code: code)
        queries = [titles[code] for code in by_code]
        labels = [sorted({index[e] for e in examples}) for examples in by_code.values()]
        return make_dataset(
            self.name, split, queries, targets, labels,
            notes=[VERSION_NOTE, self.split_note("O*NET-SOC code")],
            onet_version="29.2",
            sources=[ONET_FILES["occupations"], ONET_FILES["technology_skills"]],
            val_fraction=self.val_fraction, test_fraction=self.test_fraction,
            n_rows=len(pairs), n_occupations_with_technology=len(group_in_order(pairs)),
        )
