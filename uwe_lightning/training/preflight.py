"""Checks a training run passes before it writes anything: the accelerator it asks for exists on this machine.

Lightning finds out only when the ``Trainer`` is built, after the run directory, ``run_info.json`` and the
W&B run exist, and says it with a traceback. Checked first, a run that cannot start leaves nothing behind and
says in one line what to change (:mod:`uwe_lightning.cli.errors`: exit status 2).
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from uwe_lightning.io import ConfigError

#: Accelerator names that need a CUDA device (``gpu`` may also mean Apple's MPS).
CUDA_NAMES = ("gpu", "cuda")


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def requested_devices(devices: Any) -> int | None:
    """How many devices ``trainer.devices`` asks for, where it says a number (``auto``/``-1``/a list: None).

    >>> requested_devices(2), requested_devices("3"), requested_devices("auto"), requested_devices(-1)
    (2, 3, None, None)
    """
    if isinstance(devices, bool):
        return None
    if isinstance(devices, int):
        return devices if devices > 0 else None
    if isinstance(devices, str) and devices.strip().isdigit():
        return int(devices.strip())
    return None


def check_accelerator(cfg: DictConfig) -> None:
    """A ConfigError naming ``trainer.accelerator`` / ``trainer.devices`` when this machine lacks them."""
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto") or "auto").lower()
    devices = requested_devices(OmegaConf.select(cfg, "trainer.devices", default=None))
    hint = ("run it on a GPU machine, or train on the CPU with trainer=cpu (and scale=cpu for CPU-sized runs; "
            "debug=fast for a minutes-long check)")
    if accelerator in CUDA_NAMES:
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if found == 0 and accelerator == "gpu" and mps_available():
            return
        if found == 0:
            raise ConfigError(f"trainer.accelerator={accelerator} but this machine has no GPU that torch can use "
                              f"(torch {torch.__version__}, CUDA {torch.version.cuda or 'not built'}): {hint}")
        if devices is not None and devices > found:
            raise ConfigError(f"trainer.devices={devices} but this machine has {found} GPU(s): set "
                              f"trainer.devices={found} (or fewer)")
    elif accelerator == "mps" and not mps_available():
        raise ConfigError(f"trainer.accelerator=mps but this machine has no Apple MPS device: {hint}")
