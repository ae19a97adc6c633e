"""Offline bundles: everything a training run needs, in files no larger than a size limit, with a manifest.

A GPU node on a cluster often has no internet and a cap on what may be copied to it. :func:`pack` writes
(under ``out``):

- ``model/<name>/``: the backbone's weights as fp16 safetensors parts (:mod:`~uwe_lightning.offline.weights`),
  its tokenizer and configs as they are;
- ``data/``: a derived data directory (``paths.DERIVED_INDEX_FILE``): the open protocol's graphs and the
  WorkBench validation and test splits as compact gzipped JSON, not the raw pack;
- ``wheels/``: wheels of the Python packages a bare node may lack (and of this project), for
  ``pip install --no-index --find-links``;
- ``manifest.json``: every file with its size and sha256; a file above the limit travels as byte parts.

:func:`unpack` verifies every part, reassembles the files (fp16 -> fp32 master weights) under ``target``, and
returns the environment a run needs: ``UWE_DATA_DIR=<target>/data UWE_MODEL_DIR=<target>/models``.
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from uwe_lightning.integrity import sha256_file
from uwe_lightning.io import (
    ConfigError,
    DataError,
    atomic_write_json,
    atomic_write_path,
    atomic_write_text,
    make_dirs,
    publish_tree,
)
from uwe_lightning.offline.weights import read_fp32_state, write_fp16_parts
from uwe_lightning.paths import DERIVED_INDEX_FILE, REPO_DIR
from uwe_lightning.protocol.build import build_open_protocol
from uwe_lightning.protocol.derived import write_derived_protocol
from uwe_lightning.workbench.dataset import SPLITS, TaskUnavailable
from uwe_lightning.workbench.derived import DERIVED_FORMAT, DERIVED_VERSION, write_derived_split
from uwe_lightning.workbench.registry import get_task, task_names

MANIFEST_FILE = "manifest.json"
BUNDLE_FORMAT = "uwe-bundle"
BUNDLE_VERSION = 1
WEIGHT_FILES = ("model.safetensors",)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(value: str | int, key: str = "part_size") -> int:
    """``55MiB``, ``50MB``, ``1048576`` -> bytes.

    >>> parse_size("55MiB"), parse_size("2 KB"), parse_size(4096)
    (57671680, 2000, 4096)
    """
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ConfigError(f"{key}={value!r}: give a size such as 55MiB, 50MB or a number of bytes")
        size = int(float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()])
    if size < 1024:
        raise ConfigError(f"{key}={value!r}: at least 1KiB")
    return size


# ---------------------------------------------------------------------------------------------------------
# pack
# ---------------------------------------------------------------------------------------------------------


def pack_derived_data(out: Path, data_dir: str | None, val_fraction: float, altlabel_train_fraction: float,
                      tasks: Sequence[str] | None = None, splits: Sequence[str] = SPLITS) -> dict[str, Any]:
    """Write the derived data directory ``out``: the open protocol + every split of ``tasks`` (default: all)."""
    protocol = build_open_protocol(data_dir, val_fraction, altlabel_train_fraction)
    options = protocol.task_options()
    index: dict[str, Any] = {"format": DERIVED_FORMAT, "version": DERIVED_VERSION,
                             "protocol": write_derived_protocol(out, protocol), "splits": {}}
    for name in tasks if tasks is not None else task_names():
        for split in splits:
            try:
                dataset = get_task(name, **options.get(name, {})).load(split, data_dir)
            except TaskUnavailable as err:
                index["splits"][f"{name}/{split}"] = {"unavailable": str(err)}
                continue
            index["splits"][f"{name}/{split}"] = write_derived_split(out, dataset, options.get(name, {}))
    atomic_write_json(out / DERIVED_INDEX_FILE, index)
    return index


def download_wheels(out: Path, packages: Sequence[str], platform_tag: str | None, python_version: str | None,
                    include_project: bool) -> list[Path]:
    """Wheels of ``packages`` (+ their dependencies) for the node's platform, and of this project."""
    make_dirs(out)
    if packages:
        if platform_tag or python_version:  # another platform: binary wheels only (pip cannot build for it)
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", str(out)]
            cmd += ["--platform", platform_tag] if platform_tag else []
            cmd += ["--python-version", python_version] if python_version else []
        else:  # this platform: `pip wheel` also turns sdist-only dependencies (antlr4 4.9.3) into wheels
            cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(out)]
        result = subprocess.run(cmd + list(packages), capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise DataError(f"fetching wheels for {' '.join(packages)} failed: {last} (wheels.packages=[] skips)")
    if include_project:
        cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
               "--wheel-dir", str(out), str(REPO_DIR)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise DataError(f"building this project's wheel failed: {last} (set wheels.include_project=false)")
    return sorted(out.glob("*.whl"))


def _split_large(path: Path, part_size: int) -> list[Path]:
    """``path`` itself if it fits, else byte parts ``<name>.part000, ...`` (the file is removed)."""
    if path.stat().st_size <= part_size:
        return [path]
    parts = []
    with path.open("rb") as handle:
        for index, block in enumerate(iter(lambda: handle.read(part_size), b"")):
            part = path.with_name(f"{path.name}.part{index:03d}")
            with atomic_write_path(part) as tmp:
                tmp.write_bytes(block)
            parts.append(part)
    path.unlink()
    return parts


def pack(out: Path, model_dir: Path, model_name: str, part_size: int, data_dir: str | None,
         val_fraction: float, altlabel_train_fraction: float, tasks: Sequence[str] | None = None,
         wheels: Sequence[str] = (), platform_tag: str | None = None, python_version: str | None = None,
         include_project: bool = False) -> dict[str, Any]:
    """Write the bundle into ``out`` (which must not hold a bundle yet); returns the manifest."""
    if (out / MANIFEST_FILE).exists():
        raise ConfigError(f"out={out} already holds a bundle ({MANIFEST_FILE}); choose an empty directory")
    weights = [model_dir / name for name in WEIGHT_FILES if (model_dir / name).is_file()]
    if not weights:
        raise ConfigError(f"model {model_dir} has no {WEIGHT_FILES[0]}: the bundle ships safetensors weights only")
    start = time.perf_counter()
    make_dirs(out)
    model_out = out / "model" / model_name
    make_dirs(model_out)
    write_fp16_parts(weights[0], model_out, part_size)
    for path in sorted(model_dir.rglob("*")):
        rel = path.relative_to(model_dir)
        if path.is_file() and path not in weights and rel.parts[0] != "onnx":
            dest = model_out / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
    derived = pack_derived_data(out / "data", data_dir, val_fraction, altlabel_train_fraction, tasks)
    wheel_files = download_wheels(out / "wheels", wheels, platform_tag, python_version, include_project) \
        if wheels or include_project else []
    files = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        logical = path.relative_to(out).as_posix()
        whole = {"path": logical, "bytes": path.stat().st_size, "sha256": sha256_file(path)}
        pieces = _split_large(path, part_size)
        whole["parts"] = [{"path": p.relative_to(out).as_posix(), "bytes": p.stat().st_size,
                           "sha256": sha256_file(p)} for p in pieces]
        files.append(whole)
    manifest = {
        "format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "part_size": part_size, "model": {"name": model_name, "source": str(model_dir), "weights_dtype": "float16"},
        "data": {"val_fraction": val_fraction, "altlabel_train_fraction": altlabel_train_fraction,
                 "splits": sorted(k for k, v in derived["splits"].items() if "unavailable" not in v),
                 "unavailable": sorted(k for k, v in derived["splits"].items() if "unavailable" in v)},
        "wheels": [p.name for p in wheel_files],
        "built_on": {"python": platform.python_version(), "platform": platform.platform()},
        "pack_seconds": round(time.perf_counter() - start, 1),
        "files": files,
    }
    for sub in ("model", "data", "wheels"):  # copies and pip's files: 0644/0755 whatever the umask
        if (out / sub).is_dir():
            publish_tree(out / sub)
    atomic_write_json(out / MANIFEST_FILE, manifest)
    atomic_write_text(out / "UNPACK.md", unpack_instructions(manifest))
    return manifest


def unpack_instructions(manifest: dict[str, Any]) -> str:
    name = manifest["model"]["name"]
    lines = [
        "# Offline bundle", "",
        "On the node (no network needed):", "",
        "```bash",
        "python -m uwe_lightning.bundle unpack . target=$HOME/uwe   # verifies every part, fp16 -> fp32",
    ]
    if manifest["wheels"]:
        lines.append("pip install --no-index --find-links $HOME/uwe/wheels " + " ".join(
            sorted({w.split("-")[0].replace("_", "-") for w in manifest["wheels"]})))
    lines += [
        f"UWE_DATA_DIR=$HOME/uwe/data UWE_MODEL_DIR=$HOME/uwe/models python -m uwe_lightning.train "
        f"+experiment=uwe model.backbone={name} trainer=gpu",
        "```", "",
        "Without this project installed yet: `pip install --no-index --find-links wheels uwe_lightning`, or run "
        "from a checkout.", "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# unpack
# ---------------------------------------------------------------------------------------------------------


def read_manifest(bundle: Path) -> dict[str, Any]:
    path = bundle / MANIFEST_FILE
    if not path.is_file():
        raise DataError(f"{bundle}: no {MANIFEST_FILE}; is this a bundle written by `bundle pack`?")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != BUNDLE_FORMAT or manifest.get("version") != BUNDLE_VERSION:
        raise DataError(f"{path}: not a {BUNDLE_FORMAT} v{BUNDLE_VERSION} manifest")
    return manifest


def verify(bundle: Path, manifest: dict[str, Any] | None = None) -> int:
    """Check every part's size and sha256; the first bad part raises a DataError naming it. Returns the count."""
    manifest = manifest or read_manifest(bundle)
    count = 0
    for entry in manifest["files"]:
        for part in entry["parts"]:
            path = bundle / part["path"]
            if not path.is_file():
                raise DataError(f"{path}: missing part of {entry['path']}; copy the whole bundle directory")
            if path.stat().st_size != part["bytes"] or sha256_file(path) != part["sha256"]:
                raise DataError(f"{path}: sha256 mismatch (damaged in transfer?); copy this part again")
            count += 1
    return count


def unpack(bundle: Path, target: Path) -> dict[str, Any]:
    """Verify ``bundle`` and reassemble it under ``target`` (models/, data/, wheels/); returns what was written."""
    manifest = read_manifest(bundle)
    n_parts = verify(bundle, manifest)
    staging = target / ".unpacking"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    weight_parts: list[Path] = []
    name = manifest["model"]["name"]
    for entry in manifest["files"]:
        logical = entry["path"]
        top, _, rest = logical.partition("/")
        if top not in ("model", "data", "wheels"):
            continue
        dest = staging / {"model": "models"}.get(top, top) / rest
        dest.parent.mkdir(parents=True, exist_ok=True)
        with dest.open("wb") as handle:
            for part in entry["parts"]:
                with (bundle / part["path"]).open("rb") as src:
                    shutil.copyfileobj(src, handle)
        if top == "model" and Path(rest).name.startswith("weights-"):
            weight_parts.append(dest)
    model_out = staging / "models" / name
    save_file(read_fp32_state(sorted(weight_parts)), str(model_out / WEIGHT_FILES[0]), metadata={"format": "pt"})
    for part in weight_parts:
        part.unlink()
    publish_tree(staging)  # 0644/0755 whatever the umask: the unpacked models and data are read by every job
    for sub in ("models", "data", "wheels"):  # replace what a previous unpack left, one directory at a time
        final = target / sub
        if (staging / sub).exists():
            if final.exists():
                shutil.rmtree(final)
            (staging / sub).rename(final)
    shutil.rmtree(staging)
    return {"target": str(target), "parts_verified": n_parts, "model_dir": str(target / "models" / name),
            "env": {"UWE_DATA_DIR": str(target / "data"), "UWE_MODEL_DIR": str(target / "models")},
            "wheels": manifest["wheels"]}
