"""``report.md``: what was found, how it was grouped, and the tables (percent, one decimal, n per cell).

A cell reads ``38.3 ± 0.2 (n=5)``: mean ± the 95 % CI half width over seeds; a cell resting on one run says
``(n=1, no CI)``, so a partial sweep never passes for a complete one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from uwe_lightning.studies.aggregate import METRIC_NAMES, METRICS
from uwe_lightning.studies.curves import curve_table
from uwe_lightning.workbench.metric_names import TEST_MACRO_MAP

DASH = "–"


def pct(value: float | None, signed: bool = False) -> str:
    """A score (percent) with one decimal.

    >>> pct(38.333), pct(6.0, signed=True), pct(None)
    ('38.3', '+6.0', '–')
    """
    if value is None:
        return DASH
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def ci_cell(cell: dict[str, Any] | None, spread: str = "ci95", signed: bool = False) -> str:
    """``mean ± spread (n=k)`` in percent; ``(n=1, no CI)`` / ``(n=1, no SE)`` when there is no spread.

    >>> ci_cell({"n": 3, "mean": 32.0, "ci95": 4.97})
    '32.0 ± 5.0 (n=3)'
    >>> ci_cell({"n": 1, "mean": 50.0, "ci95": None})
    '50.0 (n=1, no CI)'
    """
    if not cell or not cell.get("n") or cell.get("mean") is None:
        return DASH
    mean, width, n = pct(cell["mean"], signed), cell.get(spread), cell["n"]
    if width is None:
        return f"{mean} (n={n}, no {'CI' if spread == 'ci95' else 'SE'})"
    return f"{mean} ± {width:.1f} (n={n})"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int) -> list[str]:
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _group_columns(report: dict[str, Any]) -> list[str]:
    return list(report["group_keys"]) or ["group"]


def _group_cells(report: dict[str, Any], group: dict[str, Any]) -> list[str]:
    if not report["group_keys"]:
        return [group["label"]]
    return [f"`{group['labels'][key]}`" for key in report["group_keys"]]


def _seeds(group: dict[str, Any]) -> str:
    return ", ".join(str(s) for s in group["seeds"])


def macro_table(report: dict[str, Any]) -> list[str]:
    header = [*_group_columns(report), "seeds", *(f"macro {METRIC_NAMES[m]}" for m in METRICS)]
    rows = [[*_group_cells(report, g), _seeds(g), *(ci_cell(g["macro"][m]) for m in METRICS)]
            for g in report["groups"]]
    return _table(header, rows, len(_group_columns(report)) + 1)


def task_table(report: dict[str, Any], metric: str) -> list[str]:
    header = [*_group_columns(report), *report["tasks"], "macro"]
    rows = [[*_group_cells(report, g), *(ci_cell(g["tasks"][t][metric]) for t in report["tasks"]),
             ci_cell(g["macro"][metric])] for g in report["groups"]]
    return _table(header, rows, len(_group_columns(report)))


def beside_table(report: dict[str, Any], metric: str) -> list[str]:
    """Each group's model, then what its runs' results.json hold beside it on the same test queries: the zero-shot
    step 0 and the baselines (popularity prior, TF-IDF); empty when no run has any."""
    if not any(g.get("beside") for g in report["groups"]):
        return []
    header = [*_group_columns(report), "model", *report["tasks"], "average"]
    rows, expected = [], []
    for g in report["groups"]:
        rows.append([*_group_cells(report, g), "**trained**", *(ci_cell(g["tasks"][t][metric]) for t in report["tasks"]),
                     ci_cell(g["macro"][metric])])
        for name, cells in (g.get("beside") or {}).items():
            rows.append([*_group_cells(report, g), name, *(ci_cell(cells["tasks"][t][metric]) for t in report["tasks"]),
                         ci_cell(cells["macro"][metric])])
            if "expected" in cells.get("ties", []) and name not in expected:
                expected.append(name)
    note = ([f"{', '.join(expected)}: mean over a uniformly random order within tied scores (ties=expected)."]
            if expected else [])
    return [*_table(header, rows, len(_group_columns(report)) + 1), *([""] + note if note else [])]


def paired_table(report: dict[str, Any]) -> list[str]:
    """Each group minus the first, per shared seed (mean ± 95 % CI of the differences); empty without pairs."""
    paired = [g for g in report["groups"] if g.get("paired") and g["paired"]["seeds"]]
    if not paired:
        return []
    header = [*_group_columns(report), "paired seeds", *(f"Δ macro {METRIC_NAMES[m]}" for m in METRICS)]
    rows = [[*_group_cells(report, g), ", ".join(map(str, g["paired"]["seeds"])),
             *(ci_cell(g["paired"]["macro"][m], signed=True) for m in METRICS)] for g in paired]
    return [f"Each group minus `{paired[0]['paired']['reference']}`, run by run over the seeds both have "
            "(same seed: same batches when the sweep changes only the loss or the scorer), percentage points:",
            "", *_table(header, rows, len(_group_columns(report)) + 1)]


def paired_task_table(report: dict[str, Any]) -> list[str]:
    """Each group minus the first, per task MAP, over the seeds both have (mean ± 95 % CI); empty without pairs."""
    paired = [g for g in report["groups"] if g.get("paired") and g["paired"]["seeds"] and g["paired"].get("tasks")]
    if not paired:
        return []
    tasks = [t for t in report["tasks"] if any(t in g["paired"]["tasks"] for g in paired)]
    header = [*_group_columns(report), "paired seeds", *tasks, "macro"]
    rows = [[*_group_cells(report, g), ", ".join(map(str, g["paired"]["seeds"])),
             *(ci_cell(g["paired"]["tasks"].get(t, {}).get("map"), signed=True) for t in tasks),
             ci_cell(g["paired"]["macro"]["map"], signed=True)] for g in paired]
    return [f"Each group minus `{paired[0]['paired']['reference']}` in MAP, run by run over the seeds both have, "
            "percentage points (mean ± 95 % CI of the paired differences):",
            "", *_table(header, rows, len(_group_columns(report)) + 1)]


def views_tables(report: dict[str, Any]) -> list[str]:
    """Per evaluation view (seen / unseen skills, ...): MAP, step-0 MAP and their gain per task and group, and
    each group minus the first on that view, paired by seed."""
    lines: list[str] = []
    names = list(dict.fromkeys(v for g in report["groups"] for v in (g.get("views") or {})))
    for view in names:
        tasks = list(dict.fromkeys(t for g in report["groups"] for t in (g.get("views") or {}).get(view, {})))
        header = [*_group_columns(report), "seeds", *tasks]
        rows = []
        for what, key, spread, signed in (("MAP", "map", "ci95", False), ("step 0", "map_step0", "ci95", False),
                                           ("gain", "gain", "ci95", True)):
            for g in report["groups"]:
                cells = (g.get("views") or {}).get(view, {})
                rows.append([*_group_cells(report, g), f"{_seeds(g)} ({what})",
                             *(ci_cell(cells.get(t, {}).get(key), spread, signed) for t in tasks)])
        lines += ["", f"### View `{view}`: MAP, step-0 MAP and gain (trained - step 0, run by run), mean ± 95 % CI",
                  "", *_table(header, rows, len(_group_columns(report)) + 1)]
        paired = [g for g in report["groups"] if g.get("paired") and view in g["paired"].get("views", {})]
        if paired:
            prow = [[*_group_cells(report, g), ", ".join(map(str, g["paired"]["seeds"])),
                     *(ci_cell(g["paired"]["views"][view].get(t), signed=True) for t in tasks)] for g in paired]
            lines += ["", f"Each group minus `{paired[0]['paired']['reference']}` on view `{view}`, paired by seed:", "",
                      *_table([*_group_columns(report), "paired seeds", *tasks], prow, len(_group_columns(report)) + 1)]
    return lines


def gain_table(report: dict[str, Any]) -> list[str]:
    tasks = report["knowledge_gain_tasks"]
    header = [*_group_columns(report), *tasks, "macro"]
    rows = []
    for g in report["groups"]:
        gain = g["knowledge_gain"] or {"tasks": {}, "macro": None}
        rows.append([*_group_cells(report, g), *(ci_cell(gain["tasks"].get(t), "se", True) for t in tasks),
                     ci_cell(gain["macro"], "se", True)])
    return _table(header, rows, len(_group_columns(report)))


def header_lines(report: dict[str, Any]) -> list[str]:
    n_found = len(report["runs"]) + len(report["skipped"])
    keys = ", ".join(f"`{k}`" for k in report["group_keys"]) or "nothing (the runs differ in the seed only)"
    lines = [
        f"# Study `{report['study']}`",
        "",
        f"Made by `{report['command']}` from {', '.join(f'`{p}`' for p in report['inputs'])}.",
        "",
        f"- Runs: {len(report['runs'])} finished of {n_found} run directories found below "
        f"`{report['runs_root']}` (each listed under *Runs*)"
        + (f"; {len(report['skipped'])} left out (listed at the end)." if report["skipped"] else "."),
        f"- Grouped by (the keys the sweep varied): {keys}.",
    ]
    if report["derived_keys"]:
        lines.append("- Changing along with them (not grouped by): "
                     + ", ".join(f"`{k}`" for k in report["derived_keys"]) + ".")
    lines += [
        f"- Replicates: `{report['replicate_key']}`. Cells: mean ± 95 % CI over seeds, t-distribution "
        "(mean ± t_{0.975,n-1} · sd / √n), and n; n = 1: no CI. MAP and RP@10 in percent.",
        f"- Plot: {report['kind']}" + (f" ({', '.join(f'`{p}`' for p in report['plots'])})" if report["plots"]
                                       else "") + ".",
    ]
    if report["unavailable"]:
        lines.append("- Unavailable (no run has results for it; not in the macro average): "
                     f"{', '.join(report['unavailable'])}.")
    dupes = [g["label"] for g in report["groups"] if g["duplicate_seeds"]]
    if dupes:
        lines.append(f"- The same seed appears more than once in: {'; '.join(dupes)} (runs passed twice?).")
    return lines


def runs_table(report: dict[str, Any]) -> list[str]:
    rows = [[f"`{r['name']}`", str(r["seed"]), r["group"], pct(r[TEST_MACRO_MAP])] for r in report["runs"]]
    return [f"Run directories below `{report['runs_root']}`:", "",
            *_table(["run", "seed", "group", "macro MAP"], rows, 3)]


def markdown(report: dict[str, Any]) -> str:
    """The whole ``report.md``."""
    lines = header_lines(report)
    lines += ["", "## Macro average", "", *macro_table(report)]
    paired = [] if report["knowledge_gain_tasks"] else paired_table(report)  # a gain is already paired (step 0)
    if paired:
        lines += ["", "## Paired differences", "", *paired]
    for metric in METRICS:
        lines += ["", f"## {METRIC_NAMES[metric]} per task (%)", "", *task_table(report, metric)]
    for metric in METRICS:
        beside = beside_table(report, metric)
        if beside:
            lines += ["", f"## Beside the baselines: {METRIC_NAMES[metric]} (%), same test queries", "", *beside]
    paired_tasks = paired_task_table(report)
    if paired_tasks:
        lines += ["", "## Paired differences per task", "", *paired_tasks]
    if report["knowledge_gain_tasks"]:
        lines += ["", "## Knowledge gain: MAP(final) - MAP(step 0), percentage points (mean ± SE)", "",
                  *gain_table(report)]
    views = views_tables(report)
    if views:
        lines += ["", "## Evaluation views (seen / unseen skills; results.json \"views\")", *views]
    if report.get("learning_curves"):
        lines += ["", "## Learning curves: validation macro MAP (%) by step", "", *curve_table(report)]
    lines += ["", "## Runs", "", *runs_table(report)]
    if report["skipped"]:
        lines += ["", "## Left out", ""] + [f"- `{s['name']}`: {s['reason']}" for s in report["skipped"]]
    return "\n".join(lines) + "\n"
