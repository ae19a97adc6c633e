"""The test's evaluation views of a training run: the seen / unseen skills of a skill holdout (issue 29).

``test.skill_views`` (default ``data.skill_holdout``) names the holdout fraction whose split the views use, so a
run that trains on every skill can be scored on the same halves as the run that holds one out.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from uwe_lightning.data.datamodule import UWEDataModule
from uwe_lightning.protocol import OpenProtocolSource
from uwe_lightning.protocol.leakage import SkillResolver
from uwe_lightning.workbench.holdout import holdout_views

#: The views (name -> view) and what they are, or ``NO_VIEWS``.
SkillViews = tuple[dict[str, Any] | None, dict[str, Any] | None]
NO_VIEWS: SkillViews = (None, None)


def skill_views(cfg: DictConfig, datamodule: UWEDataModule) -> SkillViews:
    """``test.skill_views``: the seen / unseen views of the holdout split (:mod:`uwe_lightning.workbench.holdout`)
    and what the split is, or (None, None)."""
    fraction = OmegaConf.select(cfg, "test.skill_views", default=None)
    if fraction is None:
        return NO_VIEWS
    held_out = datamodule.holdout_for(float(fraction))
    assert datamodule.vocab is not None
    if isinstance(datamodule.source, OpenProtocolSource):  # SkillExtract targets are v1.1.0 labels
        resolve = SkillResolver(datamodule.vocab, cfg.paths.data_dir)
    else:
        resolve = datamodule.vocab.get
    about = {"fraction": float(fraction), "seed": datamodule.holdout_seed, "held_out_skills": int(held_out.size),
             "n_skills": len(datamodule.vocab), "trained_without_them": datamodule.held_out_skills is not None,
             **({"split": datamodule.controls["skill_holdout"]} if "skill_holdout" in datamodule.controls else {})}
    return holdout_views(held_out, resolve), about
