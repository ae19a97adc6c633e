"""Run WorkBench: load tasks, score each query block against its target space, aggregate metrics.

Models plug in through :class:`RankingModel` (``prepare`` once with every distinct text of the run, then
``score_blocks`` per task). Neural models go through :class:`EncoderRankingModel`, which embeds each distinct
text once per run (length-sorted batches) and scores with the same :class:`~uwe_lightning.ranking.ranker.Ranker`
code path that users and ``make bench`` use. Scores are produced block by block: the full query x target matrix
is never held in memory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from uwe_lightning.io import ConfigError, check_whole_number
from uwe_lightning.paths import derived_dir, published_dir
from uwe_lightning.workbench.dataset import SPLITS, RankingDataset, TaskUnavailable
from uwe_lightning.workbench.derived import load_derived_split
from uwe_lightning.workbench.metrics import TIE_RULES, RankingMetrics, macro_average
from uwe_lightning.workbench.registry import OWN_SUITE, TASKS, WORKBENCH_SUITE, get_task, task_suite
from uwe_lightning.workbench.tables import load_published_split

#: The paper's seven WorkBench subtasks, in Table 2's order.
WORKBENCH_TASKS = ("Job2Skill", "Skill2Job", "JobNorm", "SkillNorm", "SkillSim", "SkillExtr-T", "SkillExtr-H")


class RankingModel(Protocol):
    """What the runner scores. A model may also say how its tied scores are ranked (``ties``, see
    :data:`~uwe_lightning.workbench.metrics.TIE_RULES`; default ``first``): the popularity prior, whose scores
    tie by construction, says ``expected``."""

    name: str

    def prepare(self, texts: Sequence[str], show_progress: bool = False) -> None:
        """Called once per run with every distinct text (queries and targets) of all tasks."""

    def score_blocks(
        self, queries: Sequence[str], targets: Sequence[str], block_size: int
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (first query row, scores [b, len(targets)]) blocks."""


class EncoderRankingModel:
    """Adapter from a :class:`Ranker` to the runner: each distinct text is embedded once per run.

    Scores are the float32 fast path's (``precision="fp32"``) whatever the ranker's storage precision, so a
    WorkBench number is the exact scorer's (reduced precision may reorder near-ties; its cost is measured in
    experiments/results/fast/agreement.md, and ``exact=False`` scores with the ranker's own setting).
    """

    def __init__(self, ranker, name: str | None = None, exact: bool = True) -> None:
        self.ranker = ranker
        self.name = name or getattr(ranker, "model_id", None) or "encoder"
        self._scorer = ranker.exact() if exact and hasattr(ranker, "exact") else ranker
        self._row: dict[str, int] = {}
        self._query_side = None
        self._target_side = None

    def prepare(self, texts: Sequence[str], show_progress: bool = False) -> None:
        texts = list(dict.fromkeys(texts))
        self._row = {t: i for i, t in enumerate(texts)}
        if getattr(self.ranker, "side_dependent", False):  # side prompts or a query backend (ONNX)
            self._query_side = self.ranker.encode(texts, "query", show_progress=show_progress)
            self._target_side = self.ranker.encode(texts, "target", show_progress=show_progress)
            return
        tokens = self.ranker.embed(texts, show_progress=show_progress)
        self._query_side = self.ranker.pack(tokens, "query")
        # Packing depends only on whether a side is pooled: share it when both sides agree (halves memory).
        same = self.ranker.pooled("query") == self.ranker.pooled("target")
        self._target_side = self._query_side if same else self.ranker.pack(tokens, "target")
        del tokens

    def _rows(self, texts: Sequence[str]) -> list[int]:
        missing = [t for t in texts if t not in self._row]
        if missing:
            raise KeyError(f"{len(missing)} texts were not prepared (first: {missing[0]!r}); call prepare() first")
        return [self._row[t] for t in texts]

    def score_blocks(self, queries, targets, block_size):
        q = self._query_side.select(self._rows(queries))
        y = self._target_side.select(self._rows(targets))
        yield from self._scorer.score_blocks(q, y, block_size=block_size)


