"""A sweep's numbers per group: per task and macro MAP / RP@10 and knowledge gain, reduced over seeds, and the
rows each run's ``results.json`` holds beside its model (the zero-shot step 0, the popularity / TF-IDF baselines).

"macro" is the average a run is judged by (:func:`~uwe_lightning.workbench.report.headline_average`): the WorkBench
macro average, or for a run on one's own graph (no WorkBench task) the average of its held-out edges.

The result is plain data (``report.json``): scores in percent, as ``results.json`` (read through
:mod:`uwe_lightning.workbench.metric_names`, which converts older runs' fractions), and
for every cell its ``n``, so a partial sweep shows how many seeds each number rests on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from uwe_lightning.io import ConfigError
from uwe_lightning.studies.curves import MIN_POINTS, has_curve
from uwe_lightning.studies.runs import ABSENT, Group, Grouping, Run, first_seen, format_value
from uwe_lightning.studies.stats import summarize
from uwe_lightning.workbench import metric_names as names
from uwe_lightning.workbench.report import headline_average

METRICS = names.METRICS
METRIC_NAMES = names.LABELS
KINDS = ("auto", "bars", "curve", "heatmap", "learning", "none")
TAU_KEY, SCORER_KEY, GRAPHS_KEY = "scorer.tau", "scorer.name", "data.graphs"
STEP0_ROW = "zero-shot (step 0)"  # results.json "step0": the backbone before training, on the same test queries


def jsonable(value: Any) -> Any:
    return None if value is ABSENT else value


def has_knowledge_gain(run: Run) -> bool:
    gain = run.results.get("knowledge_gain")
    return isinstance(gain, dict) and isinstance(gain.get("tasks"), dict)


def choose_kind(grouping: Grouping, runs: Sequence[Run], requested: str = "auto") -> str:
    """The plot for what the sweep varied: a temperature curve (``scorer.tau``), a knowledge-gain heatmap
    (``data.graphs`` with ``knowledge_gain``), learning curves when every run validated often enough, else bars
    per group (``loss.name``, ``scorer.name``, ...)."""
    if requested not in KINDS:
        raise ConfigError(f"kind={requested}: unknown plot kind; use one of {', '.join(KINDS)}")
    gain = any(has_knowledge_gain(run) for run in runs)
    if requested == "curve" and not any(TAU_KEY in run.flat for run in runs):
        raise ConfigError(f"kind=curve needs {TAU_KEY} in the runs' configs; none of the runs has it")
    if requested == "learning" and not all(has_curve(run) for run in runs):
        raise ConfigError(f"kind=learning needs at least {MIN_POINTS} validations in every run's val_history.jsonl "
                          "(validation.every_n_steps)")
    if requested == "heatmap" and not gain:
        raise ConfigError("kind=heatmap needs knowledge_gain in results.json (train with "
                          "test.knowledge_gain=true)")
    if requested != "auto":
        return requested
    if TAU_KEY in grouping.keys:
        return "curve"
    if GRAPHS_KEY in grouping.keys and gain:
        return "heatmap"
    if all(has_curve(run) for run in runs):
        return "learning"
    return "bars"


def _cell(values: list[Any]) -> dict[str, Any]:
    return summarize(values).to_dict()


def _metric(mapping: Any, metric: str) -> Any:
    return mapping.get(metric) if isinstance(mapping, dict) else None


def run_average(results: dict[str, Any]) -> dict[str, Any]:
    """The average a run is judged by: WorkBench macro, or its own held-out edges (``headline_average``)."""
    average = headline_average(results)
    return average if isinstance(average, dict) else {}


def beside_results(run: Run) -> dict[str, dict[str, Any]]:
    """What the run's results.json holds beside its model, by row name: step 0, then each baseline."""
    rows: dict[str, dict[str, Any]] = {}
    if isinstance(run.results.get("step0"), dict):
        rows[STEP0_ROW] = run.results["step0"]
    for name, res in (run.results.get("baselines") or {}).items():
        if isinstance(res, dict) and isinstance(res.get("tasks"), dict):
            rows[str(name)] = res
    return rows


