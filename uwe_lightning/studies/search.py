"""The Appendix A one-axis grid (issue 30): which jobs each pass runs, read from the finished runs (their
report: :mod:`~uwe_lightning.studies.search_report`).

A *grid* is a centre (one value per axis key) and the axes of ``conf/hparams_search/<axis>.yaml``: every point
differs from the centre in one key at most, so the centre itself is one job, not one per axis (the 29 cells of
the paper's 8 axes are 22 distinct runs; the same seed gives the same run). Runs are matched to grid points by
their resolved config (``run_info.json``), never by directory name, so a pass reuses every finished run of an
earlier one at the same length.

- pass 1: the configs' defaults as the centre (``scale=cpu``, ablation length);
- pass 2: the axes whose pass-1 optimum left the centre, searched again around the pass-1 optima (needs >= 2
  moved axes: with one, pass 2 would repeat pass 1's runs);
- main check: the two axes that moved most, each at its optimum and at its centre value, at the main length,
  the others at the final optimum (3 runs: the optimum itself is shared).

The objective is each run's best validation macro MAP (``summary.best_val``, key :data:`MACRO`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from uwe_lightning.io import ConfigError
from uwe_lightning.paths import CONF_DIR, RUN_INFO_FILE
from uwe_lightning.studies.curves import MACRO
from uwe_lightning.studies.runs import find_run_dirs, flatten
from uwe_lightning.workbench.metric_names import upgrade_run_summary

SEARCH_DIR = CONF_DIR / "hparams_search"
#: The axes in the paper's order (Appendix A); each is ``conf/hparams_search/<name>.yaml``.
AXIS_ORDER = ("scorer_tau", "alpha_j", "alpha_v", "alpha_a", "lr", "loss_tau_j", "loss_tau_v", "loss_tau_a")
#: The paper's bold value per key (Appendix A). The appendix bolds lr 8e-4, outside its own grid: read as 8e-5
#: (conf/train.yaml); scorer.tau's bold 0.5 is not our default (0.1, the paper's Figure 4 choice).
PAPER_BOLD = {"scorer.tau": 0.5, "loss.alpha.J": 1.0, "loss.alpha.V": 0.5, "loss.alpha.A": 0.5,
              "optim.lr": 8e-5, "loss.tau.J": 0.05, "loss.tau.V": 0.02, "loss.tau.A": 0.02}
PASSES = ("pass1", "pass2", "main")
CENTRE = "centre"
STEPS_KEY = "trainer.max_steps"


@dataclass(frozen=True)
class Axis:
    """One search axis: the config file's name, the key it sweeps and the values."""

    name: str
    key: str
    values: tuple[float, ...]


def same(a: Any, b: Any) -> bool:
    """Config values equal as the grid means it (``8e-05`` typed or composed)."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-15)
    return a == b


def grid_axes(search_dir: Path = SEARCH_DIR) -> list[Axis]:
    """The axes of ``conf/hparams_search/`` in :data:`AXIS_ORDER` (each file sweeps one key)."""
    axes = []
    for name in AXIS_ORDER:
        path = search_dir / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError(f"{path}: missing; the grid's axes are {', '.join(AXIS_ORDER)}")
        params = OmegaConf.select(OmegaConf.load(path), "hydra.sweeper.params") or {}
        if len(params) != 1:
            raise ConfigError(f"{path}: hydra.sweeper.params must sweep exactly one key (has {list(params)})")
        ((key, values),) = params.items()
        axes.append(Axis(name, str(key), tuple(float(v) for v in str(values).split(","))))
    return axes


def default_centre(axes: Sequence[Axis], overrides: Sequence[str] = ("scale=cpu",)) -> tuple[dict[str, float], int]:
    """Each axis key's value in the composed config of a search (the defaults every other axis keeps), and the
    search's length (``trainer.max_steps``: the ablation length of the scale)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"hparams_search={axes[0].name}", *overrides])
    return {axis.key: float(OmegaConf.select(cfg, axis.key)) for axis in axes}, int(cfg.trainer.max_steps)


def number(value: float) -> str:
    """A value as an override that Hydra reads back as a float (``1.0``, not the int ``1``).

    >>> [number(v) for v in (1.0, 0.0, 8e-05, 0.02)]
    ['1.0', '0.0', '8e-05', '0.02']
    """
    text = f"{value:g}"
    return text if any(c in text for c in ".e") else f"{text}.0"


@dataclass(frozen=True)
class Point:
    """A grid point: its name (``centre`` or ``<axis>=<value>``), the axis it lies on, and its config values."""

    name: str
    axis: str | None
    values: dict[str, float]


