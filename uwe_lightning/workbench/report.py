"""WorkBench results as files: ``results.json`` + ``results.md``, and the knowledge gain over a step-0 model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from uwe_lightning.io import atomic_write_text


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def results_markdown(results: dict, title: str) -> str:
    lines = [f"### {title}", "", f"split: `{results['split']}`, model: `{results['model']}`"
             + (f", at most {results['max_queries']} queries per task" if results.get("max_queries") else ""), "",
             "| task | MAP | RP@10 | queries | targets | seconds |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in results["tasks"].items():
        lines.append(f"| {name} | {_pct(r['map'])} | {_pct(r['rp@10'])} | {r['n_queries']:,} | "
                     f"{r['n_targets']:,} | {r['seconds']:.1f} |")
    for name in results.get("unavailable", {}):
        lines.append(f"| {name} | n/a | n/a | - | - | - |")
    macro = results["macro"]
    lines.append(f"| **macro average** | **{_pct(macro.get('map'))}** | **{_pct(macro.get('rp@10'))}** | | | |")
    lines += ["", f"Macro average (task types averaged first; SkillExtr-H/-T form one type) covers: "
              f"{', '.join(macro.get('covers', []))}."]
    for name, reason in results.get("unavailable", {}).items():
        lines.append(f"- {name} unavailable: {reason}")
    s = results.get("seconds", {})
    if s:
        lines.append(f"- Encoding {s.get('n_distinct_texts', 0):,} distinct texts once: "
                     f"{s.get('encode_distinct_texts', 0):.1f} s; total {s.get('total', 0):.1f} s. "
                     "Per-task seconds = scoring + metrics only.")
    return "\n".join(lines) + "\n"


def write_results(results: dict, out_dir, title: str) -> tuple[Path, Path]:
    """Write results.json and results.md atomically into ``out_dir``."""
    out = Path(out_dir)
    json_path, md_path = out / "results.json", out / "results.md"
    atomic_write_text(json_path, json.dumps(results, indent=2, default=str))
    atomic_write_text(md_path, results_markdown(results, title))
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
    f, b = float(final["macro"]["map"]), float(base["macro"]["map"])
    return {"tasks": rows, "macro": {"map_final": f, "map_step0": b, "gain": f - b}}


def knowledge_gain_markdown(gain: dict) -> str:
    lines = [
        "### Knowledge gain: MAP(final) - MAP(step 0)",
        "",
        "| task | step 0 | final | gain |",
        "|---|---:|---:|---:|",
    ]
    for task, r in {**gain["tasks"], "macro average": gain["macro"]}.items():
        lines.append(
            f"| {task} | {100 * r['map_step0']:.2f} | {100 * r['map_final']:.2f} | {100 * r['gain']:+.2f} |"
        )
    return "\n".join(lines) + "\n"
