"""What every writer shares (uwe_lightning/io.py): strict JSON, and published files readable whatever the umask."""

from __future__ import annotations

import json
import math
import os

import pytest

from tests.helpers.faults import load_strict_json
from uwe_lightning.io import atomic_write_json, atomic_write_text, publish_tree, strict_json


def test_atomic_write_json_writes_strict_json(tmp_path):
    """Before: json.dumps wrote a bare NaN / Infinity (report.json, bench.json), which strict readers reject."""
    data = {"map": math.nan, "rows": [1.5, math.inf, -math.inf], "pair": (math.nan, 2), "nested": {"x": [math.nan]},
            "n": 3, "name": "NaN", "when": object}
    path = tmp_path / "report.json"
    atomic_write_json(path, data)
    loaded = load_strict_json(path)
    assert loaded == {"map": None, "rows": [1.5, None, None], "pair": [None, 2], "nested": {"x": [None]}, "n": 3,
                      "name": "NaN", "when": str(object)}
    assert path.read_text().endswith("}\n")


def test_strict_json_lines_are_strict():
    """The JSONL writers (val_history.jsonl, rank out=, enrichment rows) go through strict_json line by line."""
    line = strict_json({"val/macro_map": math.nan, "step": 0})
    assert "\n" not in line and json.loads(line, parse_constant=pytest.fail) == {"val/macro_map": None, "step": 0}


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_published_files_are_0644_and_new_directories_0755(tmp_path, umask):
    """mkstemp makes a private 0600 file and mkdir takes the umask; what the project publishes is 0644 / 0755."""
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o700)
    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "new" / "deeper" / "a.txt", "x")
        atomic_write_json(existing / "b.json", {"x": 1})
        staged = tmp_path / "staged"
        (staged / "sub").mkdir(parents=True)
        (staged / "sub" / "weights").write_bytes(b"w")
        os.chmod(staged / "sub" / "weights", 0o600)
        publish_tree(staged)
    finally:
        os.umask(previous)
    assert (tmp_path / "new" / "deeper" / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (existing / "b.json").stat().st_mode & 0o777 == 0o644
    for made in (tmp_path / "new", tmp_path / "new" / "deeper", staged, staged / "sub"):
        assert made.stat().st_mode & 0o777 == 0o755, made
    assert (staged / "sub" / "weights").stat().st_mode & 0o777 == 0o644
    assert existing.stat().st_mode & 0o777 == 0o700  # a directory that was there keeps its mode
