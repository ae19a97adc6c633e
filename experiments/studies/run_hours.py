"""Wall time of finished training runs: from each run's first start (``run_info.json``) to its ``results.json``.

    python experiments/studies/run_hours.py <multirun or run dirs...>

Prints one line per run and the total in machine-hours (the machine and its load are not recorded here: say
them beside the number).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

from uwe_lightning.paths import RUN_INFO_FILE
from uwe_lightning.workbench.report import RESULTS_FILE


def run_seconds(run_dir: Path) -> float | None:
    info = json.loads((run_dir / RUN_INFO_FILE).read_text())
    results = run_dir / RESULTS_FILE
    if not info.get("summary") or not results.is_file():
        return None
    started = dt.datetime.strptime(info["starts"][0]["started"], "%Y-%m-%dT%H:%M:%S")
    return results.stat().st_mtime - started.timestamp()


def main(argv: list[str]) -> int:
    total = 0.0
    for root in map(Path, argv):
        for info in sorted(root.rglob(RUN_INFO_FILE)):
            seconds = run_seconds(info.parent)
            if seconds is None:
                print(f"{info.parent}: unfinished, left out")
                continue
            total += seconds
            print(f"{info.parent}: {seconds / 60:.1f} min")
    print(f"total: {total / 3600:.2f} machine-hours")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
