"""A study driver (experiments/**/run.sh) run against a fake ``python`` in a throwaway git checkout.

The fake records each job's arguments (after ``-m uwe_lightning.train``) in ``calls.txt`` beside it and marks
the job done (``results.json``), so a test sees the order, the overrides and the resume decisions without
training anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FAKE_TRAIN = """#!/usr/bin/env python3
import pathlib, sys
args = sys.argv[1:]
run_dir = pathlib.Path(next(a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")))
run_dir.mkdir(parents=True, exist_ok=True)
with open(pathlib.Path(sys.argv[0]).parent / "calls.txt", "a") as fh:
    fh.write(" ".join(args[2:]) + "\\n")
(run_dir / "results.json").write_text("{}")
"""


def driver_repo(tmp_path: Path, driver: str) -> tuple[Path, Path]:
    """A one-commit git checkout holding only ``driver`` (a path under the repository) and the fake python."""
    repo = tmp_path / "repo"
    script = repo / driver
    script.parent.mkdir(parents=True)
    shutil.copy(REPO / driver, script)
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_TRAIN)
    fake.chmod(0o755)
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    return repo, fake


def drive(repo: Path, driver: str, fake: Path, runs: Path, jobs: str | None = None,
          **env: str) -> subprocess.CompletedProcess:
    """Runs the checkout's ``driver`` with ``RUNS``, ``PY`` (the fake), ``JOBS`` and any other ``env``."""
    environ = {**os.environ, "RUNS": str(runs), "PY": str(fake), **env}
    if jobs is not None:
        environ["JOBS"] = jobs
    return subprocess.run(["bash", str(repo / driver)], env=environ, capture_output=True, text=True)


def calls(fake: Path) -> list[str]:
    """The jobs the fake python ran, one line of arguments each."""
    record = fake.parent / "calls.txt"
    return record.read_text().splitlines() if record.exists() else []
