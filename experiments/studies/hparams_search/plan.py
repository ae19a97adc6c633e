"""Issue 30: the jobs of one mode of the one-axis grid, one per line (``<dir> <override>...``), for ``run.sh``.

    PYTHONPATH=. python experiments/studies/hparams_search/plan.py grid|pass2|main <runs root>

grid: pass 1 (22 runs for the 29 cells: the centre once); pass2: the axes whose pass-1 optimum moved, around
the pass-1 optimum (nothing when fewer than 2 moved); main: the two axes that moved most, at the main length.
Why a mode runs what it runs goes to stderr; a pass that is not finished yet is an error (exit status 2).
"""

from __future__ import annotations

import sys
from pathlib import Path

from uwe_lightning.io import ConfigError
from uwe_lightning.studies.search import plan


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        chosen = plan(argv[0], Path(argv[1]))
    except ConfigError as err:
        print(f"[plan] error: {err}", file=sys.stderr)
        return 2
    print(f"[plan] {chosen.note}", file=sys.stderr)
    for job in chosen.jobs:
        print(job.line())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
