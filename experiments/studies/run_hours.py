"""Working time of finished training runs (their ``run_info.json`` holds the summary), from their recorded starts.

    python experiments/studies/run_hours.py <multirun or run dirs...>

A run resumed after a stop counts each start from its ``started`` to where it was last seen working (its
``last_progress``, stamped by the next start from ``progress.json``, written every few steps), and the last start by
its own wall time (``summary.wall_s``; for runs recorded without it, up to ``results.json``'s modification time,
which a copy or a git checkout resets): the gaps between a stop and the next start are left out, and runs restored
from ``experiments/results/<study>/runs`` on another machine count as they ran. A start recorded before
``last_progress`` existed has no end: that run is counted from its first start, gaps included, and marked.
Prints one line per run and the total in machine-hours (the machine and its load are not recorded here: say them
beside the number).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

from uwe_lightning.paths import RUN_INFO_FILE
from uwe_lightning.training.provenance import STAMP_FORMAT
from uwe_lightning.workbench.report import RESULTS_FILE


def _at(stamp: str) -> float:
    return dt.datetime.strptime(stamp, STAMP_FORMAT).timestamp()


def run_seconds(run_dir: Path) -> tuple[float, bool] | None:
    """(seconds worked, whether gaps between starts are left out), or None for an unfinished run."""
    info = json.loads((run_dir / RUN_INFO_FILE).read_text())
    results = run_dir / RESULTS_FILE
    if not info.get("summary"):  # written last, so a validation-only run (no results.json) counts too
        return None
    starts, wall = info["starts"], info["summary"].get("wall_s")
    if wall is None and not results.is_file():
        return None
    last = float(wall) if wall is not None else results.stat().st_mtime - _at(starts[-1]["started"])
    if any(not s.get("last_progress") for s in starts[:-1]):
        return _at(starts[-1]["started"]) + last - _at(starts[0]["started"]), len(starts) == 1
    worked = sum(max(0.0, _at(s["last_progress"]["at"]) - _at(s["started"])) for s in starts[:-1])
    return worked + last, True


def main(argv: list[str]) -> int:
    total = 0.0
    for root in map(Path, argv):
        for info in sorted(root.rglob(RUN_INFO_FILE)):
            measured = run_seconds(info.parent)
            if measured is None:
                print(f"{info.parent}: unfinished, left out")
                continue
            seconds, exact = measured
            total += seconds
            note = "" if exact else " (from the first start: includes any gaps between its starts)"
            print(f"{info.parent}: {seconds / 60:.1f} min{note}")
    print(f"total: {total / 3600:.2f} machine-hours")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