def beside_cells(runs: Sequence[Run], tasks: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per row beside the model (step 0, baselines), per task and average, each metric over the runs that hold
    it (``n`` says how many)."""
    by_run = [beside_results(run) for run in runs]
    names = first_seen(by_run)
    cells: dict[str, dict[str, Any]] = {}
    for name in names:
        held = [rows[name] for rows in by_run if name in rows]
        cells[name] = {
            "tasks": {t: {m: _cell([_metric(res["tasks"].get(t), m) for res in held]) for m in METRICS}
                      for t in tasks},
            "macro": {m: _cell([_metric(run_average(res), m) for res in held]) for m in METRICS},
            "ties": first_seen([[res["ties"]] for res in held if res.get("ties")]),
        }
    return cells


def aggregate_group(group: Group, tasks: Sequence[str]) -> dict[str, Any]:
    """One group's cells: per task and macro, each metric summarised over the group's runs (seeds)."""
    runs = group.runs
    out: dict[str, Any] = {
        "label": group.label,
        "values": {key: jsonable(value) for key, value in group.values.items()},
        "labels": {key: format_value(value) for key, value in group.values.items()},
        "n_runs": len(runs),
        "seeds": [run.seed for run in runs],
        "runs": [str(run.path) for run in runs],
        "scorer": {"name": runs[0].flat.get(SCORER_KEY), "tau": runs[0].flat.get(TAU_KEY)},
        "tasks": {
            task: {m: _cell([_metric(run.results["tasks"].get(task), m) for run in runs]) for m in METRICS}
            for task in tasks
        },
        "macro": {m: _cell([_metric(run_average(run.results), m) for run in runs]) for m in METRICS},
        "macro_covers": first_seen(run_average(run.results).get("covers", []) for run in runs),
        "beside": beside_cells(runs, tasks),
    }
    seeds = [s for s in out["seeds"] if s is not None]
    out["duplicate_seeds"] = sorted({s for s in seeds if seeds.count(s) > 1}, key=str)
    gain_runs = [run for run in runs if has_knowledge_gain(run)]
    if gain_runs:
        gains = [run.results["knowledge_gain"] for run in gain_runs]
        gain_tasks = first_seen(g["tasks"] for g in gains)
        out["knowledge_gain"] = {
            "tasks": {t: _cell([_metric(g["tasks"].get(t), "gain") for g in gains]) for t in gain_tasks},
            "macro": _cell([_metric(g.get("macro"), "gain") for g in gains]),
            "macro_step0": _cell([_metric(g.get("macro"), "map_step0") for g in gains]),
        }
    else:
        out["knowledge_gain"] = None
    out["views"] = aggregate_views(runs)
    return out


def view_names(runs: Sequence[Run]) -> list[str]:
    """The evaluation views (``results["views"]``: seen / unseen skills, overlap) any run has, first seen first."""
    return first_seen((run.results.get("views") or {}) for run in runs)


def _view_map(results: Any, view: str, task: str) -> Any:
    block = (results or {}).get("views", {}).get(view, {}) if isinstance(results, dict) else {}
    return _metric(block.get("tasks", {}).get(task), "map")


def aggregate_views(runs: Sequence[Run]) -> dict[str, Any]:
    """Per view and task: MAP of the trained model, of its step-0 model (``results["step0"]["views"]``) and the
    gain between them run by run, each summarised over the runs (seeds)."""
    out: dict[str, Any] = {}
    for view in view_names(runs):
        tasks = first_seen(run.results["views"].get(view, {}).get("tasks", {}) for run in runs
                           if run.results.get("views"))
        out[view] = {
            task: {
                "map": _cell([_view_map(run.results, view, task) for run in runs]),
                "map_step0": _cell([_view_map(run.results.get("step0"), view, task) for run in runs]),
                "gain": _cell([_diff(_view_map(run.results, view, task), _view_map(run.results.get("step0"), view, task))
                               for run in runs]),
                "n_queries": sorted({row["n_queries"] for run in runs
                                     if (row := (run.results.get("views") or {}).get(view, {}).get("tasks", {}).get(task))}),
            }
            for task in tasks
        }
    return out


def paired_differences(reference: Group, other: Group) -> dict[str, Any]:
    """``other`` minus ``reference`` per seed they share, summarised over those seeds (macro MAP / RP@10).

    A sweep that changes only the loss or the scorer draws the same batches for the same seed, so the paired
    differences cancel the batch-to-batch spread that the per-group CIs carry.
    """
    def by_seed(group: Group) -> dict[Any, Run]:
        return {run.seed: run for run in group.runs if run.seed is not None}

    ref, oth = by_seed(reference), by_seed(other)
    seeds = [s for s in oth if s in ref]
    tasks = first_seen(oth[s].results["tasks"] for s in seeds)
    views = view_names([oth[s] for s in seeds])
    return {
        "reference": reference.label,
        "seeds": seeds,
        "macro": {m: _cell([_diff(_metric(run_average(oth[s].results), m), _metric(run_average(ref[s].results), m))
                            for s in seeds]) for m in METRICS},
        "tasks": {t: {"map": _cell([_diff(_metric(oth[s].results["tasks"].get(t), "map"),
                                          _metric(ref[s].results["tasks"].get(t), "map")) for s in seeds])}
                  for t in tasks},
        "views": {v: {t: _cell([_diff(_view_map(oth[s].results, v, t), _view_map(ref[s].results, v, t))
                                for s in seeds])
                      for t in first_seen(oth[s].results["views"].get(v, {}).get("tasks", {}) for s in seeds)}
                  for v in views},
    }


def _diff(a: Any, b: Any) -> float | None:
    return a - b if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None


def aggregate(grouping: Grouping, runs: Sequence[Run]) -> dict[str, Any]:
    """Every group's cells plus what the tables and plots need to lay them out (task order, unavailable)."""
    tasks = first_seen(run.results["tasks"] for run in runs)
    unavailable = first_seen(run.results.get("unavailable") or {} for run in runs)
    gain_tasks = first_seen(run.results["knowledge_gain"]["tasks"] for run in runs if has_knowledge_gain(run))
    groups = [aggregate_group(group, tasks) for group in grouping.groups]
    for cells, group in zip(groups[1:], grouping.groups[1:], strict=True):
        cells["paired"] = paired_differences(grouping.groups[0], group)
    return {
        "tasks": tasks,
        "unavailable": [t for t in unavailable if t not in tasks],
        "knowledge_gain_tasks": gain_tasks,
        "groups": groups,
    }
