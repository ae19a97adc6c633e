"""Seen / unseen skills: evaluation views of a skill holdout (issue 29, part 4; generalised zero-shot).

With ``data.skill_holdout`` a share of the skills is never trained on. Every ESCO-skill task still ranks the
WHOLE target space; the views score it twice:

* a task whose targets are skills (Job2Skill, SkillNorm, SkillExtract, SkillSim): ``unseen`` counts as
  positives only the held-out skills among a query's positives, ``seen`` only the trained ones; the positives
  of the other half are removed from that query's ranking (neither hits nor misses), and a query left without
  a positive is left out;
* a task whose queries are skills and whose targets are occupations (Skill2Job): ``unseen`` keeps the queries
  whose skill is held out, ``seen`` those whose skill was trained;
* tasks with no skill on either side (JobNorm) have no view.

Targets and queries are matched to the vocabulary with ``resolve`` (text -> skill index or None); a text that
does not resolve belongs to neither half.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from uwe_lightning.workbench.dataset import RankingDataset

#: Which side of each task holds the skills the holdout splits on.
SKILL_TARGETS = ("Job2Skill", "Job2Skill@open", "SkillNorm", "SkillNorm@heldout", "SkillExtr-T", "SkillExtr-H",
                 "SkillSim")
SKILL_QUERIES = ("Skill2Job", "Skill2Job@open")
VIEWS = ("unseen", "seen")

Resolve = Callable[[str], "int | None"]


def _halves(texts: list[str], resolve: Resolve, held_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per text: (is an unseen skill, is a seen skill)."""
    held = set(int(i) for i in held_out)
    index = [resolve(t) for t in texts]
    unseen = np.fromiter((i is not None and i in held for i in index), bool, len(texts))
    seen = np.fromiter((i is not None and i not in held for i in index), bool, len(texts))
    return unseen, seen


def restrict_positives(ds: RankingDataset, counted: np.ndarray) -> RankingDataset | None:
    """Positives = those among ``counted`` targets; the query's other positives are excluded from its ranking;
    queries without a counted positive are dropped (None when none is left)."""
    queries, labels, exclude = [], [], []
    for i, row in enumerate(ds.labels):
        kept = [j for j in row if counted[j]]
        if not kept:
            continue
        queries.append(ds.queries[i])
        labels.append(kept)
        other = [j for j in row if not counted[j]]
        exclude.append(sorted({*other, *(ds.exclude[i] if ds.exclude is not None else [])}))
    if not queries:
        return None
    return RankingDataset(ds.task, ds.split, queries, list(ds.targets), labels, exclude=exclude, meta={**ds.meta})


def restrict_queries(ds: RankingDataset, keep: Iterable[bool]) -> RankingDataset | None:
    rows = [i for i, k in enumerate(keep) if k]
    if not rows:
        return None
    return RankingDataset(ds.task, ds.split, [ds.queries[i] for i in rows], list(ds.targets),
                          [list(ds.labels[i]) for i in rows],
                          exclude=None if ds.exclude is None else [ds.exclude[i] for i in rows], meta={**ds.meta})


def holdout_views(held_out: np.ndarray, resolve: Resolve) -> dict[str, Callable[[str, RankingDataset], RankingDataset | None]]:
    """The ``unseen`` and ``seen`` views (:data:`~uwe_lightning.workbench.runner.View`) of a holdout."""

    def view(which: int) -> Callable[[str, RankingDataset], RankingDataset | None]:
        def restrict(task: str, ds: RankingDataset) -> RankingDataset | None:
            if task in SKILL_TARGETS:
                return restrict_positives(ds, _halves(ds.targets, resolve, held_out)[which])
            if task in SKILL_QUERIES:
                return restrict_queries(ds, _halves(ds.queries, resolve, held_out)[which])
            return None

        return restrict

    return {"unseen": view(0), "seen": view(1)}

