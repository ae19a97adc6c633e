"""The one-axis grid against the Optuna study at equal machine-hours (issue 30): which search found the better
setting for the time it took.

Each search is a sequence of *evaluations* in the order they ran (a grid job, an Optuna trial), each with its
seconds and, when it finished, its best validation macro MAP (a pruned or failed trial has seconds and no value:
its time was spent all the same). At an equal budget (the smaller of the two totals) each search is read by the
best value it had found once that many hours were spent; a difference below :data:`SEED_NOISE` is reported as
within seed noise, since every evaluation is one seed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uwe_lightning.io import ConfigError
from uwe_lightning.studies.search import SearchRun, same

#: Macro MAP points: one seed SD of the grid's centre setting (Table 5's SoftMax cell at 75 steps, seeds 0-2:
#: 35.80 / 35.99 / 35.42, SD 0.29; experiments/results/hparams_search/README.md), fixed before the search ran.
SEED_NOISE = 0.3


@dataclass(frozen=True)
class Evaluation:
    """One evaluated setting: its name, best validation macro MAP (percent; None when pruned or failed), the
    seconds it took and the values it set."""

    label: str
    value: float | None
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)


def best_within(evaluations: Sequence[Evaluation], seconds: float) -> Evaluation | None:
    """The best finished evaluation among those completed once ``seconds`` had been spent, in running order.

    >>> runs = [Evaluation("a", 35.0, 60), Evaluation("b", None, 30), Evaluation("c", 36.0, 60)]
    >>> best_within(runs, 100).label, best_within(runs, 150).label, best_within(runs, 10)
    ('a', 'c', None)
    """
    spent, best = 0.0, None
    for e in evaluations:
        spent += e.seconds
        if spent > seconds + 1e-9:
            break
        if e.value is not None and (best is None or e.value > best.value):
            best = e
    return best


def grid_evaluations(pool: Sequence[SearchRun], steps: Any, keys: Sequence[str]) -> list[Evaluation]:
    """The grid's jobs that ran to their summary at the ablation length ``steps``, in the order they started; a
    main-length run is not part of the search's budget."""
    done = [r for r in pool if r.wall_s is not None and same(r.steps, steps)]
    return [Evaluation(f"{r.path.parent.name}/{r.path.name}", r.best_val, r.wall_s, {k: r.flat.get(k) for k in keys})
            for r in sorted(done, key=lambda r: r.started or "")]


def optuna_evaluations(study_json: Path) -> list[Evaluation]:
    """The Optuna study's trials in their order (``study.json`` of ``hparams_search=optuna``): complete ones with
    their value, pruned and failed ones with their seconds only; a trial still running is left out."""
    try:
        study = json.loads(study_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{study_json}: cannot read the Optuna study record ({err}); give the study's dir "
                          "(hparams_search=optuna's hydra.run.dir) or its study.json") from err
    out = []
    for t in sorted(study.get("trials", []), key=lambda t: t["number"]):
        if t["state"] == "RUNNING" or t.get("seconds") is None:
            continue
        value = _number(t.get("value")) if t["state"] == "COMPLETE" else None
        out.append(Evaluation(f"trial {t['number']} ({t['state'].lower()})", value, float(t["seconds"]),
                              dict(t.get("params") or {})))
    return out


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def compare_searches(grid: Sequence[Evaluation], optuna: Sequence[Evaluation]) -> dict[str, Any]:
    """Totals of each search and their best settings at the equal budget (the smaller total)."""
    searches = {"grid": grid, "optuna": optuna}
    totals = {name: sum(e.seconds for e in evals) for name, evals in searches.items()}
    budget = min(totals.values())
    at_budget = {name: best_within(evals, budget) for name, evals in searches.items()}
    overall = {name: best_within(evals, math.inf) for name, evals in searches.items()}
    g, o = at_budget["grid"], at_budget["optuna"]
    diff = o.value - g.value if g and o else None
    verdict = ("not comparable yet (a search has no finished evaluation within the budget)" if diff is None
               else f"within seed noise (|{diff:+.2f}| < {SEED_NOISE})" if abs(diff) < SEED_NOISE
               else "Optuna found the better setting" if diff > 0 else "the grid found the better setting")
    return {
        "seed_noise": SEED_NOISE,
        "hours": {k: v / 3600 for k, v in totals.items()},
        "evaluations": {"grid": len(grid), "optuna": len(optuna),
                        "optuna_finished": sum(e.value is not None for e in optuna)},
        "equal_budget_hours": budget / 3600,
        "best_at_equal_budget": {k: _plain(v) for k, v in at_budget.items()},
        "best_overall": {k: _plain(v) for k, v in overall.items()},
        "optuna_minus_grid": diff,
        "verdict": verdict,
    }


def _plain(e: Evaluation | None) -> dict[str, Any] | None:
    return None if e is None else {"label": e.label, "value": e.value, "seconds": e.seconds, "params": e.params}


def comparison_markdown(c: dict[str, Any]) -> list[str]:
    """The report's *Grid vs Optuna* section."""
    def cell(best: dict[str, Any] | None) -> str:
        if best is None:
            return "– | –"
        params = ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in best["params"].items())
        return f"{best['value']:.2f} ({best['label']}) | {params}"

    lines = ["## Grid vs Optuna at equal machine-hours", "",
             f"Grid: {c['evaluations']['grid']} jobs, {c['hours']['grid']:.2f} h; Optuna: {c['evaluations']['optuna']} "
             f"trials ({c['evaluations']['optuna_finished']} complete, the rest pruned or failed), "
             f"{c['hours']['optuna']:.2f} h (each job's or trial's own wall time). Equal budget: "
             f"**{c['equal_budget_hours']:.2f} h**.", "",
             "| search | best val macro MAP within the equal budget | its setting |", "|---|---|---|"]
    for name in ("grid", "optuna"):
        lines.append(f"| {name} | {cell(c['best_at_equal_budget'][name])} |")
    diff = "–" if c["optuna_minus_grid"] is None else f"{c['optuna_minus_grid']:+.2f}"
    overall = {k: "–" if v is None else f"{v['value']:.2f}" for k, v in c["best_overall"].items()}
    lines += ["", f"Optuna - grid at the equal budget: {diff}: **{c['verdict']}** (seed noise: {c['seed_noise']} "
              f"macro MAP, one seed SD of the centre setting). Best over each whole search: grid {overall['grid']}, "
              f"Optuna {overall['optuna']}. An Optuna trial's value is its best of the validations at steps 25 / 50 / "
              "75, a grid job's its one validation at step 75.", ""]
    return lines


def study_record_path(path: str | Path) -> Path:
    """``study.json`` of an Optuna study dir, or the file itself."""
    p = Path(path)
    return p / "study.json" if p.is_dir() else p
