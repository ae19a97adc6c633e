"""The one-axis grid's report (issue 30): per pass and axis, value -> best validation macro MAP, the optimum,
the main-length runs, a plot per pass, and (with an Optuna study) the two searches at equal machine-hours.

    python -m uwe_lightning.report <runs root> kind=search [optuna=<study dir>] out=experiments/results/hparams_search
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from uwe_lightning.io import ConfigError
from uwe_lightning.paths import RUN_INFO_FILE
from uwe_lightning.studies.curves import MACRO
from uwe_lightning.studies.search import (
    PAPER_BOLD,
    PASSES,
    Axis,
    axis_tables,
    default_centre,
    grid_axes,
    load_pool,
    optimum,
    same,
)
from uwe_lightning.studies.search_comparison import (
    SEED_NOISE,
    compare_searches,
    comparison_markdown,
    grid_evaluations,
    optuna_evaluations,
    study_record_path,
)


def percent(value: float | None) -> str:
    """A score (percent) as the tables print it, two decimals."""
    return "–" if value is None else f"{value:.2f}"


def build_search_report(runs_root: Path, setup: tuple[dict[str, float], int] | None = None,
                        axes: Sequence[Axis] | None = None, optuna: str | Path | None = None) -> dict[str, Any]:
    """Pass 1's (and, where it ran, pass 2's) per-axis tables, the optimum, and the main-length runs; with
    ``optuna`` (the Optuna study's dir or its ``study.json``), the grid against it at equal machine-hours."""
    axes = list(axes or grid_axes())
    centre, ablation_steps = setup or default_centre(axes)
    pool = load_pool([runs_root / p for p in PASSES] if any((runs_root / p).is_dir() for p in PASSES)
                     else [runs_root])
    if not pool:
        raise ConfigError(f"no run directory with {RUN_INFO_FILE} under {runs_root}")
    first = axis_tables(pool, centre, axes, ablation_steps)
    report: dict[str, Any] = {"study": "hparams_search", "runs_root": str(runs_root), "steps": ablation_steps,
                              "centre": centre, "paper_bold": PAPER_BOLD, "metric": MACRO, "passes": [{"name": "pass1",
                              "centre": centre, "tables": first}],
                              "finished_runs": sum(r.finished for r in pool), "runs": len(pool)}
    moved = [t for t in first if t["moved"]]
    best = optimum(centre, first)
    if len(moved) >= 2 and all(t["complete"] for t in first):
        moved_axes = [a for a in axes if a.name in {t["axis"] for t in moved}]
        second = axis_tables(pool, best, moved_axes, ablation_steps)
        report["passes"].append({"name": "pass2", "centre": best, "tables": second})
        best = optimum(best, second)
    report["optimum"] = best
    main_runs = [r for r in pool if r.finished and not same(r.steps, ablation_steps)]
    report["main_check"] = [{"run": str(r.path), "steps": r.steps, "best_val": r.best_val, "best_step": r.best_step,
                             "differs_from_optimum": {k: r.flat.get(k) for k in best if not same(r.flat.get(k), best[k])}}
                            for r in main_runs]
    if optuna is not None:
        report["comparison"] = compare_searches(grid_evaluations(pool, ablation_steps, list(centre)),
                                                optuna_evaluations(study_record_path(optuna)))
    return report


def axis_verdict(table: dict[str, Any]) -> str:
    """One line under an axis table: where its optimum is, and whether leaving the centre beat seed noise."""
    if not table["complete"]:
        return "Not finished: no optimum yet."
    if not table["moved"]:
        return "Optimum: the centre value."
    gain = table["gain_over_centre"]
    noise = "within seed noise" if gain < SEED_NOISE else "above seed noise"
    return f"Optimum {table['optimum']:g}: {gain:+.2f} over the centre value ({noise}, {SEED_NOISE} = one seed SD)."


def search_markdown(report: dict[str, Any]) -> str:
    """``report.md``: one table per axis and pass (value -> best validation macro MAP, %), the optimum."""
    lines = [f"# {report['study']}: one-axis grid (best validation macro MAP, %)", "",
             f"Runs: {report['finished_runs']} finished of {report['runs']} under `{report['runs_root']}`. "
             "**bold**: the paper's value (Appendix A); `centre`: the value the other axes kept; ← the optimum.", ""]
    for p in report["passes"]:
        lines += [f"## {p['name']} (centre: " + ", ".join(f"{k}={v:g}" for k, v in p["centre"].items()) + ")", ""]
        for t in p["tables"]:
            lines += [f"### {t['axis']} (`{t['key']}`)", "", "| value | best val macro MAP | at step |", "|---|---:|---:|"]
            for r in t["rows"]:
                label = f"**{r['value']:g}**" if r["paper_bold"] else f"{r['value']:g}"
                label += " (centre)" if r["centre"] else ""
                mark = " ←" if t["optimum"] is not None and same(r["value"], t["optimum"]) else ""
                lines.append(f"| {label} | {percent(r['best_val'])}{mark} | {r['best_step'] if r['best_step'] is not None else '–'} |")
            lines += ["", axis_verdict(t), ""]
    lines += ["## Optimum", "", ", ".join(f"`{k}={v:g}`" for k, v in report["optimum"].items()), ""]
    if report["main_check"]:
        lines += ["## Main-length check", "", "| run | steps | best val macro MAP | at step | differs from the optimum |",
                  "|---|---:|---:|---:|---|"]
        for m in report["main_check"]:
            differs = ", ".join(f"{k}={v}" for k, v in m["differs_from_optimum"].items()) or "(the optimum)"
            lines.append(f"| `{Path(m['run']).name}` | {m['steps']} | {percent(m['best_val'])} | {m['best_step']} | {differs} |")
        lines.append("")
    if report.get("comparison"):
        lines += comparison_markdown(report["comparison"])
    return "\n".join(lines)


def plot_axes(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """``search_<pass>.png``: one panel per axis, best validation macro MAP against the value (evenly spaced, as
    the paper's grid), the paper's value as a star, the centre as a ring."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from uwe_lightning.io import atomic_save_figure

    paths = []
    for p in report["passes"]:
        tables = p["tables"]
        cols = min(4, len(tables))
        rows = math.ceil(len(tables) / cols)
        fig, axs = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False)
        for ax, t in zip(axs.flat, tables, strict=False):
            xs = list(range(len(t["rows"])))
            ys = [math.nan if r["best_val"] is None else r["best_val"] for r in t["rows"]]
            ax.plot(xs, ys, marker="o")
            for x, r, y in zip(xs, t["rows"], ys, strict=True):
                if r["paper_bold"]:
                    ax.plot([x], [y], marker="*", markersize=14, color="C3", linestyle="none")
                if r["centre"]:
                    ax.plot([x], [y], marker="o", markersize=12, fillstyle="none", color="k", linestyle="none")
            ax.set_xticks(xs, [f"{r['value']:g}" for r in t["rows"]], fontsize=8)
            ax.set_title(t["key"], fontsize=9)
            ax.grid(alpha=0.3)
        for ax in list(axs.flat)[len(tables):]:
            ax.axis("off")
        axs[0][0].set_ylabel("best val macro MAP (%)")
        fig.suptitle(f"{report['study']} {p['name']}: one run per value (★ paper's value, ○ centre)", fontsize=9)
        fig.tight_layout()
        paths.append(atomic_save_figure(fig, out_dir / f"search_{p['name']}.png"))
    return paths


def make_search_report(runs_root: str | Path, out_dir: str | Path, command: str = "",
                       optuna: str | Path | None = None) -> list[Path]:
    """Build the report of the grid under ``runs_root`` (and ``optuna``, :func:`build_search_report`) and write
    ``report.json``, ``report.md`` and the plots."""
    from uwe_lightning.io import atomic_write_json, atomic_write_text, make_dirs

    out = Path(out_dir)
    make_dirs(out)
    report = build_search_report(Path(runs_root), optuna=optuna)
    report["command"] = command
    figures = plot_axes(report, out)
    report["plots"] = [p.name for p in figures]
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", search_markdown(report))
    return [*figures, out / "report.json", out / "report.md"]
