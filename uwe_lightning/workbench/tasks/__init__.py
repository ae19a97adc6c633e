"""The seven WorkBench (sub)tasks, the four zero-shot O*NET 29.2 tasks and ``edges`` (your held-out edges), one
module each (as in workrb's ``tasks/ranking``).

Importing this package registers them by name (:func:`~uwe_lightning.workbench.registry.register_task`).
Each pack-built task is a :class:`~.base.RankingTask` that declares only what is particular to it (name, group,
description, ESCO release, and ``build``: its queries, targets, positives, notes and counts for one split);
:mod:`.builders` holds the conventions and helpers they share, :mod:`.sources` the pack readers
(:mod:`.onet_sources` those of O*NET, :mod:`.onet_base` their common base). The O*NET tasks are suite ``onet``:
zero-shot only (see the registry).
"""

from __future__ import annotations

# Import order is registration order, hence the order of ``task_names()``: keep it stable.
# isort: off
from uwe_lightning.workbench.tasks.job2skill import Job2Skill
from uwe_lightning.workbench.tasks.skill2job import Skill2Job
from uwe_lightning.workbench.tasks.skillnorm import SkillNorm
from uwe_lightning.workbench.tasks.skill_extraction import SkillExtrH, SkillExtrT
from uwe_lightning.workbench.tasks.skillsim import SkillSim
from uwe_lightning.workbench.tasks.jobnorm import JobNorm
from uwe_lightning.workbench.tasks.onet_jobnorm import OnetJobNorm
from uwe_lightning.workbench.tasks.onet_occ2tech import OnetOcc2Tech
from uwe_lightning.workbench.tasks.onet_tech2occ import OnetTech2Occ
from uwe_lightning.workbench.tasks.onet_task2occ import OnetTask2Occ
from uwe_lightning.workbench.tasks.edges import EdgesTask

# isort: on

__all__ = ["EdgesTask", "Job2Skill", "JobNorm", "OnetJobNorm", "OnetOcc2Tech", "OnetTask2Occ", "OnetTech2Occ", "Skill2Job",
           "SkillExtrH", "SkillExtrT", "SkillNorm", "SkillSim"]
