"""Copy the small, reportable files of finished runs into ``experiments/results/<study>/runs/`` for committing.

    python experiments/studies/collect_runs.py <multirun dir> experiments/results/<study>/runs[/<subdir>]

Per finished run: ``run_info.json`` (resolved config, provenance, summary), ``results.json`` (the test table),
``val_history.jsonl`` and ``.hydra/overrides.yaml`` when present; checkpoints and models stay behind.
``python -m uwe_lightning.report <that runs dir>`` then rebuilds the study's tables and plots from them.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from uwe_lightning.paths import RUN_INFO_FILE
from uwe_lightning.workbench.report import RESULTS_FILE

FILES = (RUN_INFO_FILE, RESULTS_FILE, "val_history.jsonl", "knowledge_gain.md", ".hydra/overrides.yaml")


def main(argv: list[str]) -> int:
    source, dest = Path(argv[0]), Path(argv[1])
    copied = 0
    for info in sorted(source.rglob(RUN_INFO_FILE)):
        run = info.parent
        if not json.loads(info.read_text()).get("summary") or not (run / RESULTS_FILE).is_file():
            print(f"{run}: unfinished, not copied")
            continue
        for name in FILES:
            if (run / name).is_file():
                target = dest / run.relative_to(source) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(run / name, target)
        copied += 1
    print(f"copied {copied} finished runs to {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
