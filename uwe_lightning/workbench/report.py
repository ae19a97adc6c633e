"""WorkBench results as files: ``results.json`` + ``results.md``, and the knowledge gain over a step-0 model.

``results.json`` is strict JSON (a NaN or infinity is written as null; Python's ``json`` would write ``NaN``,
which other readers reject); its scores are in percent and it says so (``"unit": "percent"``;
:mod:`~uwe_lightning.workbench.metric_names`); a results dict of the metrics library (fractions) is converted
when written or shown, so every function here takes either. A results file already in place is never overwritten silently: it is kept beside
the new one under its modification time (``results.20261201T213000.json``) and the rename is logged.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
from pathlib import Path
from typing import Any

from uwe_lightning.integrity import data_fingerprint
from uwe_lightning.io import atomic_write_text, strict_json
from uwe_lightning.workbench.metric_names import in_percent
from uwe_lightning.workbench.registry import OWN_SUITE

RESULTS_FILE = "results.json"

log = logging.getLogger(__name__)


def keep_previous(path: str | os.PathLike) -> Path | None:
    """Rename an existing ``path`` to ``<stem>.<its mtime, %Y%m%dT%H%M%S>[-n]<suffix>``; returns the new name.

    Why: an evaluation or a publish into a directory that already holds results must not destroy them.
    """
    path = Path(path)
    if not path.is_file():
        return None
    stamp = dt.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y%m%dT%H%M%S")
    kept = path.with_name(f"{path.stem}.{stamp}{path.suffix}")
    n = 0
    while kept.exists():
        n += 1
        kept = path.with_name(f"{path.stem}.{stamp}-{n}{path.suffix}")
    os.replace(path, kept)
    log.warning("kept the previous %s as %s", path, kept.name)
    return kept


def _pct(x: float | None) -> str:
    """A score already in percent, two decimals."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


#: Headings of the zero-shot suites' own tables (a suite not listed is headed by its name).
SUITE_TITLES = {"onet": "O*NET 29.2", OWN_SUITE: "Own graph"}


def _zero_shot_suite_of(results: dict) -> dict[str, str]:
    """Task -> its zero-shot suite, for every task a zero-shot suite of ``results`` covers or names as missing."""
    return {name: suite for suite, average in results.get("suites", {}).items()
            for name in [*average.get("covers", []), *average.get("not_covered", [])]}


def _task_rows(results: dict, keep) -> list[str]:
    rows = []
    for name, r in results["tasks"].items():
        if keep(name):
            rows.append(f"| {name} | {_pct(r['map'])} | {_pct(r['rp@10'])} | {r['n_queries']:,} | "
                        f"{r['n_targets']:,} | {r['seconds']:.1f} |")
    for name, r in results.get("no_queries", {}).items():
        if keep(name):
            rows.append(f"| {name} | no queries | no queries | 0 | {r.get('n_targets', 0):,} | - |")
    rows += [f"| {name} | n/a | n/a | - | - | - |" for name in results.get("unavailable", {}) if keep(name)]
    return rows


def results_markdown(results: dict, title: str) -> str:
    """The results as Markdown: the WorkBench table with its macro average, then one table per zero-shot suite
    (O*NET), each with its own average; a zero-shot task never enters the WorkBench macro average."""
    results = in_percent(results)
    head = ["| task | MAP | RP@10 | queries | targets | seconds |", "|---|---:|---:|---:|---:|---:|"]
    lines = [f"### {title}", "", f"split: `{results['split']}`, model: `{results['model']}`"
             + (f", at most {results['max_queries']} queries per task" if results.get("max_queries") else ""), ""]
    zero_shot = _zero_shot_suite_of(results)
    workbench_rows = _task_rows(results, lambda name: name not in zero_shot)
    macro = results["macro"]
    if workbench_rows or not zero_shot:
        lines += [*head, *workbench_rows]
        lines.append(f"| **macro average** | **{_pct(macro.get('map'))}** | **{_pct(macro.get('rp@10'))}** | | | |")
        lines += ["", f"Macro average (task types averaged first; SkillExtr-H/-T form one type) covers: "
                  f"{', '.join(macro.get('covers', []))}."]
    for suite, average in results.get("suites", {}).items():
        kind = "held-out edges of your graph" if suite == OWN_SUITE else "zero-shot"
        lines += ["", f"#### {SUITE_TITLES.get(suite, suite)} ({kind}; not in the WorkBench macro average)", "",
                  *head, *_task_rows(results, lambda name, suite=suite: zero_shot.get(name) == suite),
                  f"| **{suite} average** | **{_pct(average.get('map'))}** | **{_pct(average.get('rp@10'))}** "
                  "| | | |", ""]
    if results.get("ties") == "expected":
        lines.append(f"- Tied scores: {TIES_EXPECTED_NOTE}")
    lines += baselines_markdown(results)
    lines += views_markdown(results)
    for name, reason in results.get("unavailable", {}).items():
        lines.append(f"- {name} unavailable: {reason}")
    for name, r in results.get("no_queries", {}).items():
        lines.append(f"- {name}: no queries ({r.get('reason', 'empty split')}); left out of the macro average")
    s = results.get("seconds", {})
    if "encode_distinct_texts" in s:
        lines.append(f"- Encoding {s.get('n_distinct_texts', 0):,} distinct texts once: "
                     f"{s.get('encode_distinct_texts', 0):.1f} s; total {s.get('total', 0):.1f} s. "
                     "Per-task seconds = scoring + metrics only.")
    elif "total" in s:  # a runner that encodes per task (WorkRB)
        lines.append(f"- Total {s['total']:.1f} s; per-task seconds include encoding.")
    return "\n".join(lines) + "\n"


