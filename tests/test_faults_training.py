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
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.configs import base_overrides, make_cfg
from tests.helpers.faults import Killed, tree_state
from uwe_lightning.io import ConfigError, DataError
from uwe_lightning.paths import REPO_DIR
from uwe_lightning.training.jobrecord import (
    HYDRA_DIR,
    HYDRA_FILES,
    KEPT_MULTIRUN_FILE,
    MULTIRUN_FILE,
    RESTARTS_DIR,
    SWEEP_RESTARTS_DIR,
    HeldFileHandler,
)
from uwe_lightning.training.run import train
from uwe_lightning.training.rundir import prepare_run_dir

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
    (tmp_path / "checkpoints" / ".last.ckpt.x1y2.partial").write_bytes(b"half a checkpoint")
    before = tree_state(tmp_path)
    with pytest.raises(ConfigError, match=r"already holds a run .*resume=true.*hydra\.run\.dir.*overwrite=true"):
        train(run_cfg(tmp_path, tiny_model_dir))
    assert tree_state(tmp_path) == before  # refused: not even a killed write's leftovers are removed
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
    assert selection["step0_val"] == reference["history"][0]["val/macro/map"]
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

    run_dir = tmp_path / "new-run"
    result = subprocess.run(
        [sys.executable, "-m", "uwe_lightning.train", override, f"hydra.run.dir={run_dir}", "logger=none"],
        cwd=REPO_DIR, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert CLI_CASES[override] in result.stderr
    assert "Traceback" not in result.stderr
    assert not run_dir.exists()  # the directory Hydra made for the refused run went again


# ---------------------------------------------------------------------------------------------------------
# A refusal touches nothing: the run directory of a finished run stays byte-identical (``.hydra/`` included)
# ---------------------------------------------------------------------------------------------------------


def cli(tool: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m uwe_lightning.<tool> args...`` from the repository root (one thread, W&B silent)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}
    return subprocess.run([sys.executable, "-m", f"uwe_lightning.{tool}", *args], cwd=REPO_DIR, env=env,
                          capture_output=True, text=True, timeout=300)


def small_cli_run(model_dir: Path) -> list[str]:
    return base_overrides(None, model_dir, steps=2, every=None, test_tasks="[JobNorm]")


@pytest.fixture(scope="module")
def finished_cli_run(tmp_path_factory, tiny_model_dir) -> Path:
    """A finished run trained through the real CLI (Hydra writes its record and train.log): about 10 s."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    result = cli("train", *small_cli_run(tiny_model_dir), f"hydra.run.dir='{run_dir}'")
    assert result.returncode == 0, result.stderr[-3000:]
    assert all((run_dir / HYDRA_DIR / name).is_file() for name in HYDRA_FILES)
    assert (run_dir / "train.log").stat().st_size > 0 and (run_dir / "results.json").is_file()
    return run_dir


def assert_refused_without_a_trace(run_dir: Path, refused: list[tuple[str, list[str]]]) -> None:
    """Each ``(tool, args)`` run into ``run_dir`` exits 2 with one line and leaves ``run_dir`` as it was."""
    before = tree_state(run_dir)
    for tool, args in refused:
        result = cli(tool, *args, f"hydra.run.dir='{run_dir}'")
        assert result.returncode == 2, (tool, result.stderr[-2000:])
        assert f"[{tool}] error:" in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert tree_state(run_dir) == before, f"a refused {tool} {args[-1]} changed the run directory"


def test_refused_train_leaves_a_finished_run_byte_identical(finished_cli_run, tiny_model_dir, tmp_path):
    """Before: Hydra rewrote .hydra/config.yaml, hydra.yaml and overrides.yaml before train refused the
    directory, so the finished run's record said it was trained with optim.lr=0.001."""
    short_row = write_edges(tmp_path / "A.csv", [("python", "py")])
    short_row.write_text(short_row.read_text() + "sql\n")
    assert_refused_without_a_trace(finished_cli_run, [
        ("train", [*small_cli_run(tiny_model_dir), "optim.lr=0.001"]),  # the directory holds a run
        # a resume is accepted, then refused on bad data (after the model, the seed and the checkpoint check)
        ("train", [*small_cli_run(tiny_model_dir), "resume=true", f"data.source.edge_files.A='{short_row}'"]),
    ])


@pytest.mark.slow
def test_refused_evaluate_and_rank_leave_a_run_byte_identical(finished_cli_run, tiny_model_dir, tmp_path):
    """The same for the other commands with a run directory (Hydra wrote .hydra/ and <job>.log before they
    could refuse)."""
    assert_refused_without_a_trace(finished_cli_run, [
        ("evaluate", ["model=trained", f"model.backbone='{finished_cli_run / 'best_model'}'", "max_queries=0"]),
        ("rank", [f"model.backbone='{tiny_model_dir}'", "queries=[nurse]", "targets=file",
                  f"targets_file='{tmp_path / 'no-such-file.txt'}'", "device=cpu"]),
    ])


def test_resume_keeps_the_first_starts_record(finished_cli_run, tiny_model_dir, tmp_path):
    """resume=true writes its own Hydra files to .hydra/restarts/<time>/; the first start's stay as they were."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished_cli_run, run_dir)
    first = {name: (run_dir / HYDRA_DIR / name).read_bytes() for name in HYDRA_FILES}
    result = cli("train", *small_cli_run(tiny_model_dir), "resume=true", f"hydra.run.dir='{run_dir}'")
    assert result.returncode == 0, result.stderr[-3000:]
    assert {name: (run_dir / HYDRA_DIR / name).read_bytes() for name in HYDRA_FILES} == first
    (restart,) = (run_dir / HYDRA_DIR / RESTARTS_DIR).iterdir()
    assert "resume=true" in (restart / "overrides.yaml").read_text()
    assert "resume=true" not in first["overrides.yaml"].decode()


def test_multirun_into_a_sweep_dir_keeps_its_first_record(finished_cli_run, tiny_model_dir, tmp_path):
    """Hydra's sweeper rewrote <sweep>/multirun.yaml at every start: a second multirun into the same directory
    (here one whose only job is refused, the directory holding a finished run) replaced the first's record.
    Now the first stays byte-identical and the later start's goes to .restarts/<time>/."""
    sweep = tmp_path / "sweep"
    shutil.copytree(finished_cli_run, sweep / "0")
    first = b"# the first start's record\n"
    (sweep / MULTIRUN_FILE).write_bytes(first)
    before = tree_state(sweep / "0")
    result = cli("train", "-m", *small_cli_run(tiny_model_dir), "optim.lr=0.001", f"hydra.sweep.dir='{sweep}'")
    assert result.returncode == 2, result.stderr[-2000:]
    assert (sweep / MULTIRUN_FILE).read_bytes() == first
    assert tree_state(sweep / "0") == before
    (later,) = (sweep / SWEEP_RESTARTS_DIR).glob(f"*/{MULTIRUN_FILE}")
    assert "optim.lr=0.001" in later.read_text()
    assert not (sweep / KEPT_MULTIRUN_FILE).exists()


def test_overwrite_replaces_the_earlier_runs_record(tmp_path):
    """overwrite=true starts a new run: the earlier run's .hydra/ goes with its outputs (the new start writes
    its own); a refused overwrite-less start and a resume keep it."""
    (tmp_path / HYDRA_DIR).mkdir()
    (tmp_path / HYDRA_DIR / "config.yaml").write_text("seed: 0\n")
    (tmp_path / "results.json").write_text("{}")
    assert prepare_run_dir(tmp_path, resume=False, overwrite=True) is None
    assert not (tmp_path / HYDRA_DIR).exists() and not (tmp_path / "results.json").exists()


def test_held_log_reaches_the_file_only_when_the_run_is_accepted(tmp_path):
    """Hydra opens <job>.log before the command decides; its records wait for accept_run (a refusal drops them,
    and no empty log file appears)."""
    logger = logging.getLogger("tests.held_log")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    for accepted in (False, True):
        path = tmp_path / f"accepted-{accepted}.log"
        handler = HeldFileHandler(str(path))
        logger.addHandler(handler)
        try:
            logger.info("loading the graphs")
            assert not path.exists()
            handler.release_held() if accepted else handler.drop_held()
            logger.info("training")
        finally:
            logger.removeHandler(handler)
            handler.close()
        assert path.exists() == accepted
        if accepted:
            assert path.read_text().splitlines() == ["loading the graphs", "training"]


def test_a_damaged_checkpoint_is_refused_in_one_line_and_touched_nothing(tmp_path, tiny_model_dir):
    """A truncated last.ckpt is named before the resume starts from it (no torch traceback), and the refused
    resume changes no byte of the run dir."""
    run_dir = tmp_path / "run"
    train(run_cfg(run_dir, tiny_model_dir))
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    before = tree_state(run_dir)
    with pytest.raises(DataError, match=r"checkpoint .*last\.ckpt is damaged .*overwrite=true") as err:
        train(run_cfg(run_dir, tiny_model_dir, "resume=true"))
    assert "\n" not in str(err.value)
    assert tree_state(run_dir) == before


def test_a_lightning_misconfiguration_is_a_user_error():
    """Lightning's own "this Trainer setting cannot work" is the user's to fix (one line, exit 2); cli.errors
    recognises it without importing Lightning itself (tests/test_architecture.py)."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from uwe_lightning.cli.errors import user_error

    err = MisconfigurationException("devices=3 is not valid here")
    assert user_error(err) is err
    assert user_error(RuntimeError("a bug")) is None
