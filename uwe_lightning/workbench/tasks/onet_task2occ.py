"""ONET-Task2Occ: O*NET task statement -> its O*NET 29.2 occupation (zero-shot suite ``onet``)."""

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

SALT = "uwe-onet/Task2Occ"


@register_task
class OnetTask2Occ(Task):
    """Task statement (``Task Statements.txt`` ``Task``: "Direct or coordinate an organization's financial or
    budget activities ...") -> its occupation, among all 1,016 O*NET occupation titles. A statement shared by
    several occupations is one multi-label query.

    Split (documented rule): the SHA-256 unit value of ``"uwe-onet/Task2Occ\\0" + strip+casefold(statement)``
    below ``val_fraction`` (0.05) -> val, below ``val_fraction + test_fraction`` (0.25) -> test; the other 75 %
    are left unused so that the test split is CPU-sized (``test_fraction=0.95`` uses every statement).
    """

    name = "ONET-Task2Occ"
    group = "ONET-Task2Occ"
    suite = "onet"
    description = "O*NET task statement -> O*NET 29.2 occupation (zero-shot)"

    def __init__(self, val_fraction: float = 0.05, test_fraction: float = 0.2) -> None:
        check_fractions(self.name, val_fraction, test_fraction)
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)

    def load(self, split: str, data_dir: str | Path | None = None) -> RankingDataset:
        check_split(self.name, split)
        titles, targets, index = occupation_targets(data_dir)
        pairs = code_rows(data_dir, "task_statements", "Task", titles)
        grouped = text_to_codes(pairs)
        chosen = split_grouped(grouped, split, SALT, self.val_fraction, self.test_fraction)
        labels = [sorted({index[titles[code]] for code in codes}) for codes in chosen.values()]
        return make_dataset(
            self.name, split, list(chosen), targets, labels,
            notes=[VERSION_NOTE,
                   f"Split: sha256('{SALT}\\0' + strip+casefold(statement)) unit < {self.val_fraction} -> val, "
                   f"< {self.val_fraction + self.test_fraction} -> test, else unused."],
            onet_version="29.2",
            sources=[ONET_FILES["occupations"], ONET_FILES["task_statements"]],
            val_fraction=self.val_fraction, test_fraction=self.test_fraction,
            n_rows=len(pairs), n_distinct_statements=len(grouped),
            n_multi_label_queries=sum(len(row) > 1 for row in labels),
        )
