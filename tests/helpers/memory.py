"""Bytes autograd keeps for backward: what the memory planner's activation terms are checked against."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def saved_tensor_bytes(model: torch.nn.Module, forward: Callable[[], Any]) -> int:
    """Bytes of the distinct non-parameter storages that autograd saves while ``forward()`` runs."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    return sum(seen.values())
