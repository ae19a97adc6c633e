"""The one metric vocabulary of a run: names and unit of every score a run logs or writes.

Names are ``<stage>/<task>/<metric>`` with ``macro`` in place of a task for the task-type average:
``val/JobNorm/map``, ``val/macro/map``, ``val/macro/rp@10``, ``test/SkillNorm/map``, ``test/macro/rp@10``.
Every sink uses them (console, progress bar, CSV logger, W&B, ``val_history.jsonl``, ``run_info.json``, the
checkpoint monitor, sweep objectives, campaign and study reports), and every stored score is in **percent**
(34.91, not 0.3491), as the paper's tables.

The ranking metrics themselves (:class:`~uwe_lightning.workbench.metrics.RankingMetrics`,
:func:`~uwe_lightning.workbench.runner.evaluate`) compute fractions, as metric libraries do; a results dict
becomes a run's record through :func:`in_percent`, which marks it ``"unit": "percent"``. Readers of run
directories call :func:`in_percent` / :func:`upgrade_val_record` too, which turns the files of older runs
(fractions, ``val/macro_map``) into this vocabulary, so old and new runs read alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAP = "map"
RP10 = "rp@10"
#: The metrics every task reports, and how a table heads them.
METRICS = (MAP, RP10)
LABELS = {MAP: "MAP", RP10: "RP@10"}
#: The task-type average's place in a name (``val/macro/map``).
MACRO = "macro"
VAL, TEST = "val", "test"

#: The unit of every stored score, and the marker a results dict in it carries (``results["unit"]``).
UNIT = "percent"
UNIT_KEY = "unit"

#: Keys whose numeric values are scores (fractions in the metrics library, percent in a run's files): the
#: ranking metrics, and the knowledge gain's columns (``map_final - map_step0 = gain``).
SCORE_KEYS = frozenset({MAP, RP10, "rp@1", "rp@5", "mrr", "map_final", "map_step0", "gain"})
#: Keys under which a results dict holds no scores (never rescaled): counts, times, configuration.
_NOT_SCORES = frozenset({"seconds", "data_pack", "skill_holdout", "max_queries", "seed", "n_queries", "config"})


def metric_name(stage: str, task: str, metric: str) -> str:
    """``<stage>/<task>/<metric>``; ``task`` is :data:`MACRO` for the task-type average.

    >>> metric_name(VAL, "JobNorm", MAP), metric_name(TEST, MACRO, RP10)
    ('val/JobNorm/map', 'test/macro/rp@10')
    """
    return f"{stage}/{task}/{metric}"


VAL_MACRO_MAP = metric_name(VAL, MACRO, MAP)
VAL_MACRO_RP10 = metric_name(VAL, MACRO, RP10)
TEST_MACRO_MAP = metric_name(TEST, MACRO, MAP)
TEST_MACRO_RP10 = metric_name(TEST, MACRO, RP10)
#: Seconds one validation took (not a score).
VAL_SECONDS = "val/seconds"
#: The checkpoint monitor, the early-stopping and sweep objective: the best validation macro MAP.
MONITOR = VAL_MACRO_MAP

#: Names older runs used (their values were fractions); :func:`upgrade_val_record` maps them.
LEGACY_NAMES = {"val/macro_map": VAL_MACRO_MAP, "val/macro_rp@10": VAL_MACRO_RP10}


def percent(fraction: float | None) -> float | None:
    """A fraction as percent (None stays None).

    >>> percent(0.34912), percent(None)
    (34.912, None)
    """
    return None if fraction is None else 100.0 * float(fraction)


def _scaled(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (v if k in _NOT_SCORES else (percent(v) if k in SCORE_KEYS and _number(v) else _scaled(v)))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_scaled(v) for v in value]
    return value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_percent(results: Mapping[str, Any]) -> bool:
    return results.get(UNIT_KEY) == UNIT


def in_percent(results: Mapping[str, Any]) -> dict[str, Any]:
    """A results dict (:func:`~uwe_lightning.workbench.runner.evaluate`'s layout, or a ``results.json``) with
    every score in percent and marked ``"unit": "percent"``; one already marked is returned as it is, so this
    is safe to call on what a run wrote and on what an older run wrote (fractions, no marker).

    >>> r = in_percent({"tasks": {"A": {"map": 0.5, "rp@10": 0.25, "n_queries": 3}}, "macro": {"map": 0.5}})
    >>> r["tasks"]["A"], r["macro"], r["unit"]
    ({'map': 50.0, 'rp@10': 25.0, 'n_queries': 3}, {'map': 50.0}, 'percent')
    >>> in_percent(r) == r
    True
    """
    if is_percent(results):
        return dict(results)
    return {**_scaled(dict(results)), UNIT_KEY: UNIT}


def val_metrics(results: Mapping[str, Any], average: Mapping[str, Any]) -> dict[str, float]:
    """One validation as logged scalars: ``val/<task>/<metric>`` and ``val/macro/<metric>``, in percent.
    ``average``: the average the run is judged by (the WorkBench macro, or a ``data=edges`` run's own).

    >>> val_metrics({"tasks": {"JobNorm": {"map": 0.5, "rp@10": 0.25}}}, {"map": 0.5, "rp@10": 0.25})
    {'val/JobNorm/map': 50.0, 'val/JobNorm/rp@10': 25.0, 'val/macro/map': 50.0, 'val/macro/rp@10': 25.0}
    """
    scaled = in_percent({"tasks": results["tasks"], "average": dict(average)})
    out: dict[str, float] = {}
    for task, row in scaled["tasks"].items():
        for metric in METRICS:
            out[metric_name(VAL, task, metric)] = float(row[metric])
    for metric in METRICS:
        value = scaled["average"].get(metric)
        out[metric_name(VAL, MACRO, metric)] = float("nan") if value is None else float(value)
    return out


def test_metrics(results: Mapping[str, Any], average: Mapping[str, Any]) -> dict[str, float]:
    """The final test as summary scalars: ``test/<task>/<metric>`` and ``test/macro/<metric>`` (percent).

    >>> test_metrics({"tasks": {"A": {"map": 50.0, "rp@10": 25.0}}, "unit": "percent"}, {"map": 50.0})
    {'test/A/map': 50.0, 'test/A/rp@10': 25.0, 'test/macro/map': 50.0}
    """
    scaled = in_percent({"tasks": results["tasks"], "average": dict(average),
                         **({UNIT_KEY: UNIT} if is_percent(results) else {})})
    out = {metric_name(TEST, task, m): row[m] for task, row in scaled["tasks"].items() for m in METRICS if m in row}
    out.update({metric_name(TEST, MACRO, m): scaled["average"][m] for m in METRICS
                if scaled["average"].get(m) is not None})
    return out


test_metrics.__test__ = False  # type: ignore[attr-defined]  # a name pytest would collect


def upgrade_val_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """One validation record (a line of ``val_history.jsonl``, a ``best_val``) in this vocabulary: a record
    with the old names (``val/macro_map``) held fractions, so its ``val/<...>/map|rp@10`` scores become percent
    and the old names the new ones; a current record is returned as it is.

    >>> upgrade_val_record({"step": 50, "val/JobNorm/map": 0.3, "val/macro_map": 0.3, "val/seconds": 2.0})
    {'step': 50, 'val/JobNorm/map': 30.0, 'val/seconds': 2.0, 'val/macro/map': 30.0}
    """
    if not any(old in record for old in LEGACY_NAMES):
        return dict(record)
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = LEGACY_NAMES.get(key, key)
        is_score = name.startswith(f"{VAL}/") and name.rsplit("/", 1)[-1] in SCORE_KEYS and _number(value)
        if key in LEGACY_NAMES:
            continue
        out[name] = percent(value) if is_score else value
    for old, new in LEGACY_NAMES.items():
        if old in record:
            out[new] = percent(record[old]) if _number(record[old]) else record[old]
    return out


def upgrade_run_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A ``run_info.json`` ``summary`` in this vocabulary: one written before scores were percent (no
    ``"unit"`` in it) has its test scores, knowledge gain and validation records converted.

    >>> old = {"best_val": {"step": 2, "val/macro_map": 0.4}, "test_macro": {"map": 0.3, "covers": ["A"]},
    ...        "selection": {"exported_val": 0.4, "step0_val": 0.2, "exported_step": 2}}
    >>> new = upgrade_run_summary(old)
    >>> new["best_val"], new["test_macro"], new["selection"]["step0_val"], new["unit"]
    ({'step': 2, 'val/macro/map': 40.0}, {'map': 30.0, 'covers': ['A']}, 20.0, 'percent')
    """
    if is_percent(summary) or not summary:
        return dict(summary)
    out = dict(summary)
    for key in ("best_val", "val_step0"):
        if isinstance(out.get(key), Mapping):
            out[key] = upgrade_val_record(out[key])
    scored = {k: out[k] for k in ("test_macro", "test_tasks", "knowledge_gain") if isinstance(out.get(k), Mapping)}
    out.update({k: v for k, v in _scaled(scored).items()})
    if isinstance(out.get("selection"), Mapping):
        sel = dict(out["selection"])
        sel.update({k: percent(sel[k]) for k in ("exported_val", "step0_val") if _number(sel.get(k))})
        out["selection"] = sel
    out[UNIT_KEY] = UNIT
    return out
