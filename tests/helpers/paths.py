"""Fixture locations."""

from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
EDGES = FIXTURES / "edges"
MINI_DATA = FIXTURES / "uwe-data-mini"


def writable_pack(dest: Path) -> Path:
    """A copy of the mini pack for the parsers' bad-input tests: its manifest pins no file (a pack of one's
    own), so a deliberately edited file reaches the parser; the integrity check that would refuse the edit
    first is tested in tests/test_integrity.py."""
    import json
    import shutil

    shutil.copytree(MINI_DATA, dest)
    (dest / "uwe-manifest.json").write_text(json.dumps({"files": []}))
    return dest
