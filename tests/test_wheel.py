"""The pip path: the wheel holds every file the package reads at run time (Hydra configs, the data-pack manifest
and docs, the service page) and its entry points, and, installed into a fresh venv outside the source tree,
it runs: ``uwe-evaluate --help``, ``python -m uwe_lightning.train --help`` and a tiny ranking.

The fresh venv gets the wheel with ``--no-deps`` and this interpreter's site-packages through a ``.pth`` line
(no network; a plain path line does not run the editable install's finder, so ``uwe_lightning`` can only come
from the wheel, which the test checks). The build runs on a copy of the package sources, so nothing is written
into the checkout. Slow: 11.6 min on the shared 2 cores at load average 22 (2026-12-07).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from tests.helpers.paths import FIXTURES
from uwe_lightning.paths import PACKAGE_DIR, REPO_DIR

pytestmark = pytest.mark.slow

SCRIPTS = {"uwe-train", "uwe-evaluate", "uwe-rank", "uwe-bench", "uwe-report", "uwe-serve", "uwe-export",
           "uwe-fetch", "uwe-plan-memory"}


def package_data_files() -> set[str]:
    """Every non-Python file under the package directory: what the code opens at run time."""
    return {p.relative_to(REPO_DIR).as_posix() for p in PACKAGE_DIR.rglob("*")
            if p.is_file() and p.suffix not in {".py", ".pyc"} and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_DIR / name, src / name)
    shutil.copytree(PACKAGE_DIR, src / "uwe_lightning", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (built,) = out.glob("uwe_lightning-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh_venv(wheel, tmp_path_factory) -> Path:
    env_dir = tmp_path_factory.mktemp("venv") / "v"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    (site,) = (env_dir / "lib").glob("python*/site-packages")
    (site / "_deps_from_the_test_interpreter.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install",
                           "--no-deps", "--no-index", "-q", str(wheel)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return env_dir


def test_the_wheel_holds_the_package_data_and_entry_points(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    missing = package_data_files() - names
    assert not missing, f"the wheel lacks files the package reads at run time: {sorted(missing)}"
    assert any(n.startswith("uwe_lightning/conf/experiment/") and n.endswith(".yaml") for n in names)
    assert {line.split("=")[0].strip() for line in entry_points.splitlines() if "=" in line} == SCRIPTS


def run(env_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"OMP_NUM_THREADS": "1", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    return subprocess.run(list(args), cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=300)


def test_the_installed_wheel_runs_outside_the_checkout(fresh_venv, tmp_path, tiny_model_dir):
    python, bin_dir = str(fresh_venv / "bin" / "python"), fresh_venv / "bin"
    where = run(fresh_venv, python, "-c", "import uwe_lightning; print(uwe_lightning.__file__)", cwd=tmp_path)
    assert where.returncode == 0, where.stderr[-2000:]
    assert Path(where.stdout.strip()).is_relative_to(fresh_venv), where.stdout  # the wheel, not the checkout

    for args in ([str(bin_dir / "uwe-evaluate"), "--help"], [python, "-m", "uwe_lightning.train", "--help"]):
        proc = run(fresh_venv, *args, cwd=tmp_path)
        assert proc.returncode == 0 and "Powered by Hydra" in proc.stdout, proc.stderr[-2000:]

    from uwe_lightning.model.pretrained import UWEModel

    model = UWEModel.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "model")
    out = tmp_path / "rank"
    proc = run(fresh_venv, str(bin_dir / "uwe-rank"), "model=trained", f"model.backbone={model}",
               "queries=[data analyst]", "targets=file", f"targets_file={FIXTURES / 'own_graph' / 'skills.csv'}",
               "k=3", f"hydra.run.dir={out}", "cache=false", "device=cpu", "show_progress=false", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    top = json.loads((out / "rankings.json").read_text())["results"][0]["top"]
    assert len(top) == 3 and all(row["id"].startswith("sk:") for row in top)
