"""experiments/ stays navigable from its index: every script is listed in experiments/README.md, and every result
folder has a README naming the script or command that made it (issue 34)."""

from __future__ import annotations

import re

import pytest

from uwe_lightning.paths import REPO_DIR

EXPERIMENTS = REPO_DIR / "experiments"
SCRIPTS = sorted(
    p for p in EXPERIMENTS.rglob("*")
    if "results" not in p.relative_to(EXPERIMENTS).parts
    and (p.suffix == ".sh" or (p.suffix == ".py" and '__name__ == "__main__"' in p.read_text()))
)
RESULT_FOLDERS = sorted(p for p in (EXPERIMENTS / "results").iterdir() if p.is_dir())
#: What a README must name: a script here, a package entry point or a make target.
MADE_BY = re.compile(r"experiments/\S+\.(py|sh)|python -m uwe_lightning\.|make [a-z]")


@pytest.mark.skipif(not EXPERIMENTS.is_dir(), reason="no experiments/ folder (an installed package)")
def test_every_script_is_in_the_index():
    index = (EXPERIMENTS / "README.md").read_text()
    missing = [str(p.relative_to(EXPERIMENTS)) for p in SCRIPTS if str(p.relative_to(EXPERIMENTS)) not in index]
    assert SCRIPTS and not missing, f"experiments/README.md does not list {missing}"


@pytest.mark.skipif(not EXPERIMENTS.is_dir(), reason="no experiments/ folder (an installed package)")
def test_every_result_folder_says_what_made_it():
    lacking = [p.name for p in RESULT_FOLDERS
               if not (p / "README.md").is_file() or not MADE_BY.search((p / "README.md").read_text())]
    assert RESULT_FOLDERS and not lacking, f"experiments/results/<folder>/README.md missing or naming no command: {lacking}"
