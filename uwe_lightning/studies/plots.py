"""PNG figures of a study report (matplotlib, Agg backend: no display needed).

- ``bars``: macro MAP / RP@10 per group and MAP per task, with 95 % CI error bars (Tables 4 and 5);
- ``curve``: macro MAP over ``scorer.tau``, one line per scorer, MaxSim drawn at tau = 0 (Figure 4);
- ``heatmap``: knowledge gain per trained graph(s) x task, mean ± SE (Figure 3);
- ``learning``: validation macro MAP (and per task) against the step (:mod:`~uwe_lightning.studies.curves`).

Each works from ``report.json``'s data alone, so a saved report can be re-plotted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from uwe_lightning.io import atomic_save_figure
from uwe_lightning.studies.aggregate import METRIC_NAMES, METRICS, TAU_KEY
from uwe_lightning.studies.curves import plot_learning_curves

MAXSIM = "maxsim"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    return atomic_save_figure(fig, path)


def _mean_pct(cell: dict[str, Any]) -> float:
    return float("nan") if cell.get("mean") is None else cell["mean"]


def _err_pct(cell: dict[str, Any], spread: str = "ci95") -> float:
    return 0.0 if cell.get(spread) is None else cell[spread]


def _width(wanted: float, least: float) -> float:
    """Figure width in inches: room for every bar, within what a PNG viewer still shows (a big grid)."""
    return min(max(least, wanted), 40.0)


def interval_label(ns: list[int], interval: str = "95 % CI") -> str:
    """What the error bars are, true to the number of seeds: a single run has no interval to show.

    >>> interval_label([5, 5]), interval_label([1]), interval_label([5, 1])
    ('mean ± 95 % CI over seeds', 'one run each: no interval', 'mean ± 95 % CI over seeds where n ≥ 2; n = 1: no interval')
    """
    if all(n >= 2 for n in ns):
        return f"mean ± {interval} over seeds"
    if all(n < 2 for n in ns):
        return "one run each: no interval"
    return f"mean ± {interval} over seeds where n ≥ 2; n = 1: no interval"


def _ns(groups: list[dict[str, Any]]) -> list[int]:
    """Seeds behind each group's macro MAP (the runs that measured it), else the group's run count."""
    return [int((g.get("macro") or {}).get("map", {}).get("n") or g.get("n_runs") or 0) for g in groups]


def _title(report: dict[str, Any], what: str) -> str:
    return f"{report['study']}: {what} ({interval_label(_ns(report['groups']))}; n under each bar)"


def plot_bars(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """``bars_macro.png`` (macro MAP and RP@10 per group) and ``bars_tasks.png`` (MAP per task and group)."""
    plt = _pyplot()
    groups = report["groups"]
    labels = [g["label"] for g in groups]
    fig, axes = plt.subplots(1, len(METRICS), figsize=(_width(1.6 * len(groups) * len(METRICS), 6.0), 4.2))
    for ax, metric in zip(axes, METRICS, strict=True):
        cells = [g["macro"][metric] for g in groups]
        xs = range(len(groups))
        ax.bar(xs, [_mean_pct(c) for c in cells], yerr=[_err_pct(c) for c in cells], capsize=4,
               color=[f"C{i % 10}" for i in xs])
        ax.set_xticks(list(xs), [f"{label}\nn={c['n']}" for label, c in zip(labels, cells, strict=True)],
                      fontsize=8)
        ax.set_ylabel(f"macro {METRIC_NAMES[metric]} (%)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(_title(report, " / ".join(report["group_keys"]) or "all runs"), fontsize=9)
    fig.tight_layout()
    paths = [_save(fig, out_dir / "bars_macro.png")]

    tasks = [*report["tasks"], "macro"]
    width = 0.8 / max(1, len(groups))
    fig, ax = plt.subplots(figsize=(_width(0.5 * len(tasks) * len(groups) + 2, 7.0), 4.5))
    for i, g in enumerate(groups):
        cells = [g["tasks"][t]["map"] for t in report["tasks"]] + [g["macro"]["map"]]
        xs = [j + (i - (len(groups) - 1) / 2) * width for j in range(len(tasks))]
        ax.bar(xs, [_mean_pct(c) for c in cells], width, yerr=[_err_pct(c) for c in cells], capsize=2,
               label=f"{g['label']} (n={g['n_runs']})", color=f"C{i % 10}")
    ax.set_xticks(range(len(tasks)), tasks, rotation=20, fontsize=8)
    ax.set_ylabel("MAP (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{report['study']}: MAP per task ({interval_label(_ns(groups))})", fontsize=9)
    fig.tight_layout()
    paths.append(_save(fig, out_dir / "bars_tasks.png"))
    return paths


def curve_lines(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Groups by line (scorer name plus any other grouping key than ``scorer.tau``), in sweep order."""
    lines: dict[str, list[dict[str, Any]]] = {}
    for g in report["groups"]:
        others = [f"{k}={g['labels'][k]}" for k in report["group_keys"] if k not in (TAU_KEY, "scorer.name")]
        name = str(g["scorer"]["name"] or "scorer")
        lines.setdefault(", ".join([name, *others]), []).append(g)
    return lines


