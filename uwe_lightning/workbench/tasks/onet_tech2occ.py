"""ONET-Tech2Occ: technology skill -> the O*NET 29.2 occupations using it (zero-shot suite ``onet``)."""

from __future__ import annotations

from pathlib import Path

from uwe_lightning.workbench.dataset import RankingDataset
from uwe_lightning.workbench.registry import Task, register_task
from uwe_lightning.workbench.tasks.builders import check_split, make_dataset
from uwe_lightning.workbench.tasks.onet_sources import (
    ONET_FILES,
    VERSION_NOTE,
    check_fractions,
    code_rows,
    occupation_targets,
    split_grouped,
    text_to_codes,
)

SALT = "uwe-onet/Tech2Occ"


@register_task
class OnetTech2Occ(Task):
    """Technology skill (``Technology Skills.txt`` ``Example``) -> the occupations using it, among all 1,016
    O*NET occupation titles (ONET-Occ2Tech inverted; O*NET's Skill2Job analogue; multi-label).

    Split (documented rule): the SHA-256 unit value of ``"uwe-onet/Tech2Occ\\0" + strip+casefold(example)`` below
    ``val_fraction`` (0.2) -> val, the rest (``test_fraction`` 0.8) -> test.
    """

    name = "ONET-Tech2Occ"
    group = "ONET-Tech2Occ"
    suite = "onet"
    description = "technology skill -> O*NET 29.2 occupations using it (zero-shot)"

    def __init__(self, val_fraction: float = 0.2, test_fraction: float = 0.8) -> None:
        check_fractions(self.name, val_fraction, test_fraction)
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)

    def load(self, split: str, data_dir: str | Path | None = None) -> RankingDataset:
        check_split(self.name, split)
        titles, targets, index = occupation_targets(data_dir)
        pairs = code_rows(data_dir, "technology_skills", "Example", titles)
        chosen = split_grouped(text_to_codes(pairs), split, SALT, self.val_fraction, self.test_fraction)
        labels = [sorted({index[titles[code]] for code in codes}) for codes in chosen.values()]
        return make_dataset(
            self.name, split, list(chosen), targets, labels,
            notes=[VERSION_NOTE,
                   f"Split: sha256('{SALT}\\0' + strip+casefold(example)) unit < {self.val_fraction} -> val, "
                   f"< {self.val_fraction + self.test_fraction} -> test."],
            onet_version="29.2",
            sources=[ONET_FILES["occupations"], ONET_FILES["technology_skills"]],
            val_fraction=self.val_fraction, test_fraction=self.test_fraction, n_rows=len(pairs),
        )