def inert_keys(values: dict[str, Any]) -> set[str]:
    """Keys that cannot change a run at these values: a graph's loss temperature where its weight is 0 (the loss
    skips that graph before any compute, ``losses.py``).

    >>> sorted(inert_keys({"loss.alpha.J": 0.0, "loss.tau.J": 0.1, "loss.alpha.V": 0.5, "loss.tau.V": 0.02}))
    ['loss.tau.J']
    """
    return {f"loss.tau.{key.rsplit('.', 1)[1]}" for key, value in values.items()
            if key.startswith("loss.alpha.") and same(value, 0.0)}


def same_run(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two settings train the same run (their keys equal, inert ones aside)."""
    ignored = inert_keys(a) | inert_keys(b)
    return all(same(a.get(k), b.get(k)) for k in set(a) | set(b) if k not in ignored)


def one_axis_grid(centre: dict[str, float], axes: Sequence[Axis]) -> list[Point]:
    """The centre, then each axis's other values (the others at the centre); a value that would train the
    centre's run again (an inert key, :func:`inert_keys`) is the centre's cell, not a job."""
    points = [Point(CENTRE, None, dict(centre))]
    for axis in axes:
        for value in axis.values:
            values = {**centre, axis.key: value}
            if not same_run(values, centre):
                points.append(Point(f"{axis.name}={value:g}", axis.name, values))
    return points


# ----------------------------------------------------------------------------------------------------------
# Finished runs
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchRun:
    """A run directory of the search: its config values, length, best validation macro MAP (percent), and when it
    first started and how long its last start took (``summary.wall_s``; None while unfinished)."""

    path: Path
    flat: dict[str, Any]
    best_val: float | None
    best_step: int | None
    finished: bool
    started: str | None = None
    wall_s: float | None = None

    @property
    def steps(self) -> Any:
        return self.flat.get(STEPS_KEY)


def load_search_run(path: Path) -> SearchRun | None:
    """The run in ``path`` (None without a readable run_info.json with a config)."""
    try:
        info = json.loads((path / RUN_INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not isinstance(info.get("config"), dict):
        return None
    summary = info.get("summary")
    summary = upgrade_run_summary(summary) if isinstance(summary, dict) else summary  # older runs: fractions
    best = (summary or {}).get("best_val") if isinstance(summary, dict) else None
    value = best.get(MACRO) if isinstance(best, dict) else None
    value = float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
    starts = info.get("starts") or [{}]
    wall = summary.get("wall_s") if isinstance(summary, dict) else None
    return SearchRun(path=path, flat=flatten(info["config"]), best_val=value,
                     best_step=best.get("step") if isinstance(best, dict) else None,
                     finished=isinstance(summary, dict) and value is not None,
                     started=starts[0].get("started"), wall_s=float(wall) if wall is not None else None)


def load_pool(inputs: Iterable[str | Path]) -> list[SearchRun]:
    """Every run (finished or not) under ``inputs``; inputs that do not exist are left out."""
    existing = [p for p in inputs if Path(p).is_dir()]
    if not existing:
        return []
    runs = (load_search_run(p) for p in find_run_dirs(existing))
    return [r for r in runs if r is not None]


def find(pool: Sequence[SearchRun], values: dict[str, float], steps: Any) -> SearchRun | None:
    """The finished run of ``pool`` at this point and length (the last found, if several)."""
    hits = [r for r in pool if r.finished and same(r.steps, steps)
            and same_run({k: r.flat.get(k) for k in values}, values)]
    return hits[-1] if hits else None


def axis_tables(pool: Sequence[SearchRun], centre: dict[str, float], axes: Sequence[Axis], steps: Any
                ) -> list[dict[str, Any]]:
    """Per axis: each value's run and best validation, the optimum, and whether it left the centre."""
    tables = []
    for axis in axes:
        rows = []
        for value in axis.values:
            run = find(pool, {**centre, axis.key: value}, steps)
            rows.append({"value": value, "best_val": run.best_val if run else None,
                         "best_step": run.best_step if run else None, "run": str(run.path) if run else None,
                         "centre": same(value, centre[axis.key]),
                         "paper_bold": same(value, PAPER_BOLD.get(axis.key))})
        done = [r for r in rows if r["best_val"] is not None]
        best = max(done, key=lambda r: (r["best_val"], r["centre"])) if done else None  # a tie keeps the centre
        at_centre = next((r["best_val"] for r in rows if r["centre"]), None)
        tables.append({
            "axis": axis.name, "key": axis.key, "rows": rows, "complete": len(done) == len(rows),
            "optimum": best["value"] if best else None,
            "moved": bool(best and not best["centre"]),
            "gain_over_centre": (best["best_val"] - at_centre) if best and at_centre is not None else None,
        })
    return tables


def optimum(centre: dict[str, float], tables: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The centre with every moved axis at its optimum."""
    return {**centre, **{t["key"]: t["optimum"] for t in tables if t["moved"]}}


# ----------------------------------------------------------------------------------------------------------
# Plans: the jobs of each pass
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One training job of the driver: its directory (relative to the runs root) and its overrides."""

    dir: str
    overrides: tuple[str, ...]

    def line(self) -> str:
        return " ".join([self.dir, *self.overrides])


def _job(pass_name: str, point: Point, axes: Sequence[Axis], extra: Sequence[str] = ()) -> Job:
    axis = point.axis or axes[0].name
    values = [f"{key}={number(value)}" for key, value in point.values.items()]
    return Job(f"{pass_name}/{point.name}", (f"hparams_search={axis}", *values, *extra))


def _pass_tables(pool, centre, axes, steps, pass_name) -> list[dict[str, Any]]:
    tables = axis_tables(pool, centre, axes, steps)
    missing = sum(1 for t in tables for r in t["rows"] if r["best_val"] is None)
    if missing:
        raise ConfigError(f"{pass_name} is not finished: {missing} of its grid cells have no finished run; "
                          f"run MODE={pass_name} first")
    return tables


@dataclass
class Plan:
    """What a mode runs, and why (the note the driver prints)."""

    jobs: list[Job]
    note: str


def plan(mode: str, runs_root: Path, setup: tuple[dict[str, float], int] | None = None,
         axes: Sequence[Axis] | None = None) -> Plan:
    """The jobs of ``mode`` (``grid`` | ``pass2`` | ``main``); ``setup``: (centre, ablation length), by default
    :func:`default_centre`'s."""
    axes = list(axes or grid_axes())
    centre, ablation_steps = setup or default_centre(axes)
    pool = load_pool([runs_root / p for p in PASSES])
    if mode == "grid":
        points = one_axis_grid(centre, axes)
        return Plan([_job("pass1", p, axes) for p in points],
                    f"pass 1: {len(points)} runs for the {sum(len(a.values) for a in axes)} cells of {len(axes)} axes")
    first = _pass_tables(pool, centre, axes, ablation_steps, "grid")
    moved = [t for t in first if t["moved"]]
    centre1 = optimum(centre, first)
    if mode == "pass2":
        if len(moved) < 2:
            return Plan([], f"pass 2 not needed: {len(moved)} axis moved ({', '.join(t['axis'] for t in moved) or 'none'}); "
                            "around its optimum pass 2 would repeat pass 1's runs")
        moved_axes = [a for a in axes if a.name in {t["axis"] for t in moved}]
        points = [p for p in one_axis_grid(centre1, moved_axes) if find(pool, p.values, ablation_steps) is None]
        return Plan([_job("pass2", p, moved_axes) for p in points],
                    f"pass 2: {len(moved_axes)} moved axes ({', '.join(a.name for a in moved_axes)}) around the "
                    f"pass-1 optimum, {len(points)} runs not already done")
    if mode == "main":
        final = centre1
        if len(moved) >= 2:  # the second pass (around the pass-1 optimum) has the later word on its axes
            moved_axes = [a for a in axes if a.name in {t["axis"] for t in moved}]
            final = optimum(centre1, _pass_tables(pool, centre1, moved_axes, ablation_steps, "pass2"))
        # the axes still off their centre value, ranked by what pass 1 measured leaving it gained
        ranked = sorted((t for t in first if not same(final[t["key"]], centre[t["key"]])),
                        key=lambda t: -(t["gain_over_centre"] or 0.0))[:2]
        if not ranked:
            return Plan([], "main check not needed: no axis moved (the centre is the optimum)")
        main = ("trainer.max_steps=${scale.steps.main}", "validation.every_n_steps=100")
        points = [Point("optimum", None, final)]
        for t in ranked:
            value = centre[t["key"]]
            points.append(Point(f"{t['axis']}={value:g}", t["axis"], {**final, t["key"]: value}))
        return Plan([_job("main", p, axes, main) for p in points],
                    f"main check: {', '.join(t['axis'] for t in ranked)} (moved most), each at its optimum and at "
                    "its centre value, the others at the optimum, at the main length")
    raise ConfigError(f"MODE={mode}: unknown; use grid, pass2 or main")
