"""ONET-Task2Occ: O*NET task statement -> its O*NET 29.2 occupation (zero-shot suite ``onet``)."""

from __future__ import annotations

from uwe_lightning.workbench.registry import register_task
from uwe_lightning.workbench.tasks.onet_base import TextToOccupationTask


@register_task
class OnetTask2Occ(TextToOccupationTask):
    """Task statement (``Task Statements.txt`` ``Task``: "Direct or coordinate an organization's financial or
    budget activities ...") -> its occupation, among all 1,016 O*NET occupation titles. A statement shared by
    several occupations is one multi-label query.

    Split (documented rule): the SHA-256 unit value of ``"uwe-onet/Task2Occ\\0" + strip+casefold(statement)``
    below ``val_fraction`` (0.05) -> val, below ``val_fraction + test_fraction`` (0.25) -> test; the other 75 %
    are left unused so that the test split is CPU-sized (``test_fraction=0.95`` uses every statement).
    """

    name = "ONET-Task2Occ"
    group = "ONET-Task2Occ"
    description = "O*NET task statement -> O*NET 29.2 occupation (zero-shot)"
    salt = "uwe-onet/Task2Occ"
    source, column, key_name = "task_statements", "Task", "statement"
    default_val_fraction, default_test_fraction = 0.05, 0.2
