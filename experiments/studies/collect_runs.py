"""Copy the small, reportable files of finished runs into ``experiments/results/<study>/runs/`` for committing.

    python experiments/studies/collect_runs.py <multirun dir> experiments/results/<study>/runs[/<subdir>]

Per finished run (its ``run_info.json`` holds the summary, written last): ``run_info.json`` (resolved config,
provenance, summary), ``results.json`` (the test table; a validation-only run, e.g. a search job, has none),
``val_history.jsonl`` and ``.hydra/overrides.yaml`` when present; checkpoints and models stay behind.
Paths inside a run's own directory (its output, checkpoint and model dirs) are written relative to it, as
``<run_dir>/...``: the copy no longer lives there, and the machine's directory layout is not a result.
``--normalise`` rewrites already collected ``run_info.json`` files the same way, in place (each knows its old
directory from ``config.paths.output_dir``).
``python -m uwe_lightning.report <that runs dir>`` then rebuilds the study's tables and plots from them.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from uwe_lightning.io import atomic_write_json
from uwe_lightning.paths import RUN_INFO_FILE
from uwe_lightning.workbench.report import RESULTS_FILE

FILES = (RUN_INFO_FILE, RESULTS_FILE, "val_history.jsonl", "knowledge_gain.md", ".hydra/overrides.yaml")
RUN_DIR_MARK = "<run_dir>"


def relocate(value: Any, run_dir: str) -> Any:
    """``value`` with every string (and key) that is ``run_dir`` or a path below it rewritten as ``<run_dir>...``."""
    if isinstance(value, dict):
        return {relocate(k, run_dir): relocate(v, run_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [relocate(v, run_dir) for v in value]
    if isinstance(value, str) and (value == run_dir or value.startswith(run_dir.rstrip("/") + "/")):
        return RUN_DIR_MARK + value[len(run_dir.rstrip("/")):]
    return value


def write_relocated(info_file: Path, target: Path, run_dir: str) -> None:
    atomic_write_json(target, relocate(json.loads(info_file.read_text()), run_dir))


def normalise(dest: Path) -> int:
    changed = 0
    for info_file in sorted(dest.rglob(RUN_INFO_FILE)):
        text = info_file.read_text()
        run_dir = json.loads(text).get("config", {}).get("paths", {}).get("output_dir")
        if isinstance(run_dir, str) and run_dir != RUN_DIR_MARK:
            write_relocated(info_file, info_file, run_dir)
            changed += info_file.read_text() != text
    print(f"normalised {changed} run_info.json files under {dest}")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--normalise"]:
        return normalise(Path(argv[1]))
    source, dest = Path(argv[0]), Path(argv[1])
    copied = 0
    for info in sorted(source.rglob(RUN_INFO_FILE)):
        run = info.parent
        if not json.loads(info.read_text()).get("summary"):  # written last; a validation-only run has no results.json
            print(f"{run}: unfinished, not copied")
            continue
        for name in FILES:
            if (run / name).is_file():
                target = dest / run.relative_to(source) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                if name == RUN_INFO_FILE:
                    write_relocated(run / name, target, str(run.resolve()))
                else:
                    shutil.copy2(run / name, target)
        copied += 1
    print(f"copied {copied} finished runs to {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
