"""Batch ranking: ``python -m uwe_lightning.rank ... out=<file.jsonl|file.csv>`` writes one row per query x rank
(query, rank, id, label, score), equal to ``Ranker.rank``, shows a progress bar instead of printing every query,
and a bad ``out`` is one clear line before anything loads."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.configs import rank_cfg
from tests.helpers.paths import MINI_DATA
from tests.helpers.tolerance import assert_close_to_scale
from uwe_lightning.cli.rank import run
from uwe_lightning.io import ConfigError
from uwe_lightning.paths import REPO_DIR
from uwe_lightning.ranking.ranker import Ranker
from uwe_lightning.ranking.targets import load_targets

QUERIES = ["software engineer", "nurse", "truck driver", "data engineer python sql", "cook"]


@pytest.fixture
def queries_file(tmp_path: Path) -> Path:
    path = tmp_path / "queries.txt"
    path.write_text("\n".join(QUERIES) + "\n")
    return path


def _read(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with path.open(newline="") as fh:
            return [{**row, "rank": int(row["rank"]), "score": float(row["score"])} for row in csv.DictReader(fh)]
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_out_file_has_one_row_per_query_and_rank_equal_to_ranker(tiny_model_dir, tmp_path, queries_file, capsys,
                                                                 suffix):
    out = tmp_path / "nested" / f"rankings{suffix}"
    cfg = rank_cfg(tiny_model_dir, tmp_path, f"paths.data_dir={MINI_DATA}", f"queries_file={queries_file}",
                   "k=3", "scorer=maxsim", f"out={out}", "batch_size=2")  # 3 chunks of queries
    report = run(cfg, tmp_path / "run")
    rows = _read(out)
    assert len(rows) == len(QUERIES) * 3 and report["out"] == {"path": str(out), "rows": len(rows)}
    assert list(rows[0]) == ["query", "rank", "id", "label", "score"]
    targets = load_targets("esco_skills", MINI_DATA)
    ranker = Ranker.from_pretrained(str(tiny_model_dir), scorer="maxsim", device="cpu")
    scores, index = ranker.rank(QUERIES, ranker.index(targets.texts), k=3)
    for n, query in enumerate(QUERIES):
        mine = [r for r in rows if r["query"] == query]
        assert [r["rank"] for r in mine] == [1, 2, 3]
        assert [r["id"] for r in mine] == [targets.ids[i] for i in index[n].tolist()]
        assert [r["label"] for r in mine] == [targets.texts[i] for i in index[n].tolist()]
        assert_close_to_scale(torch.tensor([r["score"] for r in mine]), scores[n])
    printed = capsys.readouterr().out
    assert "query:" not in printed and f"wrote {out} ({len(rows)} rows)" in printed
    saved = json.loads((tmp_path / "run" / "rankings.json").read_text())
    assert "results" not in saved and saved["n_queries"] == len(QUERIES)


def test_out_keeps_unicode_and_commas(tiny_model_dir, tmp_path):
    targets_file = tmp_path / "targets.txt"
    targets_file.write_text('python, java\ncaf\u00e9 "manager"\nteach\n')
    for suffix in (".jsonl", ".csv"):
        out = tmp_path / f"r{suffix}"
        run(rank_cfg(tiny_model_dir, tmp_path, "targets=file", f"targets_file={targets_file}",
                     "queries=[cook,nurse]", "k=3", f"out={out}"), tmp_path / "run")
        rows = _read(out)
        assert {r["label"] for r in rows} == {"python, java", 'caf\u00e9 "manager"', "teach"}
        assert [r["query"] for r in rows] == ["cook"] * 3 + ["nurse"] * 3


@pytest.mark.parametrize("out", ["rankings.txt", "rankings", "rankings.json"])
def test_bad_out_suffix_is_rejected_before_the_model_loads(tmp_path, out):
    cfg = rank_cfg(tmp_path / "no-model-here", tmp_path, "queries=[nurse]", f"out={tmp_path / out}")
    with pytest.raises(ConfigError, match=r"^out must be a file ending in \.jsonl or \.csv"):
        run(cfg, tmp_path / "run")


def test_bad_out_is_one_line_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "uwe_lightning.rank", "queries=[nurse]", "out=ranked.txt",
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=REPO_DIR, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("[rank] error:")]
    assert errors == ["[rank] error: out must be a file ending in .jsonl or .csv (one row per query x rank), "
                      "got 'ranked.txt'; e.g. out=rankings.jsonl"]


def test_rank_into_a_finished_rank_run_keeps_its_rankings(tiny_model_dir, tmp_path):
    """Before: a second rank into the same run directory replaced rankings.json silently; now the earlier one is
    kept under its modification time, as evaluate keeps results.json."""
    targets_file = tmp_path / "targets.txt"
    targets_file.write_text("python\nteach\nnursing care\n")
    run_dir = tmp_path / "run"
    for query in ("cook", "nurse"):
        run(rank_cfg(tiny_model_dir, tmp_path, "targets=file", f"targets_file={targets_file}", f"queries=[{query}]",
                     "k=2"), run_dir)
    (kept,) = run_dir.glob("rankings.*.json")
    assert [r["query"] for r in json.loads(kept.read_text())["results"]] == ["cook"]
    assert [r["query"] for r in json.loads((run_dir / "rankings.json").read_text())["results"]] == ["nurse"]
