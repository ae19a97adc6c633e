"""Export a trained encoder as a plain Hugging Face model directory plus ``uwe.json``.

The directory is what :meth:`uwe_lightning.ranking.ranker.Ranker.from_pretrained` (and ``model=trained``)
loads: the backbone's ``save_pretrained`` output, its tokenizer, and ``uwe.json`` with the scorer, its
temperature, the inference token limit (``null``: the model's own limit, as in the paper) and provenance
(backbone, step, validation metric, checkpoint). It is written into a staging directory and renamed into
place, so a reader never sees a half-written export.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from uwe_lightning.model.encoder import Encoder

UWE_JSON = "uwe.json"


def load_module_weights(module: torch.nn.Module, ckpt_path: str | Path) -> dict[str, Any]:
    """Load a Lightning checkpoint's ``state_dict`` into ``module``; returns the checkpoint's other fields."""
    ckpt = torch.load(str(ckpt_path), map_location="cpu", weights_only=False)
    if "state_dict" not in ckpt:
        raise KeyError(f"{ckpt_path}: not a Lightning checkpoint (no 'state_dict')")
    module.load_state_dict(ckpt["state_dict"])
    return {k: v for k, v in ckpt.items() if k not in ("state_dict", "optimizer_states")}


def uwe_config(
    scorer: str,
    tau: float | None,
    backbone: str,
    step: int,
    val_metric: Mapping[str, Any] | None = None,
    train_max_length: int | None = None,
    max_length: int | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """The content of ``uwe.json`` (keys read by ``Ranker.from_pretrained``: scorer, tau, max_length)."""
    return {
        "scorer": scorer,
        "tau": tau,
        "max_length": max_length,
        "backbone": backbone,
        "step": int(step),
        "val_metric": dict(val_metric) if val_metric else None,
        "train_max_length": train_max_length,
        "source_checkpoint": source,
    }


def export_hf_model(encoder: Encoder, out_dir: str | Path, meta: Mapping[str, Any]) -> Path:
    """``save_pretrained`` of backbone + tokenizer and ``uwe.json`` into ``out_dir`` (replaced atomically)."""
    out = Path(out_dir)
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    encoder.backbone.save_pretrained(staging)
    encoder.tokenizer.save_pretrained(staging)
    (staging / UWE_JSON).write_text(json.dumps(dict(meta), indent=2) + "\n")
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out)
    return out
