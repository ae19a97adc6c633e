"""The open protocol's fixed splits: which vacancy titles and which skills' altLabels are held out.

Splits are a stable hash of the key (SHA-256 of salt + key; not Python's per-process salted ``hash``), so every
machine and run agrees. J: the stripped, case-folded title, salted ``"uwe-open/J"``; a title is held out for
validation when its unit value is below ``val_fraction``. A: the skill URI, salted ``"uwe-open/A"``; a skill's
altLabels are training texts when its unit value is below ``altlabel_train_fraction``.
"""

from __future__ import annotations

from uwe_lightning.data.graphs import normalize_text
from uwe_lightning.workbench.tasks.builders import stable_unit

DEFAULT_VAL_FRACTION = 0.1
DEFAULT_ALTLABEL_TRAIN_FRACTION = 0.5
TITLE_SALT = "uwe-open/J"
ALTLABEL_SALT = "uwe-open/A"


__all__ = ["stable_unit", "is_validation_title", "is_altlabel_training_skill"]


def is_validation_title(title: str, val_fraction: float = DEFAULT_VAL_FRACTION) -> bool:
    """Whether a vacancy title is held out for validation (hash of the stripped, case-folded title)."""
    return stable_unit(normalize_text(title), TITLE_SALT) < val_fraction


def is_altlabel_training_skill(uri: str, altlabel_train_fraction: float = DEFAULT_ALTLABEL_TRAIN_FRACTION) -> bool:
    """Whether a skill's altLabels are training texts (graph A); the others form the held-out half."""
    return stable_unit(uri.strip(), ALTLABEL_SALT) < altlabel_train_fraction
