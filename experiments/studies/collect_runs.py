"""Copy the small, reportable files of finished runs into ``experiments/results/<study>/runs/`` for committing.

    python experiments/studies/collect_runs.py <multirun dir> experiments/results/<study>/runs[/<subdir>]

Per finished run (its ``run_info.json`` holds the summary, written last): ``run_info.json`` (resolved config,
provenance, summary), ``results.json`` (the test table; a validation-only run, e.g. a search job, has none),
``val_history.jsonl`` and ``.hydra/overrides.yaml`` when present; checkpoints and models stay behind.
Paths inside a run's own directory (its output, checkpoint and model dirs) are written relative to it, as
``<run_dir>/...``, and so are the sweep dir (``<sweep_dir>``) and the checkout the command ran from
(``<checkout>``), also inside ``key=path`` overrides: the copy no longer lives there, and the machine's directory
layout is not a result. ``--normalise`` rewrites already collected ``run_info.json`` files the same way, in place
(each knows its old directories from ``config.paths.output_dir`` and its command).
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
SWEEP_DIR_MARK = "<sweep_dir>"
CHECKOUT_MARK = "<checkout>"
ENTRY_POINT = "/uwe_lightning/train.py"  # the command's argv[0] below the checkout it ran from


def _override(command: list, key: str) -> str | None:
    return next((arg.split("=", 1)[1] for arg in command if isinstance(arg, str) and arg.startswith(f"{key}=")), None)


def machine_roots(info: dict, run_dir: str | None) -> list[tuple[str, str]]:
    """The machine's directories a run records, each with its marker, most specific first: the run's own dir
    (as it recorded it: ``paths.output_dir`` or the ``hydra.run.dir=`` override; else ``run_dir``, where it was
    found), the sweep dir of a multirun and the
    checkout the command ran from. (The data pack's dir stays: it says where the input was read, beside its
    fingerprint.)"""
    command = info.get("command") or []
    recorded = info.get("config", {}).get("paths", {}).get("output_dir")
    run_dir = (recorded if recorded != RUN_DIR_MARK else None) or _override(command, "hydra.run.dir") or run_dir
    entry = command[0] if command and isinstance(command[0], str) else ""
    roots = [(run_dir, RUN_DIR_MARK), (_override(command, "hydra.sweep.dir"), SWEEP_DIR_MARK),
             (entry[: -len(ENTRY_POINT)] if entry.endswith(ENTRY_POINT) else None, CHECKOUT_MARK)]
    found = [(root.rstrip("/"), mark) for root, mark in roots if root and root.startswith("/")]
    return sorted(found, key=lambda pair: -len(pair[0]))


def relocate(value: Any, roots: list[tuple[str, str]]) -> Any:
    """``value`` with every string (and key) that is one of ``roots`` or a path below it, alone or as the value of a
    ``key=path`` override, rewritten as the root's marker (``<run_dir>/checkpoints``, ``hydra.run.dir=<run_dir>``)."""
    if isinstance(value, dict):
        return {relocate(k, roots): relocate(v, roots) for k, v in value.items()}
    if isinstance(value, list):
        return [relocate(v, roots) for v in value]
    if not isinstance(value, str):
        return value
    key, sep, path = value.partition("=") if not value.startswith("/") else ("", "", value)
    for root, mark in roots:
        if path == root or path.startswith(root + "/"):
            return key + sep + mark + path[len(root):]
    return value


def write_relocated(info_file: Path, target: Path, run_dir: str | None) -> None:
    info = json.loads(info_file.read_text())
    atomic_write_json(target, relocate(info, machine_roots(info, run_dir)))


def normalise(dest: Path) -> int:
    changed = 0
    for info_file in sorted(dest.rglob(RUN_INFO_FILE)):
        text = info_file.read_text()
        write_relocated(info_file, info_file, None)
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
