"""The optimiser of the paper (Appendix A): AdamW, no decay on biases and norms, linear warm-up then decay."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch


def linear_warmup_decay(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR factor: linear 0 -> 1 over ``warmup_steps``, then linear 1 -> 0 at ``total_steps``.

    The same shape as transformers' ``get_linear_schedule_with_warmup`` (sentence-transformers' WarmupLinear).

    >>> [round(linear_warmup_decay(s, 2, 10), 3) for s in (0, 1, 2, 6, 10, 12)]
    [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    """
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def warmup_steps_for(total_steps: int, warmup_ratio: float) -> int:
    """Warm-up length in steps (at least one when there is any warm-up).

    >>> warmup_steps_for(600, 0.1), warmup_steps_for(4, 0.1), warmup_steps_for(10, 0.0)
    (60, 1, 0)
    """
    if warmup_ratio <= 0:
        return 0
    return max(1, math.ceil(total_steps * warmup_ratio))


def decay_groups(named_params: Mapping[str, torch.nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: no weight decay on biases and norm weights (any parameter with < 2 dims)."""
    decay = [p for p in named_params.values() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in named_params.values() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
