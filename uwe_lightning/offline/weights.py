"""Model weights as fp16 safetensors parts no larger than a size limit, and back to fp32 master weights.

fp16, not bf16: fp16 keeps 10 mantissa bits (MPNet's weights lie well inside its range), while pure-bf16
weights measurably degrade MPNet's embeddings. Every part is a complete safetensors file holding whole tensors
(tensor order = the source file's), so a part is checked and loaded on its own. Non-float tensors (position
ids) are kept as they are.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save

from uwe_lightning.io import ConfigError, atomic_write_bytes

PART_PATTERN = "weights-{index:05d}.safetensors"
_HEADER_BASE = 256  # the 8-byte header length, metadata and JSON braces of one part, generously bounded


def to_fp16(tensor: torch.Tensor) -> torch.Tensor:
    """fp32/fp64/bf16 -> fp16 (contiguous); other dtypes unchanged. Values beyond fp16's range are refused."""
    if not tensor.is_floating_point() or tensor.dtype == torch.float16:
        return tensor.contiguous()
    largest = tensor.abs().max().item() if tensor.numel() else 0.0
    if largest > torch.finfo(torch.float16).max:
        raise ConfigError(f"a weight reaches {largest:.3g}, beyond fp16's range: this model cannot travel as fp16")
    return tensor.to(torch.float16).contiguous()


def _entry_bytes(name: str, tensor: torch.Tensor) -> int:
    """Payload + a generous bound on the tensor's entry in the safetensors JSON header."""
    return tensor.numel() * tensor.element_size() + len(name) + 96 + 24 * tensor.dim()


def plan_parts(state: dict[str, torch.Tensor], part_size: int) -> list[list[str]]:
    """Tensor names per part, in order, each part (header included) within ``part_size`` bytes."""
    parts: list[list[str]] = [[]]
    used = _HEADER_BASE
    for name, tensor in state.items():
        size = _entry_bytes(name, tensor)
        if size + _HEADER_BASE > part_size:
            raise ConfigError(f"part_size={part_size} bytes is too small for tensor {name!r} ({size} bytes as fp16); "
                              f"use part_size >= {size + _HEADER_BASE}")
        if used + size > part_size and parts[-1]:
            parts.append([])
            used = _HEADER_BASE
        parts[-1].append(name)
        used += size
    return parts


def write_fp16_parts(weights_file: Path, out_dir: Path, part_size: int) -> list[Path]:
    """Split ``weights_file`` (safetensors) into fp16 parts under ``out_dir``; returns the part paths in order."""
    state = {name: to_fp16(t) for name, t in load_file(str(weights_file)).items()}
    paths = []
    for index, names in enumerate(plan_parts(state, part_size), start=1):
        path = out_dir / PART_PATTERN.format(index=index)
        payload = save({name: state[name] for name in names}, metadata={"format": "pt", "part": str(index)})
        if len(payload) > part_size:  # the header bound is an estimate: never ship an oversized part
            raise ConfigError(f"{path.name}: {len(payload)} bytes exceeds part_size={part_size}; raise part_size")
        atomic_write_bytes(path, payload)
        paths.append(path)
    return paths


def read_fp32_state(part_paths: list[Path]) -> dict[str, torch.Tensor]:
    """The parts' tensors merged in order, fp16 -> fp32 (the master weights training and inference start from)."""
    state: dict[str, torch.Tensor] = {}
    for path in part_paths:
        for name, tensor in load_file(str(path)).items():
            if name in state:
                raise ConfigError(f"{path}: tensor {name!r} is in two parts; the bundle is not one model")
            state[name] = tensor.float() if tensor.dtype == torch.float16 else tensor
    return state
