"""A sweep's report: find the finished runs, group them by what the sweep varied, write tables and plots.

:func:`build_report` returns plain data (also written as ``report.json``); :func:`write_report` writes
``report.json``, ``report.md`` and the PNG figures of the chosen kind into one directory (atomically).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from uwe_lightning.io import ConfigError, atomic_write_json, atomic_write_text, make_dirs
from uwe_lightning.paths import REPO_DIR, RUN_INFO_FILE
from uwe_lightning.studies import plots, tables
from uwe_lightning.studies.aggregate import aggregate, choose_kind, run_average
from uwe_lightning.studies.curves import build_curves, write_curves_json
from uwe_lightning.studies.runs import (
    REPLICATE_KEY,
    Run,
    find_run_dirs,
    group_runs,
    load_runs,
)
from uwe_lightning.workbench.metric_names import MAP, TEST_MACRO_MAP
from uwe_lightning.workbench.report import RESULTS_FILE

REPORT_JSON, REPORT_MD = "report.json", "report.md"


def display_path(path: Path) -> str:
    """A path relative to the working directory when it lies below it (shorter tables), else absolute."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved)


def runs_root(paths: Sequence[Path]) -> Path:
    """The deepest directory holding every run (the multirun directory, for one sweep)."""
    resolved = [str(p.resolve()) for p in paths]
    root = Path(os.path.commonpath(resolved))
    return root.parent if len(resolved) == 1 else root


def relative_name(path: Path, root: Path) -> str:
    return str(path.resolve().relative_to(root))


def study_name(runs: Sequence[Run], inputs: Sequence[str | Path], out_dir: str | os.PathLike | None = None) -> str:
    """The runs' ``task_name`` (the experiment: ``ablation_loss``). Runs of several experiments reported together
    (Table 5 reuses Table 4's mean cell; Figure 4 reuses Table 5's runs) take the name of ``out_dir`` when one is
    given, else the experiment most runs have; runs without a ``task_name``, the first input's name."""
    names = [run.flat.get("task_name") for run in runs if isinstance(run.flat.get("task_name"), str)]
    if len(set(names)) > 1 and out_dir is not None:
        return Path(out_dir).resolve().name
    if names:
        return max(dict.fromkeys(names), key=names.count)  # ties: the first seen
    return Path(inputs[0]).resolve().name or "study"


def default_out_dir(study: str) -> Path:
    """``experiments/results/<study>`` of the source checkout, else of the working directory."""
    root = REPO_DIR if (REPO_DIR / "pyproject.toml").is_file() else Path.cwd()
    return root / "experiments" / "results" / study


def build_report(
    inputs: Sequence[str | Path], kind: str = "auto", command: str | None = None,
    out_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Everything ``report.json`` holds; raises :class:`ConfigError` when no finished run is found."""
    dirs = find_run_dirs(inputs)
    runs, skipped = load_runs(dirs)
    given = ", ".join(str(i) for i in inputs)
    if not dirs:
        raise ConfigError(f"no run directory (with {RUN_INFO_FILE} or {RESULTS_FILE}) under {given}")
    if not runs:
        reasons = "; ".join(sorted({s.reason.split(" (")[0] for s in skipped}))
        found = f"{len(dirs)} run director{'y' if len(dirs) == 1 else 'ies'}"
        raise ConfigError(f"no finished run under {given}: {found}, none finished ({reasons})")
    grouping = group_runs(runs)
    chosen = choose_kind(grouping, runs, kind)
    cells = aggregate(grouping, runs)
    group_of = {id(run): g.label for g in grouping.groups for run in g.runs}
    root = runs_root([*(run.path for run in runs), *(s.path for s in skipped)])
    report: dict[str, Any] = {
        "study": study_name(runs, inputs, out_dir),
        "command": command or "uwe_lightning.studies.build_report",
        "inputs": [str(i) for i in inputs],
        "group_keys": grouping.keys,
        "derived_keys": grouping.derived,
        "replicate_key": REPLICATE_KEY,
        "kind": chosen,
        "kind_requested": kind,
        "metrics_scale": "percent (older runs' fractions converted on read)",
        "confidence": 0.95,
        "runs_root": display_path(root),
        "runs": [{"dir": display_path(run.path), "name": relative_name(run.path, root), "seed": run.seed,
                  "group": group_of[id(run)], TEST_MACRO_MAP: run_average(run.results).get(MAP)} for run in runs],
        "skipped": [{"dir": display_path(s.path), "name": relative_name(s.path, root), "reason": s.reason}
                    for s in skipped],
        **cells,
        "plots": [],
    }
    curves = build_curves(runs, group_of, [g.label for g in grouping.groups])
    if all(record["steps"] for record in curves["records"]):
        # curves.json and the by-step table for every study whose runs validated (kind=learning: at least
        # MIN_POINTS times; a bars study may have only step 0 and the end); the curve plots only for kind=learning
        report["learning_curves"] = curves
    return report


def write_report(report: dict[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """Write the plots, ``report.json`` and ``report.md`` into ``out_dir``; returns the paths written."""
    out = Path(out_dir)
    make_dirs(out)
    figures = plots.plot(report, out)
    report["plots"] = [p.name for p in figures]
    curves_json = write_curves_json(report, out)
    atomic_write_json(out / REPORT_JSON, report)
    atomic_write_text(out / REPORT_MD, tables.markdown(report))
    return [*figures, *([curves_json] if curves_json else []), out / REPORT_JSON, out / REPORT_MD]


def make_report(inputs: Sequence[str | Path], out_dir: str | os.PathLike | None = None, kind: str = "auto",
                command: str | None = None) -> tuple[dict[str, Any], list[Path]]:
    """:func:`build_report`, then :func:`write_report` (``out_dir``: ``experiments/results/<study>``)."""
    report = build_report(inputs, kind=kind, command=command, out_dir=out_dir)
    written = write_report(report, out_dir if out_dir is not None else default_out_dir(report["study"]))
    return report, written
