"""Fault injection on training runs (tiny model, CPU): interrupted runs resume to the uninterrupted result.

Each scenario stops a run at one point (a SIGKILL stand-in before the first checkpoint, between checkpoints
and after the last one; a real SIGTERM; a real SIGINT), resumes it with ``resume=true`` and checks that the
final weights are bit-identical (sha256 of the state dict) to those of the uninterrupted run, and that the
validation history is the same. The tiny BERT has dropout 0.1, so this fails unless every step's randomness
is restored.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from tests.helpers.configs import make_cfg
from tests.helpers.faults import Killed
from uwe_lightning.io import ConfigError, DataError
from uwe_lightning.training.run import train

STEPS, EVERY = 6, 2  # checkpoints (and validations) at steps 2, 4, 6; validation also at step 0


def run_cfg(run_dir: Path, model_dir: Path, *extra: str):
    return make_cfg(run_dir, model_dir, "logger=none", *extra, steps=STEPS, every=EVERY)


def weights_sha256(run_dir: Path) -> str:
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].contiguous().numpy().tobytes())
    return digest.hexdigest()


def val_history(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "val_history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "val/seconds"} for row in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    summary = train(run_cfg(run_dir, tiny_model_dir))
    assert summary["final_step"] == STEPS
    return {"sha": weights_sha256(run_dir), "history": val_history(run_dir), "summary": summary}


@pytest.mark.parametrize(
    ("step", "how", "exit_status"),
    [(1, "kill", None), (3, "kill", None), (3, "SIGTERM", 143), (5, "SIGINT", 130), (-1, "kill", None)],
    ids=["kill-before-first-checkpoint", "kill-between-checkpoints", "sigterm", "sigint", "kill-after-last-checkpoint"],
)
def test_resumed_run_equals_the_uninterrupted_run(tmp_path, tiny_model_dir, reference, step, how, exit_status, capsys):
    fault = ["+callbacks.fault._target_=tests.helpers.faults.KillAt", f"+callbacks.fault.step={step}",
             f"+callbacks.fault.how={how}"]
    if exit_status is None:
        with pytest.raises(Killed):
            train(run_cfg(tmp_path, tiny_model_dir, *fault))
    else:
        with pytest.raises(SystemExit) as stopped:
            train(run_cfg(tmp_path, tiny_model_dir, *fault))
        assert stopped.value.code == exit_status
        assert "resume=true" in capsys.readouterr().err  # the resume command is printed
        ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        assert ckpt["global_step"] == step  # the signal's step was saved, not an earlier one
    summary = train(run_cfg(tmp_path, tiny_model_dir, "resume=true"))
    assert summary["final_step"] == STEPS
    assert weights_sha256(tmp_path) == reference["sha"]
    assert val_history(tmp_path) == reference["history"]
    assert summary["export"]["provenance"]["step"] == reference["summary"]["export"]["provenance"]["step"]


def test_existing_run_dir_is_refused_or_explicitly_overwritten(tmp_path, tiny_model_dir):
    train(run_cfg(tmp_path, tiny_model_dir))
    with pytest.raises(ConfigError, match=r"already holds a run .*resume=true.*hydra\.run\.dir.*overwrite=true"):
        train(run_cfg(tmp_path, tiny_model_dir))
    (tmp_path / "checkpoints" / ".last.ckpt.x1y2.partial").write_bytes(b"half a checkpoint")
    summary = train(run_cfg(tmp_path, tiny_model_dir, "overwrite=true", "seed=1"))
    assert summary["final_step"] == STEPS
    assert not list((tmp_path / "checkpoints").glob(".*.partial"))  # a killed write's leftovers are removed
    steps = [row["step"] for row in val_history(tmp_path)]
    assert steps == [0, 2, 4, 6]  # one run's history, not two interleaved
    assert len(list((tmp_path / "checkpoints").glob("best-step*.ckpt"))) == 1
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert len(info["starts"]) == 1 and info["config"]["seed"] == 1


def test_resume_without_a_run_is_an_error(tmp_path, tiny_model_dir):
    with pytest.raises(ConfigError, match="holds no run to resume"):
        train(run_cfg(tmp_path / "nothing-here", tiny_model_dir, "resume=true"))


def test_summary_says_how_the_export_compares_with_step_0(tmp_path, tiny_model_dir, reference):
    selection = reference["summary"]["selection"]
    assert selection["exported_step"] == reference["summary"]["export"]["provenance"]["step"]
    assert selection["step0_val"] == reference["history"][0]["val/macro_map"]
    assert selection["exported_beats_step0"] == (selection["exported_val"] >= selection["step0_val"])


def write_edges(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("skill,text\n" + "".join(f"{s},{t}\n" for s, t in rows))
    return path


def test_sparse_graphs_train_and_empty_edge_files_fail_at_load(tmp_path, tiny_model_dir):
    """Graph A links one skill only: most steps hold no A text; the run trains, A's term is skipped there."""
    from tests.helpers.paths import EDGES

    sparse = write_edges(tmp_path / "A.csv", [("python", "py")])
    cfg = run_cfg(tmp_path / "run", tiny_model_dir, f"data.source.edge_files.A='{sparse}'", "data.skills_per_step=2")
    summary = train(cfg)
    assert summary["final_step"] == STEPS
    header_only = tmp_path / "empty.csv"
    header_only.write_text("skill,text\n")
    cfg = run_cfg(tmp_path / "run2", tiny_model_dir, f"data.source.edge_files.A='{header_only}'")
    with pytest.raises(DataError, match=r"graph A: 0 edges in .*empty\.csv"):
        train(cfg)
    assert not (tmp_path / "run2" / "run_info.json").exists()  # failed before anything was written
    unknown = write_edges(tmp_path / "unknown.csv", [("no such skill", "x")])
    cfg = run_cfg(tmp_path / "run3", tiny_model_dir, f"data.source.edge_files.V='{unknown}'",
                  "data.source.on_unknown=drop")
    with pytest.raises(DataError, match=r"graph V: 0 edges .*1 rows with unknown skills dropped"):
        train(cfg)
    assert EDGES.is_dir()


def test_non_utf8_pack_file_names_the_line(tmp_path):
    from uwe_lightning.io import read_csv_checked

    path = tmp_path / "skills.csv"
    path.write_bytes(b"conceptUri,preferredLabel\nu1,caf\xe9\nu2,ok\n")
    with pytest.raises(DataError, match=r"skills\.csv: line 2: not UTF-8"):
        read_csv_checked(path, ["conceptUri"])


CLI_CASES = {  # through the real CLI (a subprocess each; the value checks below run in-process)
    "trainer.max_steps=abc": "trainer.max_steps must be a whole number >= 1, got 'abc'",
    "validation.max_querys=5": "max_querys",
}


@pytest.mark.parametrize("override", ["validation.max_queries=-5", "data.skills_per_step=0", "test.max_queries=0",
                                      "validation.every_n_steps=0", "export.select=first"])
def test_bad_values_name_their_key(tmp_path, tiny_model_dir, override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        train(run_cfg(tmp_path, tiny_model_dir, override))
    assert not (tmp_path / "run_info.json").exists()


@pytest.mark.parametrize("override", sorted(CLI_CASES))
def test_train_cli_user_errors_are_one_line_and_exit_2(tmp_path, override):
    import subprocess
    import sys

    from uwe_lightning.paths import REPO_DIR

    result = subprocess.run(
        [sys.executable, "-m", "uwe_lightning.train", override, f"hydra.run.dir={tmp_path}", "logger=none"],
        cwd=REPO_DIR, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert CLI_CASES[override] in result.stderr
    assert "Traceback" not in result.stderr
