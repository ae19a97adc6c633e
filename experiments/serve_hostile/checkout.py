"""What both service benchmarks share: which checkout is measured, and the machine load printed beside results."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def use_checkout(repo: Path | None) -> None:
    """Put this checkout (for ``tests.helpers``), then ``repo`` if given, first on ``sys.path``: ``--repo`` measures
    another commit (a ``git worktree``) back to back with this one."""
    sys.path.insert(0, str(REPO))
    if repo is not None:
        if not (repo / "uwe_lightning").is_dir():
            raise SystemExit(f"--repo {repo}: no uwe_lightning package there")
        sys.path.insert(0, str(repo.resolve()))


def load_line(when: str) -> str:
    """The load average, printed with every result: the machine is shared."""
    one, five, fifteen = os.getloadavg()
    return f"load average {when} (1/5/15 min): {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"