TIES_EXPECTED_NOTE = ("MAP and RP@10 are their exact expectation over a uniformly random order within each group of "
                      "equal scores (ties=expected), not the order of the target file.")


def baselines_markdown(results: dict) -> list[str]:
    """The model beside its baselines (popularity prior, TF-IDF) on the same tasks: MAP / RP@10 per task.

    >>> row = {"tasks": {"edges": {"map": 0.5, "rp@10": 0.25}}}
    >>> baselines_markdown({"model": "m", **row, "baselines": {"popularity": row}})[-2]
    '| popularity | edges | 50.00 | 25.00 |'
    """
    if not results.get("baselines"):
        return []
    results = in_percent(results)
    lines = ["", "#### Beside the baselines (same tasks and queries)", "", "| model | task | MAP | RP@10 |",
             "|---|---|---:|---:|"]
    step0 = [("zero-shot (step 0)", results["step0"])] if results.get("step0") else []
    for name, res in [(results.get("model", "model"), results), *step0, *results["baselines"].items()]:
        lines += [f"| {name} | {task} | {_pct(r['map'])} | {_pct(r['rp@10'])} |" for task, r in res["tasks"].items()]
    expected = [name for name, res in results["baselines"].items() if res.get("ties") == "expected"]
    if expected:
        lines += ["", f"Tied scores of {', '.join(expected)}: {TIES_EXPECTED_NOTE}"]
    return [*lines, ""]


def model_index_rows(results: dict) -> list[dict[str, Any]]:
    """The measured test numbers as model-card rows (the card's ``model-index``): one per task that has a
    MAP, then the WorkBench macro average and each zero-shot suite's average; nothing that was not measured.

    >>> rows = model_index_rows({"split": "test", "max_queries": 2000, "seed": 0,
    ...     "tasks": {"JobNorm": {"map": 0.5, "rp@10": 0.25, "n_queries": 2000, "n_queries_total": 15461}},
    ...     "macro": {"map": 0.5, "rp@10": 0.25, "covers": ["JobNorm"]}})
    >>> [(r["benchmark"], r["task"], r["map"], r["args"]) for r in rows]
    [('WorkBench', 'JobNorm', 50.0, {'max_queries': 2000, 'seed': 0}), ('WorkBench', 'macro average', 50.0, {'max_queries': 2000, 'seed': 0})]
    """
    results = in_percent(results)  # the card shows percent
    zero_shot = _zero_shot_suite_of(results)
    args = {"max_queries": results["max_queries"]} if results.get("max_queries") else {}
    if args and results.get("seed") is not None:
        args["seed"] = results["seed"]  # which fixed subset of queries
    split = results.get("split", "test")

    def row(task: str, suite: str | None, r: dict, what: str) -> dict[str, Any]:
        benchmark = "WorkBench" if suite is None else SUITE_TITLES.get(suite, suite)
        return {"benchmark": benchmark, "dataset_type": "workbench" if suite is None else f"workbench-{suite}",
                "task": task, "what": what, "split": split, "map": r.get("map"), "rp@10": r.get("rp@10"),
                "args": args}

    rows = [row(name, zero_shot.get(name), r, "ranking") for name, r in results.get("tasks", {}).items()
            if r.get("map") is not None]
    macro = results.get("macro") or {}
    if macro.get("map") is not None:
        rows.append(row("macro average", None, macro, "task types averaged first"))
    rows += [row(f"{suite} average", suite, average, "zero-shot suite average")
             for suite, average in (results.get("suites") or {}).items() if average.get("map") is not None]
    return rows