TaskOptions = Mapping[str, Mapping[str, Any]]
#: A view of a split: (task name, its evaluated split) -> a restriction of it (fewer queries, other positives,
#: more excluded targets), or None when the view does not apply to that task. Scored with the same embeddings.
View = Callable[[str, RankingDataset], "RankingDataset | None"]


def load_tasks(
    tasks: Sequence[str], split: str, data_dir=None, task_options: TaskOptions | None = None
) -> tuple[dict[str, RankingDataset], dict[str, str]]:
    """Build each task's split; unavailable tasks are returned with their reason, never dropped silently.

    ``task_options``: per task name, the options it is built with (``get_task(name, **options)``), e.g. the
    open protocol's fractions for its ``@open`` tasks, so that validation matches the training split.
    """
    if split not in SPLITS:
        raise ConfigError(f"split={split!r}: WorkBench has the splits {list(SPLITS)} (training data is not a split)")
    unknown = [name for name in tasks if name not in TASKS]
    if unknown:
        raise ConfigError(f"tasks: unknown task(s) {unknown}; known tasks: {sorted(TASKS)}")
    datasets: dict[str, RankingDataset] = {}
    unavailable: dict[str, str] = {}
    derived = derived_dir(data_dir)  # an unpacked offline bundle: the splits as compact files, no raw pack
    published = published_dir(data_dir)  # WorkBench as datasets tables (workbench.tables)
    for name in tasks:
        options = dict((task_options or {}).get(name, {}))
        try:
            task = get_task(name, **options)  # an unknown name or option fails here, in either case
            if published is not None and task.suite != OWN_SUITE:  # own edges are read from the user's files
                datasets[name] = load_published_split(published, name, split, options)
            elif derived is not None and task.suite != OWN_SUITE:
                datasets[name] = load_derived_split(derived, name, split, options)
            else:
                datasets[name] = task.load(split, data_dir)
        except TaskUnavailable as err:
            unavailable[name] = str(err)
    return datasets, unavailable


def check_max_queries(max_queries: Any, key: str = "max_queries") -> None:
    """``max_queries`` must be null (every query) or a whole number >= 1: 0 would score nothing (a NaN MAP)."""
    check_whole_number(max_queries, key, optional=True, what=" (null: every query)")


def subsample_indices(n_queries: int, max_queries: int | None, seed: int = 0) -> list[int] | None:
    """The sorted rows of a fixed random subset of ``max_queries`` of ``n_queries`` queries (None: keep all).

    One rule for every runner (WorkBench, the WorkRB bridge), so a seed names the same subset everywhere.
    """
    check_max_queries(max_queries)
    if max_queries is None or n_queries <= max_queries:
        return None
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_queries, size=max_queries, replace=False)).tolist()


def subsample(dataset: RankingDataset, max_queries: int | None, seed: int = 0) -> RankingDataset:
    """A fixed random subset of queries (same for every model with the same seed); targets unchanged."""
    keep = subsample_indices(dataset.n_queries, max_queries, seed)
    if keep is None:
        return dataset
    return RankingDataset(
        task=dataset.task,
        split=dataset.split,
        queries=[dataset.queries[i] for i in keep],
        targets=dataset.targets,
        labels=[dataset.labels[i] for i in keep],
        exclude=None if dataset.exclude is None else [dataset.exclude[i] for i in keep],
        meta={**dataset.meta, "subsampled_from": dataset.n_queries},
    )


def tie_rule(model: RankingModel, ties: str | None = None) -> str:
    """``ties`` when given, else the model's own rule (``model.ties``), else ``first``; checked."""
    rule = ties or getattr(model, "ties", "first")
    if rule not in TIE_RULES:
        raise ConfigError(f"ties={rule!r}: use one of {list(TIE_RULES)} (or null: the model's own rule)")
    return rule


