"""A damaged data file is refused in one line when it is read, never turned into a different number with exit 0,
and every run records the fingerprint of what it read (issue 26: a pack file cut at 50 % gave Job2Skill MAP
12.73 over 1,523 queries instead of 12.38 over 3,039)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.helpers.paths import MINI_DATA
from uwe_lightning import integrity
from uwe_lightning.io import DataError
from uwe_lightning.paths import data_file

OCCUPATIONS = "esco/v1.2.0/occupations_en.csv"


def truncate_mid_field(data: bytes) -> bytes:
    return data[: len(data) // 2]


def drop_last_field(data: bytes) -> bytes:  # a short last row: the row ends after its first fields
    lines = data.rstrip(b"\n").split(b"\n")
    return b"\n".join([*lines[:-1], lines[-1].rsplit(b",", 1)[0]]) + b"\n"


def half_the_rows(data: bytes) -> bytes:
    lines = data.splitlines(keepends=True)
    return b"".join(lines[: max(2, len(lines) // 2)])


def flip_one_byte(data: bytes) -> bytes:
    i = len(data) * 2 // 3
    return data[:i] + bytes([data[i] ^ 0x20]) + data[i + 1 :]


DAMAGES = [truncate_mid_field, drop_last_field, half_the_rows, flip_one_byte]


@pytest.fixture
def mini_copy(tmp_path) -> Path:
    """The mini pack with its own manifest (every file pinned)."""
    return Path(shutil.copytree(MINI_DATA, tmp_path / "pack"))


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__)
def test_a_damaged_file_is_refused_naming_it(damage, mini_copy, tmp_path):
    path = mini_copy / OCCUPATIONS
    assert data_file(mini_copy, OCCUPATIONS) == path.resolve()  # intact: accepted
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=r"data file .*occupations_en\.csv is not the pack's .*damaged") as err:
        data_file(mini_copy, OCCUPATIONS)
    assert "\n" not in str(err.value)


def test_the_benchmark_refuses_a_damaged_pack_instead_of_scoring_it(mini_copy):
    from uwe_lightning.model.lexical import TfidfRankingModel
    from uwe_lightning.workbench.runner import evaluate

    intact = evaluate(TfidfRankingModel(), ["Job2Skill"], "test", mini_copy)
    assert intact["tasks"]["Job2Skill"]["n_queries"] > 0
    path = mini_copy / OCCUPATIONS
    path.write_bytes(half_the_rows(path.read_bytes()))
    with pytest.raises(DataError, match="occupations_en.csv is not the pack's"):
        evaluate(TfidfRankingModel(), ["Job2Skill"], "test", mini_copy)


def test_the_uwe_data_pack_is_checked_against_the_shipped_manifest(tmp_path, real_data_dir):
    """A directory without a manifest of its own is the uwe-data pack: the real occupations file cut at 50 %
    (the case of issue 26) is refused, the intact one accepted."""
    real = real_data_dir / OCCUPATIONS
    assert data_file(real_data_dir, OCCUPATIONS) == real.resolve()
    damaged = tmp_path / "pack" / OCCUPATIONS
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(truncate_mid_field(real.read_bytes()))
    with pytest.raises(DataError, match=r"not the pack's .*`make data`"):
        data_file(tmp_path / "pack", OCCUPATIONS)


def test_a_verified_file_is_not_hashed_again_until_it_changes(mini_copy, tmp_path, monkeypatch):
    calls = []
    real_hash = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda p: calls.append(p) or real_hash(p))
    cache = tmp_path / "cache"
    integrity.checked_file(mini_copy, OCCUPATIONS, cache)
    integrity._stamps.clear()  # a new process: the stamps come from the cache file
    integrity.checked_file(mini_copy, OCCUPATIONS, cache)
    assert len(calls) == 1 and (cache / integrity.STAMP_FILE).is_file()
    path = mini_copy / OCCUPATIONS
    path.write_bytes(flip_one_byte(path.read_bytes()))  # new mtime and bytes: hashed again, refused
    with pytest.raises(DataError):
        integrity.checked_file(mini_copy, OCCUPATIONS, cache)
    assert len(calls) == 2


def test_a_pack_of_ones_own_records_what_it_read_without_refusing(tmp_path):
    from tests.helpers.paths import writable_pack

    pack = writable_pack(tmp_path / "own")
    path = pack / OCCUPATIONS
    path.write_bytes(half_the_rows(path.read_bytes()))
    data_file(pack, OCCUPATIONS)
    files = integrity.data_fingerprint()["dirs"][str(pack.resolve())]["files"]
    assert files[OCCUPATIONS] == f"{integrity.sha256_file(path)} (not in the manifest)"


def test_results_and_run_info_record_the_fingerprint_and_the_machine(mini_copy, tmp_path):
    from uwe_lightning.model.lexical import TfidfRankingModel
    from uwe_lightning.training.provenance import record_start
    from uwe_lightning.workbench.report import write_results
    from uwe_lightning.workbench.runner import evaluate

    results = evaluate(TfidfRankingModel(), ["Job2Skill"], "test", mini_copy)
    json_path, _ = write_results(results, tmp_path / "eval", title="t")
    recorded = json.loads(json_path.read_text())["data_pack"]
    assert recorded["dirs"][str(mini_copy.resolve())]["files"][OCCUPATIONS] == integrity.sha256_file(
        mini_copy / OCCUPATIONS)
    assert len(recorded["sha256"]) == 64
    info = record_start(tmp_path, OmegaConf.create({"a": 1}), None, 0)
    assert info["data_pack"]["sha256"] == integrity.data_fingerprint()["sha256"]
    machine = info["machine"]
    assert machine["cpu"] and machine["torch_cpu_capability"] and machine["torch_threads"] >= 1
    assert info["starts"][-1]["machine"] == machine


# --- models ---------------------------------------------------------------------------------------------------

def _zero_second_half(weights: Path) -> None:
    """Header intact, the second half of the tensor data zeroed (issue 26: rank then scored every target 1.0)."""
    import struct

    data = bytearray(weights.read_bytes())
    start = 8 + struct.unpack("<Q", data[:8])[0]
    start += (len(data) - start) // 2
    data[start:] = bytes(len(data) - start)
    weights.write_bytes(bytes(data))


@pytest.fixture
def saved_model(tiny_model_dir, tmp_path) -> Path:
    from uwe_lightning.model.pretrained import UWEModel

    return UWEModel.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "saved")


def test_a_saved_model_records_its_files_and_loads(saved_model):
    from uwe_lightning.model.pretrained import UWEModel, read_uwe_config

    files = read_uwe_config(saved_model)["files"]
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= files.keys()
    assert files["model.safetensors"]["sha256"] == integrity.sha256_file(saved_model / "model.safetensors")
    UWEModel.from_pretrained(saved_model)


@pytest.mark.parametrize("where", ["saved", "plain"])
def test_zeroed_weights_are_refused(where, saved_model, tiny_model_dir, tmp_path):
    """A saved model fails its checksum; a plain Hugging Face directory (no checksums) fails the sanity probe."""
    from uwe_lightning.model.pretrained import UWEModel

    model = saved_model if where == "saved" else Path(shutil.copytree(tiny_model_dir, tmp_path / "plain"))
    _zero_second_half(model / "model.safetensors")
    match = r"model\.safetensors is damaged" if where == "saved" else "maps distinct words .* to one embedding"
    with pytest.raises(DataError, match=match):
        UWEModel.from_pretrained(model)


@pytest.mark.parametrize("damage", ["truncated weights", "garbage tokenizer", "garbage config"])
def test_a_damaged_plain_model_is_one_line(damage, tiny_model_dir, tmp_path):
    from uwe_lightning.model.pretrained import UWEModel

    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "plain"))
    name = {"truncated weights": "model.safetensors", "garbage tokenizer": "tokenizer.json",
            "garbage config": "config.json"}[damage]
    path = model / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2] if damage == "truncated weights" else b"{garbage")
    with pytest.raises((DataError, OSError)) as err:
        UWEModel.from_pretrained(model)
    assert "\n" not in str(err.value) and str(model) in str(err.value)


def test_the_rank_cli_refuses_a_zeroed_model_in_one_line(saved_model, tmp_path):
    import subprocess
    import sys

    from uwe_lightning.paths import REPO_DIR

    _zero_second_half(saved_model / "model.safetensors")
    targets = tmp_path / "targets.txt"
    targets.write_text("nurse\nchef\n")
    result = subprocess.run([sys.executable, "-m", "uwe_lightning.rank", "model=trained",
                             f"model.backbone={saved_model}", "queries=[care for patients]", "targets=file",
                             f"targets_file={targets}", f"hydra.run.dir={tmp_path / 'run'}"],
                            cwd=REPO_DIR, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert any("model.safetensors is damaged" in line for line in lines) and len(lines) <= 3, result.stderr


def test_a_resume_on_another_cpu_type_is_marked(tmp_path, monkeypatch):
    from uwe_lightning.training import provenance

    cfg = OmegaConf.create({"a": 1})
    first = provenance.record_start(tmp_path, cfg, None, 0)
    assert "other_cpu_than_first_start" not in first["starts"][-1]
    assert provenance.record_start(tmp_path, cfg, tmp_path / "last.ckpt", 50)["starts"][-1].get(
        "other_cpu_than_first_start") is None  # the same machine
    other = {**provenance.machine_info(), "cpu": "Some Other CPU", "cpu_flags": ["avx2"]}
    monkeypatch.setattr(provenance, "machine_info", lambda: other)
    again = provenance.record_start(tmp_path, cfg, tmp_path / "last.ckpt", 100)
    assert again["starts"][-1]["other_cpu_than_first_start"] is True and len(again["starts"]) == 3


def test_a_resume_stamps_where_the_previous_start_was_last_seen_and_run_hours_leaves_the_gap_out(tmp_path):
    import os
    import time as _time

    from uwe_lightning.training import provenance

    cfg = OmegaConf.create({"a": 1})
    provenance.record_start(tmp_path, cfg, None, 0)
    info_path = tmp_path / "run_info.json"
    info = json.loads(info_path.read_text())
    info["starts"][0]["started"] = "2026-01-01T10:00:00"
    info_path.write_text(json.dumps(info))
    seen = _time.mktime((2026, 1, 1, 10, 30, 0, 0, 0, -1))  # the first start last wrote progress at 10:30
    (tmp_path / "progress.json").write_text(json.dumps({"step": 40, "time": seen}))
    again = provenance.record_start(tmp_path, cfg, tmp_path / "last.ckpt", 40)
    assert again["starts"][0]["last_progress"] == {"step": 40, "at": "2026-01-01T10:30:00"}
    assert "last_progress" not in again["starts"][1]
    again["starts"][1]["started"] = "2026-01-01T12:00:00"  # resumed 90 idle minutes later
    again["summary"] = {"final_step": 80}
    info_path.write_text(json.dumps(again))
    results = tmp_path / "results.json"
    results.write_text("{}")
    end = _time.mktime((2026, 1, 1, 12, 20, 0, 0, 0, -1))
    os.utime(results, (end, end))
    run_hours = _script("run_hours")
    assert run_hours.run_seconds(tmp_path) == (pytest.approx(50 * 60), True)  # 30 + 20 minutes, not 140
    del again["starts"][0]["last_progress"]  # a run recorded before the stamp: counted from its first start
    info_path.write_text(json.dumps(again))
    assert run_hours.run_seconds(tmp_path) == (pytest.approx(140 * 60), False)
    # the last start's own wall time wins over results.json's modification time, which a copy or checkout resets
    again["starts"][0]["last_progress"] = {"step": 40, "at": "2026-01-01T10:30:00"}
    again["summary"]["wall_s"] = 15 * 60
    info_path.write_text(json.dumps(again))
    os.utime(results, None)  # "copied" now
    assert run_hours.run_seconds(tmp_path) == (pytest.approx(45 * 60), True)
    results.unlink()  # a validation-only run (a search job): its summary says it finished
    assert run_hours.run_seconds(tmp_path) == (pytest.approx(45 * 60), True)


def _script(name: str):
    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).resolve().parents[1] / f"experiments/studies/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_collected_runs_name_their_own_directory_relatively(tmp_path):
    """A committed run_info.json must not carry the machine's path to the run dir it was copied from; paths
    elsewhere (the data pack) stay as recorded, and a path that merely shares the prefix is left alone."""
    collect_runs = _script("collect_runs")
    run = tmp_path / "multirun" / "all-seed0"
    (run / "checkpoints").mkdir(parents=True)
    info = {"config": {"paths": {"output_dir": str(run), "data_dir": "/data/pack"},
                       "callbacks": {"dirpath": f"{run}/checkpoints", "sibling": f"{run}-other/x"}},
            "starts": [{"resumed_from": f"{run}/checkpoints/last.ckpt"}], "data_pack": {"/data/pack": {"n": 1}},
            "summary": {"export": {"dir": f"{run}/best_model"}},
            "command": ["/checkouts/wt/uwe_lightning/train.py", "seed=0", f"hydra.run.dir={run}",
                        f"hydra.sweep.dir={tmp_path}/sweep"]}
    (run / "run_info.json").write_text(json.dumps(info))
    (run / "results.json").write_text("{}")
    search_job = tmp_path / "multirun" / "lr=1e-05"  # validation only: a summary, no results.json
    search_job.mkdir()
    (search_job / "run_info.json").write_text(json.dumps({"summary": {"best_val": {}}}))
    (tmp_path / "multirun" / "stopped").mkdir()
    (tmp_path / "multirun" / "stopped" / "run_info.json").write_text(json.dumps({"starts": []}))
    dest = tmp_path / "committed"
    assert collect_runs.main([str(tmp_path / "multirun"), str(dest)]) == 0
    assert (dest / "lr=1e-05" / "run_info.json").is_file() and not (dest / "stopped").exists()
    got = json.loads((dest / "all-seed0" / "run_info.json").read_text())
    assert got["config"]["paths"] == {"output_dir": "<run_dir>", "data_dir": "/data/pack"}
    assert got["config"]["callbacks"] == {"dirpath": "<run_dir>/checkpoints", "sibling": f"{run}-other/x"}
    assert got["starts"][0]["resumed_from"] == "<run_dir>/checkpoints/last.ckpt"
    assert got["summary"]["export"]["dir"] == "<run_dir>/best_model"
    assert got["command"] == ["<checkout>/uwe_lightning/train.py", "seed=0", "hydra.run.dir=<run_dir>",
                              "hydra.sweep.dir=<sweep_dir>"]
    assert str(tmp_path) not in json.dumps({k: v for k, v in got.items() if k != "config"})
    # runs collected before the rewrite existed: --normalise fixes them in place, and is idempotent
    old = dest / "old-run" / "run_info.json"
    old.parent.mkdir()
    old.write_text(json.dumps(info))
    assert collect_runs.main(["--normalise", str(dest)]) == 0
    assert json.loads(old.read_text()) == got
    before = old.read_text()
    collect_runs.main(["--normalise", str(dest)])
    assert old.read_text() == before
