"""The pip path: ``python -m build`` makes an sdist and, from it, a wheel; both hold every file the package reads
at run time (Hydra configs, the data-pack manifest and docs, the service page), the wheel its entry points; the
wheel, installed with an extra (``[enrich]``) into a fresh venv outside the source tree, runs ``uwe-evaluate
--help``, ``python -m uwe_lightning.train --help`` and a tiny ranking.

The fresh venv sees this interpreter's site-packages through a ``.pth`` line (so torch and every other dependency
are already there: nothing is downloaded), and pip installs the wheel with ``--no-index``: a dependency or extra
package that were missing would fail the install instead of being fetched. A plain path line does not run the
editable install's finder, so ``uwe_lightning`` can only come from the wheel, which the test checks. The build
runs on a copy of the package sources (``--no-isolation``: the build backend of this venv, no network), so nothing
is written into the checkout. Slow: 5.3 min (6.0 min with collection) on the shared 2 cores at load average 13 (2026-12-07).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
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
def dists(tmp_path_factory) -> dict[str, Path]:
    """``python -m build``: the sdist, then the wheel built from that sdist (so the sdist is complete enough)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_DIR / name, src / name)
    shutil.copytree(PACKAGE_DIR, src / "uwe_lightning", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (wheel,) = out.glob("uwe_lightning-*.whl")
    (sdist,) = out.glob("uwe_lightning-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


@pytest.fixture(scope="module")
def wheel(dists) -> Path:
    return dists["wheel"]


@pytest.fixture(scope="module")
def fresh_venv(wheel, tmp_path_factory) -> Path:
    env_dir = tmp_path_factory.mktemp("venv") / "v"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    (site,) = (env_dir / "lib").glob("python*/site-packages")
    (site / "_deps_from_the_test_interpreter.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python")]
    proc = subprocess.run([*pip, "install", "--no-deps", "--no-index", "-q", str(wheel)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The extra resolves offline: every requirement of uwe_lightning[enrich] is satisfied, nothing to fetch.
    proc = subprocess.run([*pip, "install", "--no-index", "-q", "uwe_lightning[enrich]"], capture_output=True,
                          text=True, timeout=600)
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


def test_the_sdist_holds_the_sources_configs_and_package_data(dists):
    with tarfile.open(dists["sdist"]) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    missing = package_data_files() - names
    assert not missing, f"the sdist lacks files the package reads at run time: {sorted(missing)}"
    assert {"pyproject.toml", "README.md", "uwe_lightning/__init__.py", "uwe_lightning/conf/train.yaml"} <= names
    sources = {p.relative_to(REPO_DIR).as_posix() for p in PACKAGE_DIR.rglob("*.py") if "__pycache__" not in p.parts}
    assert not sources - names, sorted(sources - names)[:5]


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
    extra = run(fresh_venv, python, "-c", "from uwe_lightning.enrichment.client import ChatClient, Endpoint; "
                "print(type(ChatClient(Endpoint.resolve('http://127.0.0.1:9/v1', ''))._sdk).__name__)", cwd=tmp_path)
    assert extra.returncode == 0 and extra.stdout.strip() == "OpenAI", extra.stderr[-2000:]

    for args in ([str(bin_dir / "uwe-evaluate"), "--help"], [python, "-m", "uwe_lightning.train", "--help"]):
        proc = run(fresh_venv, *args, cwd=tmp_path)
        assert proc.returncode == 0 and "--hydra-help" in proc.stdout, proc.stderr[-2000:]  # our help page

    from uwe_lightning.model.pretrained import UWEModel

    model = UWEModel.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "model")
    out = tmp_path / "rank"
    proc = run(fresh_venv, str(bin_dir / "uwe-rank"), "model=trained", f"model.backbone={model}",
               "queries=[data analyst]", "targets=file", f"targets_file={FIXTURES / 'own_graph' / 'skills.csv'}",
               "k=3", f"hydra.run.dir={out}", "cache=false", "device=cpu", "show_progress=false", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    top = json.loads((out / "rankings.json").read_text())["results"][0]["top"]
    assert len(top) == 3 and all(row["id"].startswith("sk:") for row in top)
