"""In-batch all-pairs scoring for training: every skill against every text, in both directions.

Memory (the reason for chunking). The token scorers materialise ``[chunk, Ny, Lq, Ly]`` tensors. For the
paper's in-batch scoring, 512 skills x 512 texts x 64 x 64 tokens, one such tensor has 2^30 elements: 2 GiB in
bf16, 4 GiB in fp32. Two-directional ``softmax`` keeps :data:`SAVED_4D_TENSORS` = 3 of them per row for
backward (cosines, two softmax outputs) and needs about :data:`WORKING_4D_TENSORS` = 7 at once for the chunk
being computed (counts measured on CPU, see the constants). :func:`estimate_peak_bytes` for 512 x 512 x 64 x
64 x 768 in fp32 (under bf16 autocast the einsum outputs are bf16 and the softmax outputs fp32, so less; not
measured on a GPU):

    ==========================  ===========================  ============
    setting                     kept for backward            peak
    ==========================  ===========================  ============
    unchunked                   12 GiB of 4-D tensors        ~28 GiB
    chunk 64, no checkpoint     12 GiB of 4-D tensors        ~14 GiB
    chunk 64, checkpoint        inputs [N, L, H] only        ~3.7 GiB
    chunk 16, checkpoint        inputs [N, L, H] only        ~1.1 GiB
    ==========================  ===========================  ============

Chunking alone only bounds the temporaries; with ``checkpoint=True`` each chunk's intermediates are dropped
after its forward and recomputed chunk by chunk in backward (one extra scoring forward; cheap next to the
encoder).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint as _checkpoint

from uwe_lightning.model.encoder import TokenEmbeddings
from uwe_lightning.model.scoring import Kernel, ScorerSpec

SAVED_4D_TENSORS = 3
"""``[Nq, Ny, Lq, Ly]`` tensors that two-directional ``softmax`` keeps for backward without checkpointing (the
cosines and the two softmax outputs; ``maxsim``: 2, ``mean`` and ``softmax_ymean``: 0); asserted in
``tests/test_scoring.py`` with ``torch.autograd.graph.saved_tensors_hooks``."""

WORKING_4D_TENSORS = 7
"""Peak number of such tensors alive while one chunk of two-directional ``softmax`` is computed forward and
backward; measured on CPU as the peak-RSS growth of forward + backward (128 x 128 x 32 x 32 tokens, fp32)."""




def _run_kernel(kernel: Kernel, qe: Tensor, qm: Tensor, ye: Tensor, ym: Tensor, both: bool):
    return kernel(qe, qm, ye, ym, both)


def pairwise_scores(
    q: TokenEmbeddings,
    y: TokenEmbeddings,
    scorer: ScorerSpec,
    chunk_size: int | None = None,
    checkpoint: bool = False,
    both_directions: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """All-pairs scores ``[Nq, Ny]``, or ``(fwd [Nq, Ny], rev [Ny, Nq])`` with ``both_directions``.

    ``rev[j, i]`` is the score with ``y_j`` as query and ``q_i`` as target. Rows of ``q`` are scored
    ``chunk_size`` at a time (``None``: all at once); with ``checkpoint`` each chunk runs under
    :func:`torch.utils.checkpoint.checkpoint`, so its ``[chunk, Ny, Lq, Ly]`` intermediates are recomputed in
    backward instead of kept. Values and gradients do not depend on either setting.
    """
    if q.embeddings.shape[-1] != y.embeddings.shape[-1]:
        raise ValueError(
            f"hidden sizes differ: query {q.embeddings.shape[-1]}, target {y.embeddings.shape[-1]}"
        )
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
    n_q = len(q)
    step = chunk_size or max(n_q, 1)
    needs_grad = torch.is_grad_enabled() and (q.embeddings.requires_grad or y.embeddings.requires_grad)
    use_checkpoint = checkpoint and needs_grad
    fwd_parts: list[Tensor] = []
    rev_parts: list[Tensor] = []
    for start in range(0, n_q, step):
        args = (scorer.kernel, q.embeddings[start : start + step], q.mask[start : start + step])
        args += (y.embeddings, y.mask, both_directions)
        if use_checkpoint:
            fwd, rev_t = _checkpoint(_run_kernel, *args, use_reentrant=False)
        else:
            fwd, rev_t = _run_kernel(*args)
        fwd_parts.append(fwd)
        if both_directions:
            rev_parts.append(rev_t)
    if not fwd_parts:
        empty = y.embeddings.new_zeros((0, len(y)))
        return (empty, empty.T) if both_directions else empty
    fwd = torch.cat(fwd_parts)
    return (fwd, torch.cat(rev_parts).T) if both_directions else fwd


def estimate_peak_bytes(
    nq: int,
    ny: int,
    lq: int,
    ly: int,
    h: int,
    chunk_size: int | None,
    dtype_bytes: int,
    checkpoint: bool = True,
    saved_tensors: int = SAVED_4D_TENSORS,
    working_tensors: int = WORKING_4D_TENSORS,
) -> int:
    """Rough peak memory of :func:`pairwise_scores` forward + backward for the token scorers, in bytes.

    Counted in ``[rows, ny, lq, ly]`` tensors: without checkpointing every row keeps ``saved_tensors`` of them
    for backward and the chunk being computed needs ``working_tensors`` at once; with checkpointing nothing is
    kept and one chunk at a time needs ``working_tensors`` (in forward, and again when recomputed in
    backward). Inputs ``[N, L, H]`` and the two ``[nq, ny]`` outputs come on top. Defaults are those of
    two-directional ``softmax`` (the most expensive scorer).

    >>> gib = 2**30
    >>> round(estimate_peak_bytes(512, 512, 64, 64, 768, None, 4, checkpoint=False) / gib, 1)
    28.2
    >>> round(estimate_peak_bytes(512, 512, 64, 64, 768, 64, 4, checkpoint=False) / gib, 1)
    14.2
    >>> round(estimate_peak_bytes(512, 512, 64, 64, 768, 64, 4, checkpoint=True) / gib, 1)
    3.7
    >>> round(estimate_peak_bytes(512, 512, 64, 64, 768, 16, 4, checkpoint=True) / gib, 1)
    1.1
    """
    chunk = min(chunk_size or nq, nq)
    unit = ny * lq * ly * dtype_bytes  # one row of one 4-D tensor
    if checkpoint:
        tensors_4d = working_tensors * chunk * unit
    else:
        tensors_4d = (saved_tensors * nq + (working_tensors - saved_tensors) * chunk) * unit
    inputs = (nq * lq + ny * ly) * h * dtype_bytes
    outputs = 2 * nq * ny * dtype_bytes
    return inputs + tensors_4d + outputs
