"""What a finished training run produced, in a few lines: the console table at the end of ``train`` and the
W&B run summary. The full record is ``run_info.json``'s ``summary`` (whose ``outputs`` and ``wall_s`` come from
here).

Scores are in percent in every file, logger and table (names and unit:
:mod:`uwe_lightning.workbench.metric_names`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from uwe_lightning.workbench.metric_names import MACRO, MAP, METRICS, MONITOR, RP10, TEST, metric_name

log = logging.getLogger("uwe_lightning.train")

#: What a run directory may hold, in the order the summary lists it.
OUTPUT_NAMES = ("best_model", "results.md", "results.json", "knowledge_gain.md", "checkpoints",
                "val_history.jsonl", "run_info.json", "csv", "wandb")


def run_outputs(run_dir: Path) -> list[str]:
    """The outputs the run directory holds (names relative to it; directories end in ``/``)."""
    return [f"{name}/" if (run_dir / name).is_dir() else name for name in OUTPUT_NAMES if (run_dir / name).exists()]


def pct(value: Any) -> str:
    """A score (in percent) with two decimals; ``-`` where there is none.

    >>> pct(34.912), pct(None), pct(float("nan"))
    ('34.91 %', '-', '-')
    """
    if value is None or not isinstance(value, (int, float)) or math.isnan(value):
        return "-"
    return f"{value:.2f} %"


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The numbers a reader wants first (W&B run summary keys ``run/<key>``), scores in percent."""
    out: dict[str, Any] = {"final_step": summary.get("final_step"), "wall_s": summary.get("wall_s")}
    best = summary.get("best_val") or {}
    if best:
        out["best_val_step"] = best.get("step")
        out[MONITOR] = best.get(MONITOR)  # the best, as W&B's summary of the metric itself
    export = (summary.get("export") or {}).get("provenance") or {}
    if "step" in export:
        out["exported_step"] = export["step"]
    for metric in METRICS:
        value = (summary.get("test_macro") or {}).get(metric)
        if isinstance(value, (int, float)):
            out[metric_name(TEST, MACRO, metric)] = value
    for key in ("steps_per_s", "texts_per_s", "peak_cpu_rss_gib", "peak_gpu_allocated_gib"):
        if key in (summary.get("throughput") or {}):
            out[key] = summary["throughput"][key]
    return {k: v for k, v in out.items() if v is not None}


def console_summary(summary: dict[str, Any], run_dir: Path) -> str:
    """The end-of-run table: steps, best validation, test per task, time, speed, memory and where it all is."""
    lines = [f"run summary: {run_dir}"]
    if summary.get("skipped"):
        return "\n".join([*lines, f"  skipped: {summary['skipped']}"])
    lines.append(f"  steps trained     {summary.get('final_step', '-')}")
    best, step0 = summary.get("best_val"), summary.get("val_step0")
    if best:
        zero = f" (step 0: {pct(step0.get(MONITOR))})" if step0 else ""
        lines.append(f"  best val macro MAP {pct(best.get(MONITOR))} at step {best.get('step')}{zero}")
    export = summary.get("export") or {}
    if export:
        step = (export.get("provenance") or {}).get("step")
        selected = (summary.get("selection") or {}).get("exported_val")
        val = f", val macro MAP {pct(selected)}" if selected is not None else ""
        lines.append(f"  exported model    best_model/ (step {step}{val})")
    tasks, macro = summary.get("test_tasks") or {}, summary.get("test_macro")
    if macro:
        lines.append(f"  test              {'MAP':>8}  {'RP@10':>8}")
        width = max([len(t) for t in tasks] + [5])
        for task, row in tasks.items():
            lines.append(f"    {task:<{width}}  {pct(row.get(MAP)):>8}  {pct(row.get(RP10)):>8}")
        lines.append(f"    {MACRO:<{width}}  {pct(macro.get(MAP)):>8}  {pct(macro.get(RP10)):>8}")
    throughput = summary.get("throughput") or {}
    timing = [f"{summary['wall_s'] / 60:.1f} min wall"] if summary.get("wall_s") is not None else []
    if throughput:
        timing.append(f"{throughput['steps_per_s']} steps/s, {throughput['texts_per_s']} texts/s (training steps)")
        memory = (f"{throughput['peak_gpu_allocated_gib']} GiB GPU" if "peak_gpu_allocated_gib" in throughput
                  else f"{throughput.get('peak_cpu_rss_gib', '-')} GiB CPU RSS")
        timing.append(f"peak memory {memory}")
    if timing:
        lines.append(f"  time              {'; '.join(timing)}")
    if summary.get("outputs"):
        lines.append(f"  written           {', '.join(summary['outputs'])}")
    return "\n".join(lines)


def selection_summary(history: list[dict[str, Any]], exported_step: int) -> dict[str, Any]:
    """How the exported model compares with the zero-shot step-0 model on validation.

    Step 0 is never a checkpoint (its weights are the backbone's), so the best *trained* checkpoint is
    exported even when it validates below step 0; the summary says so, and the run logs a warning.

    >>> selection_summary([{"step": 0, "val/macro/map": 40.0}, {"step": 2, "val/macro/map": 30.0}], 2)
    {'exported_step': 2, 'exported_val': 30.0, 'step0_val': 40.0, 'exported_beats_step0': False}
    """
    by_step = {h["step"]: h.get(MONITOR) for h in history}
    exported, step0 = by_step.get(exported_step), by_step.get(0)
    beats = None if exported is None or step0 is None else bool(exported >= step0)
    if beats is False:
        log.warning("the exported model (step %d, %s %.2f) validates below the zero-shot step-0 model (%.2f)",
                    exported_step, MONITOR, exported, step0)
    return {"exported_step": int(exported_step), "exported_val": exported, "step0_val": step0,
            "exported_beats_step0": beats}


def objective(summary: dict[str, Any]) -> float | None:
    """What a sweeper optimises: the best validation macro MAP (never a test number: test sets are for the
    final evaluation only). A job that trained nothing (every loss weight 0) returns ``-inf``, so a search
    ranks it last instead of failing; ``None`` when there was no validation.

    >>> objective({"skipped": "every loss weight 0"}), objective({"best_val": {"val/macro/map": 50.0}})
    (-inf, 50.0)
    """
    if summary.get("skipped"):
        return float("-inf")
    best = summary.get("best_val")
    value = best.get(MONITOR) if best else None
    return float(value) if value is not None and math.isfinite(value) else None
