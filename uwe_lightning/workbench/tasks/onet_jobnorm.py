"""ONET-JobNorm: O*NET alternate job title -> its O*NET 29.2 occupation (zero-shot suite ``onet``)."""

from __future__ import annotations

from pathlib import Path

from uwe_lightning.data.graphs import normalize_text
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

SALT = "uwe-onet/JobNorm"


@register_task
class OnetJobNorm(Task):
    """Alternate title (``Alternate Titles.txt``) -> its O*NET occupation title, among all 1,016 occupations.

    An alternate title equal (strip + case-fold) to its own occupation's title is dropped (the trivial match, as
    SkillNorm drops an altLabel equal to its preferredLabel); identical titles of several occupations form one
    multi-label query. Split (documented rule): the SHA-256 unit value of ``"uwe-onet/JobNorm\\0" +
    strip+casefold(title)`` puts a title in val below ``val_fraction`` (0.05), in test below ``val_fraction +
    test_fraction`` (0.25); the other 75 % are left unused so that the test split is CPU-sized (``test_fraction
    =0.95`` uses every title). Case variants of one title always land on the same side.
    """

    name = "ONET-JobNorm"
    group = "ONET-JobNorm"
    suite = "onet"
    description = "O*NET alternate job title -> O*NET 29.2 occupation (zero-shot)"

    def __init__(self, val_fraction: float = 0.05, test_fraction: float = 0.2) -> None:
        check_fractions(self.name, val_fraction, test_fraction)
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)

    def load(self, split: str, data_dir: str | Path | None = None) -> RankingDataset:
        check_split(self.name, split)
        titles, targets, index = occupation_targets(data_dir)
        pairs = code_rows(data_dir, "alternate_titles", "Alternate Title", titles)
        kept = [(code, alt) for code, alt in pairs if normalize_text(alt) != normalize_text(titles[code])]
        grouped = text_to_codes(kept)
        chosen = split_grouped(grouped, split, SALT, self.val_fraction, self.test_fraction)
        queries = list(chosen)
        labels = [sorted({index[titles[code]] for code in codes}) for codes in chosen.values()]
        return make_dataset(
            self.name, split, queries, targets, labels,
            notes=[VERSION_NOTE,
                   f"Split: sha256('{SALT}\\0' + strip+casefold(title)) unit < {self.val_fraction} -> val, "
                   f"< {self.val_fraction + self.test_fraction} -> test, else unused."],
            onet_version="29.2",
            sources=[ONET_FILES["occupations"], ONET_FILES["alternate_titles"]],
            val_fraction=self.val_fraction, test_fraction=self.test_fraction,
            n_rows=len(pairs), n_dropped_equal_to_own_title=len(pairs) - len(kept),
            n_distinct_titles=len(grouped), n_multi_label_queries=sum(len(row) > 1 for row in labels),
        )
