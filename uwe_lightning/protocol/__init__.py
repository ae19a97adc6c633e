"""The ``open`` training protocol: UWE's three graphs built from the public data pack, and where it may be
evaluated. It sits above both the data layer and WorkBench: it builds graphs (``data``) and task variants
(``workbench``) that must agree with each other.

Importing this package registers its task variants (``Job2Skill@open``, ``Skill2Job@open``,
``SkillNorm@heldout``). Modules: :mod:`~.splits` (stable hash splits), :mod:`~.sources` (texts of each graph),
:mod:`~.leakage` (what may not be trained on; :class:`QueryGuard` for generated texts), :mod:`~.build` (the graphs, :class:`OpenProtocolSource`),
:mod:`~.tasks` (the task variants).
"""

from uwe_lightning.protocol.build import (
    EnrichedOpenSource,
    OpenProtocol,
    OpenProtocolSource,
    build_open_protocol,
    clear_cache,
    protocol_task_options,
)
from uwe_lightning.protocol.leakage import (
    CONTAMINATED,
    REPLACED_FOR_VALIDATION,
    QueryGuard,
    leakage_report,
    leaked_pairs,
    query_key,
    zero_shot_overlap,
)
from uwe_lightning.protocol.splits import is_altlabel_training_skill, is_validation_title
from uwe_lightning.protocol.tasks import PROTOCOL_TASKS, Job2SkillOpen, Skill2JobOpen, SkillNormHeldout

__all__ = [
    "CONTAMINATED",
    "PROTOCOL_TASKS",
    "EnrichedOpenSource",
    "REPLACED_FOR_VALIDATION",
    "Job2SkillOpen",
    "OpenProtocol",
    "OpenProtocolSource",
    "QueryGuard",
    "Skill2JobOpen",
    "SkillNormHeldout",
    "build_open_protocol",
    "clear_cache",
    "is_altlabel_training_skill",
    "is_validation_title",
    "leakage_report",
    "leaked_pairs",
    "query_key",
    "protocol_task_options",
    "zero_shot_overlap",
]