def card_markdown(results: dict, title: str) -> str:
    """:func:`results_markdown` for a published model card: a task that could not be evaluated keeps its
    one-clause reason, without the data directory the full reason points at."""
    short = {name: str(reason).split(":", 1)[0] for name, reason in (results.get("unavailable") or {}).items()}
    return results_markdown({**results, "unavailable": short}, title)


def views_markdown(results: dict) -> list[str]:
    """The evaluation views (``results["views"]``: seen / unseen skills of a holdout, ...): MAP per task and view,
    beside the step-0 model's on the same view when it was evaluated.

    >>> res = {"tasks": {"Job2Skill": {"map": 0.3}}, "views": {"unseen": {"tasks": {"Job2Skill": {"map": 0.2,
    ...        "n_queries": 7}}}}}
    >>> views_markdown(res)[-2]
    '| Job2Skill | 30.00 | unseen | 20.00 | 7 | - |'
    """
    if not results.get("views"):
        return []
    results = in_percent(results)
    step0 = (results.get("step0") or {}).get("views", {})
    lines = ["", "#### Views (same splits and embeddings; not in the macro average)", "",
             "| task | MAP (all queries) | view | MAP | queries | step 0 |", "|---|---:|---|---:|---:|---:|"]
    for view, block in results["views"].items():
        for task, row in block["tasks"].items():
            before = step0.get(view, {}).get("tasks", {}).get(task)
            lines.append(f"| {task} | {_pct(results['tasks'].get(task, {}).get('map'))} | {view} | {_pct(row['map'])} "
                         f"| {row['n_queries']} | {_pct(before['map'] if before else None)} |")
    return [*lines, ""]


def headline_average(results: dict) -> dict:
    """The average a run is judged by: the WorkBench macro, or (no WorkBench task: a ``data=edges`` run) the
    average of its own held-out edges (suite ``own``).

    >>> headline_average({"macro": {"map": None}, "suites": {"own": {"map": 0.5}}})
    {'map': 0.5}
    """
    macro = results.get("macro") or {}
    if macro.get("map") is None and OWN_SUITE in (results.get("suites") or {}):
        return results["suites"][OWN_SUITE]
    return macro


def write_results(results: dict, out_dir, title: str) -> tuple[Path, Path]:
    """Write results.json (strict JSON) and results.md atomically into ``out_dir``; files already there are
    kept under their modification time (:func:`keep_previous`), not overwritten. ``results.json`` records the
    fingerprint of the data files read (:func:`~uwe_lightning.integrity.data_fingerprint`)."""
    out = Path(out_dir)
    json_path, md_path = out / RESULTS_FILE, out / "results.md"
    results = {**in_percent(results), "data_pack": results.get("data_pack") or data_fingerprint()}  # evaluated on
    text, markdown = strict_json(results, indent=2), results_markdown(results, title)  # fail before renaming
    for path, content in ((json_path, text), (md_path, markdown)):
        keep_previous(path)
        atomic_write_text(path, content)
    return json_path, md_path


def knowledge_gain(final: dict, base: dict) -> dict[str, Any]:
    """MAP(final) - MAP(step 0) per task and for the macro average (paper section 7).

    >>> gain = knowledge_gain({"tasks": {"A": {"map": 0.5}}, "macro": {"map": 0.5}},
    ...                       {"tasks": {"A": {"map": 0.25}}, "macro": {"map": 0.25}})
    >>> gain["tasks"]["A"]
    {'map_final': 0.5, 'map_step0': 0.25, 'gain': 0.25}
    >>> gain["macro"]["gain"]
    0.25
    """
    rows = {}
    for task, row in final["tasks"].items():
        if task in base["tasks"]:
            before = float(base["tasks"][task]["map"])
            rows[task] = {
                "map_final": float(row["map"]),
                "map_step0": before,
                "gain": float(row["map"]) - before,
            }
    f, b = float(headline_average(final)["map"]), float(headline_average(base)["map"])
    return {"tasks": rows, "macro": {"map_final": f, "map_step0": b, "gain": f - b}}


def knowledge_gain_markdown(gain: dict) -> str:
    """:func:`knowledge_gain` as a table; ``gain`` in percent (``in_percent(results)["knowledge_gain"]``)."""
    lines = [
        "### Knowledge gain: MAP(final) - MAP(step 0)",
        "",
        "| task | step 0 | final | gain |",
        "|---|---:|---:|---:|",
    ]
    for task, r in {**gain["tasks"], "macro average": gain["macro"]}.items():
        lines.append(
            f"| {task} | {r['map_step0']:.2f} | {r['map_final']:.2f} | {r['gain']:+.2f} |"
        )
    return "\n".join(lines) + "\n"