def score_dataset(model: RankingModel, dataset: RankingDataset, block_size: int = 1024, ties: str | None = None
                  ) -> dict:
    """Metrics of one task, accumulated block by block; ``ties``: see :func:`tie_rule`."""
    metrics = RankingMetrics(ks=(10,), ties=tie_rule(model, ties))
    start_time = time.perf_counter()
    for start, block in model.score_blocks(dataset.queries, dataset.targets, block_size):
        stop = start + block.shape[0]
        exclude = None if dataset.exclude is None else dataset.exclude[start:stop]
        metrics.update(block, dataset.labels[start:stop], exclude)
    out = metrics.compute()
    return {
        "map": out["map"],
        "rp@10": out["rp@10"],
        "n_queries": out["n_queries"],
        "n_targets": dataset.n_targets,
        "seconds": round(time.perf_counter() - start_time, 3),
    }


def evaluate(
    model: RankingModel,
    tasks: Sequence[str] = WORKBENCH_TASKS,
    split: str = "test",
    data_dir=None,
    max_queries: int | None = None,
    seed: int = 0,
    block_size: int = 1024,
    show_progress: bool = False,
    task_options: TaskOptions | None = None,
    ties: str | None = None,
    views: Mapping[str, View] | None = None,
) -> dict:
    """Evaluate ``model`` on ``tasks``; returns per-task metrics, unavailable tasks and the macro average.

    ``ties``: how equal scores rank (``first`` | ``expected``; None: the model's own rule, :func:`tie_rule`),
    recorded as ``results["ties"]``.
    ``views``: name -> :data:`View`; each is scored on the same (subsampled) splits and embeddings and
    reported under ``results["views"][name]`` (per task and a macro average over the tasks it applies to),
    never in ``tasks`` or the macro average (e.g. the seen / unseen skills of a skill holdout).

    A split without a query that has a positive (an empty file, every query without labels) has no MAP: it is
    listed under ``no_queries`` with the reason, never as a NaN in ``tasks``, and the macro average, which
    names the tasks it ``covers``, leaves it out like an unavailable task.
    """
    check_max_queries(max_queries)
    ties = tie_rule(model, ties)
    t0 = time.perf_counter()
    datasets, unavailable = load_tasks(tasks, split, data_dir, task_options)
    datasets = {name: subsample(ds, max_queries, seed) for name, ds in datasets.items()}
    load_seconds = time.perf_counter() - t0

    texts = dict.fromkeys(t for ds in datasets.values() if ds.n_queries for t in (*ds.queries, *ds.targets))
    t1 = time.perf_counter()
    if texts:
        model.prepare(list(texts), show_progress=show_progress)
    encode_seconds = time.perf_counter() - t1

    per_task, no_queries = {}, {}
    with _task_bar(len(datasets), split, show_progress) as bar:
        for name, ds in datasets.items():
            bar.set_postfix_str(name)
            n_total = ds.meta.get("subsampled_from", ds.n_queries)
            row = score_dataset(model, ds, block_size, ties) if ds.n_queries else None
            bar.update(1)
            if row is None or not row["n_queries"] or not all(math.isfinite(row[m]) for m in ("map", "rp@10")):
                reason = ("the split has no queries" if not ds.n_queries else
                          f"none of its {ds.n_queries} queries has a positive target")
                no_queries[name] = {"reason": reason, "n_queries": 0, "n_queries_total": n_total,
                                    "n_targets": ds.n_targets}
                if show_progress:
                    bar.write(f"[workbench] {name}/{split}: no queries ({reason}); left out of the macro average")
                continue
            per_task[name] = {**row, "n_queries_total": n_total}
            if show_progress:
                r = per_task[name]
                bar.write(f"[workbench] {name}/{split}: MAP {100 * r['map']:.2f} RP@10 {100 * r['rp@10']:.2f} "
                          f"({r['n_queries']} q x {r['n_targets']} t, {r['seconds']:.1f}s)")
    by_suite = suite_results(per_task, [*unavailable, *no_queries])
    macro = by_suite.pop(WORKBENCH_SUITE, None) or _empty_average([])
    view_results = {name: score_view(model, datasets, view, block_size, ties) for name, view in (views or {}).items()}
    out = {
        "model": model.name,
        "split": split,
        "tasks": per_task,
        "unavailable": unavailable,
        "no_queries": no_queries,
        "macro": macro,
        "suites": by_suite,
        "max_queries": max_queries,
        "ties": ties,
        "seconds": {
            "load": round(load_seconds, 2),
            "encode_distinct_texts": round(encode_seconds, 2),
            "n_distinct_texts": len(texts),
            "total": round(time.perf_counter() - t0, 2),
        },
    }
    if views:
        out["views"] = view_results
    return out