def plot_curve(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """``curve.png``: macro MAP and RP@10 over tau (evenly spaced, as the paper's grid), MaxSim at tau = 0, a
    scorer without tau (sentence embeddings) as a flat dotted line."""
    plt = _pyplot()
    lines = curve_lines(report)
    taus = sorted({float(g["scorer"]["tau"]) for g in report["groups"] if g["scorer"]["tau"] is not None})
    maxsim = any(g["scorer"]["tau"] is None and g["scorer"]["name"] == MAXSIM for g in report["groups"])
    ticks = [("MaxSim\n(τ = 0)", None)] * maxsim + [(f"{t:g}", t) for t in taus]
    position = {tau: i for i, (_, tau) in enumerate(ticks)}
    fig, axes = plt.subplots(1, len(METRICS), figsize=(11, 4.3))
    for ax, metric in zip(axes, METRICS, strict=True):
        for i, (line, groups) in enumerate(lines.items()):
            color = f"C{i % 10}"
            for g in groups:
                cell = g["macro"][metric]
                if g["scorer"]["tau"] is not None:
                    continue
                if g["scorer"]["name"] == MAXSIM:  # MaxSim is the tau -> 0 limit of the soft interaction
                    ax.errorbar([position[None]], [_mean_pct(cell)], yerr=[_err_pct(cell)], fmt="s",
                                color=color, capsize=4, label=f"{line} (τ = 0, n={cell['n']})")
                else:
                    ax.axhline(_mean_pct(cell), color=color, linestyle=":",
                               label=f"{line} (no τ, n={cell['n']})")
            with_tau = sorted((g for g in groups if g["scorer"]["tau"] is not None),
                              key=lambda g: g["scorer"]["tau"])
            if not with_tau:
                continue
            cells = [g["macro"][metric] for g in with_tau]
            xs = [position[float(g["scorer"]["tau"])] for g in with_tau]
            ys = [_mean_pct(c) for c in cells]
            errs = [_err_pct(c) for c in cells]
            ns = ",".join(str(c["n"]) for c in cells)
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, color=color, label=f"{line} (n={ns})")
            if any(errs):
                ax.fill_between(xs, [y - e for y, e in zip(ys, errs, strict=True)],
                                [y + e for y, e in zip(ys, errs, strict=True)], color=color, alpha=0.12)
        ax.set_xticks(range(len(ticks)), [label for label, _ in ticks], fontsize=8)
        ax.set_xlabel("soft late-interaction temperature τ (scorer.tau)")
        ax.set_ylabel(f"macro {METRIC_NAMES[metric]} (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{report['study']}: temperature sweep ({interval_label(_ns(report['groups']))})", fontsize=9)
    fig.tight_layout()
    return [_save(fig, out_dir / "curve.png")]


def plot_heatmap(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """``heatmap.png``: rows = groups (trained graphs), columns = tasks + macro, cells = gain ± SE."""
    plt = _pyplot()
    import numpy as np

    tasks = [*report["knowledge_gain_tasks"], "macro"]
    groups = report["groups"]
    cells = []
    for g in groups:
        gain = g["knowledge_gain"] or {"tasks": {}, "macro": {}}
        cells.append([gain["tasks"].get(t) or {} for t in tasks[:-1]] + [gain["macro"] or {}])
    values = np.array([[_mean_pct(c) if c else np.nan for c in row] for row in cells], dtype=float)
    finite = values[np.isfinite(values)]
    limit = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
    fig, ax = plt.subplots(figsize=(1.2 * len(tasks) + 2.5, 0.8 * len(groups) + 1.8))
    image = ax.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            if not cell or cell.get("mean") is None:
                ax.text(c, r, "–", ha="center", va="center", fontsize=8)
                continue
            se = "" if cell.get("se") is None else f"\n±{cell['se']:.1f}"
            shade = "white" if abs(cell["mean"]) > 0.6 * limit else "black"
            ax.text(c, r, f"{cell['mean']:+.1f}{se}\nn={cell['n']}", ha="center", va="center",
                    fontsize=7, color=shade)
    ax.set_xticks(range(len(tasks)), tasks, rotation=20, fontsize=8)
    ax.set_yticks(range(len(groups)), [g["label"] for g in groups], fontsize=8)
    ax.set_ylabel(" / ".join(report["group_keys"]) or "runs")
    fig.colorbar(image, ax=ax, label="knowledge gain (MAP points)")
    ax.set_title(f"{report['study']}: MAP(final) - MAP(step 0), mean ± SE over seeds", fontsize=9)
    fig.tight_layout()
    return [_save(fig, out_dir / "heatmap.png")]


PLOTTERS = {"bars": plot_bars, "curve": plot_curve, "heatmap": plot_heatmap, "learning": plot_learning_curves}


def plot(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """The figures of ``report['kind']`` (none for ``kind=none``)."""
    plotter = PLOTTERS.get(report["kind"])
    return plotter(report, Path(out_dir)) if plotter else []
