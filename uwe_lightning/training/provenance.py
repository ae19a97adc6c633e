"""What a run records about itself in ``run_info.json``: config, git commit, package versions, the machine (CPU
model, kernels, threads, GPU) of every (re)start, and the fingerprint of the data files it read."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from uwe_lightning.integrity import data_fingerprint, sha256_file
from uwe_lightning.io import atomic_write_json
from uwe_lightning.paths import PROGRESS_FILE, REPO_DIR, RUN_INFO_FILE

VERSIONED_PACKAGES = (
    "uwe_lightning",
    "torch",
    "lightning",
    "transformers",
    "tokenizers",
    "hydra-core",
    "omegaconf",
    "numpy",
    "pandas",
    "safetensors",
    "datasets",
    "torchmetrics",
    "sentence-transformers",
    "wandb",
)


#: The CPU features that change which float kernels torch runs (and so the last bits of a result).
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")


def _cpuinfo(key: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    return _cpuinfo("model name") or platform.processor() or platform.machine() or "unknown"


def machine_info() -> dict[str, Any]:
    """What the numbers of a run may depend on: CPU model, the kernels torch picked, threads, GPU."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_flags": [f for f in KERNEL_FLAGS if f in (_cpuinfo("flags") or "").split()],
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "platform": platform.platform(),
    }
    if os.environ.get("ATEN_CPU_CAPABILITY"):
        info["ATEN_CPU_CAPABILITY"] = os.environ["ATEN_CPU_CAPABILITY"]
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info

def git_commit(repo: Path = REPO_DIR) -> dict[str, Any]:
    """HEAD commit and whether the tree has uncommitted changes; "unknown" outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True, timeout=30
        ).stdout
        return {"commit": commit or "unknown", "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


#: The exact versions ``make install`` installs (``make lock`` writes it); a source checkout only.
LOCK_FILE = REPO_DIR / "requirements" / "lock.txt"


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def lock_record(path: Path = LOCK_FILE) -> dict[str, Any] | None:
    """The lock file's sha256 and every locked package whose installed version differs from it (None outside a
    source checkout): whether a run used the versions the committed results were produced with."""
    if not path.is_file():
        return None
    installed = {_canonical(d.metadata["Name"] or ""): d.version for d in importlib.metadata.distributions()}
    differ = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name, sep, version = line.strip().partition("==")
        if line.startswith("#") or not sep:
            continue
        have = installed.get(_canonical(name))
        if have != version:
            differ[name] = {"lock": version, "installed": have or "not installed"}
    name = path.relative_to(REPO_DIR).as_posix() if path.is_relative_to(REPO_DIR) else path.name
    return {"file": name, "sha256": sha256_file(path), "differ": differ}


def package_versions(names: tuple[str, ...] = VERSIONED_PACKAGES) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _cpu_type(machine: dict | None) -> tuple:
    machine = machine or {}
    return machine.get("cpu"), tuple(machine.get("cpu_flags", ()))


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain data, without Hydra's own node."""
    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("hydra", None)
    return data


def add_info(run_dir: Path, **fields: Any) -> None:
    """Merge top-level ``fields`` into ``run_info.json`` (e.g. the W&B run id, so a resume reuses it)."""
    path = run_dir / RUN_INFO_FILE
    atomic_write_json(path, {**json.loads(path.read_text()), **fields})


def add_summary(run_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Merge the run's summary, and the fingerprint of every data file the run read, into ``run_info.json``;
    returns the summary."""
    add_info(run_dir, summary=summary, data_pack=data_fingerprint())
    return summary


def current_hydra_config() -> Any | None:
    """The running Hydra app's config (its ``overrides``, ``mode``, ``sweep``), or None outside one."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


STAMP_FORMAT = "%Y-%m-%dT%H:%M:%S"  # a start's "started" and "last_progress.at" (local time)


def last_progress(run_dir: Path) -> dict[str, Any] | None:
    """Where the previous start left ``progress.json`` (written every few steps): its step and time, so that a
    run's working hours leave out the gaps between a stop and the next start (``run_hours.py``)."""
    try:
        progress = json.loads((run_dir / PROGRESS_FILE).read_text())
        return {"step": int(progress["step"]),
                "at": time.strftime(STAMP_FORMAT, time.localtime(float(progress["time"])))}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record_start(
    run_dir: Path, cfg: DictConfig, resumed_from: Path | None, start_step: int, data: dict | None = None
) -> dict[str, Any]:
    """Write ``run_info.json`` for this (re)start, keeping the earlier starts of the same run dir (the one before
    gets its ``last_progress``: the step and time at which it was last seen working)."""
    path = run_dir / RUN_INFO_FILE
    earlier = json.loads(path.read_text()) if path.is_file() else {}
    previous = earlier.get("starts", [])
    if previous and "last_progress" not in previous[-1]:
        previous[-1] = {**previous[-1], "last_progress": last_progress(run_dir)}
    machine = machine_info()
    info = {
        **({"wandb": earlier["wandb"]} if "wandb" in earlier else {}),
        "config": plain_config(cfg),
        "git": git_commit(),
        "versions": package_versions(),
        "lock": lock_record(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu_model(),
        "machine": machine,
        "command": sys.argv,
        "data": data,
        "data_pack": data_fingerprint(),  # the files read so far; add_summary records all of them at the end
        "starts": [
            *previous,
            {
                "started": time.strftime(STAMP_FORMAT),
                "resumed_from": str(resumed_from) if resumed_from else None,
                "start_step": start_step,
                "machine": machine,  # a resume may run on another machine
                **({"other_cpu_than_first_start": True}
                   if previous and _cpu_type(previous[0].get("machine")) != _cpu_type(machine) else {}),
            },
        ],
    }
    atomic_write_json(path, info)
    return info