def _task_bar(n_tasks: int, split: str, show: bool):
    """A bar over the tasks being scored (``score test: 3/7 tasks [00:12<00:16]``), shown with ``show_progress``;
    the per-task lines are written above it."""
    from tqdm.auto import tqdm

    return tqdm(total=n_tasks, desc=f"score {split}", unit="task", disable=not show, dynamic_ncols=True)


def score_view(model: RankingModel, datasets: Mapping[str, RankingDataset], view: View, block_size: int,
               ties: str | None = None) -> dict:
    """One view's metrics per task (the tasks it applies to and that keep a query with a positive) and their
    macro average (task groups as in WorkBench)."""
    rows: dict[str, dict] = {}
    for name, ds in datasets.items():
        restricted = view(name, ds) if ds.n_queries else None
        if restricted is None or not restricted.n_queries:
            continue
        row = score_dataset(model, restricted, block_size, ties)
        if row["n_queries"] and all(math.isfinite(row[m]) for m in ("map", "rp@10")):
            rows[name] = {**row, "n_queries_evaluated_split": ds.n_queries}
    average = macro_average(rows, {name: get_task(name).group for name in rows}) if rows else _empty_average([])
    return {"tasks": rows, "macro": average}


def _empty_average(not_covered: list[str]) -> dict:
    return {"map": None, "rp@10": None, "covers": [], "groups": {}, "not_covered": not_covered}


def suite_results(per_task: Mapping[str, Mapping[str, Any]], not_scored: Sequence[str] = ()) -> dict[str, dict]:
    """Per suite, the macro average of its scored tasks and the tasks it does not cover.

    The ``workbench`` entry is the WorkBench macro average (``results["macro"]``); a zero-shot suite (O*NET) is
    averaged on its own and never enters it. A suite appears when one of its tasks was asked for.
    """
    suites: dict[str, dict] = {}
    for name in [*per_task, *not_scored]:
        suites.setdefault(task_suite(name), {})
    for suite in suites:
        scored = {name: row for name, row in per_task.items() if task_suite(name) == suite}
        missing = sorted(name for name in not_scored if task_suite(name) == suite)
        if scored:
            average = macro_average(scored, {name: get_task(name).group for name in scored})
            suites[suite] = {**average, "not_covered": missing}
        else:
            suites[suite] = _empty_average(missing)
    return suites


def evaluate_ranker(ranker, tasks: Sequence[str], split: str, data_dir=None, max_queries: int | None = None,
                    seed: int = 0, show_progress: bool = False, block_size: int = 1024,
                    task_options: TaskOptions | None = None, views: Mapping[str, View] | None = None) -> dict:
    """:func:`evaluate` for a :class:`~uwe_lightning.ranking.ranker.Ranker` (the training validation path)."""
    return evaluate(EncoderRankingModel(ranker), tasks, split, data_dir, max_queries, seed, block_size, show_progress,
                    task_options, views=views)
