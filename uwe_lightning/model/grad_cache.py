"""GradCache (Gao et al. 2021): the paper-size contrastive batch with the encoder memory of one mini-batch.

A contrastive loss needs every text's embedding at once, but not every text's encoder activations.
:func:`cached_encode` splits the texts into mini-batches (``size`` texts, or ``size`` padded tokens) and runs
one autograd node over all of them:

1. forward: each mini-batch is encoded WITHOUT gradients; the token embeddings are kept (the cache), the
   activations are dropped. The CPU (and CUDA) RNG state before each mini-batch is saved;
2. the scores and the loss are computed on the cached embeddings as usual, and the loss's backward reaches the
   cache: its gradient ``d loss / d embeddings``;
3. backward of the node: each mini-batch is encoded again WITH gradients, after restoring its RNG state (so
   dropout draws the same masks as in step 1, as sentence-transformers' ``Cached*`` losses do; the autocast
   state of step 1 is restored too), and its cached gradient is pushed through it
   (``torch.autograd.grad(embeddings, params, cached_grad)``). The node returns the summed parameter gradients.

So the gradient equals that of encoding the same mini-batches with gradients kept (``tests/test_grad_cache.py``
checks it with dropout on, for every scorer and loss), at the cost of one more encoder forward. Returning the
parameter gradients from ONE node (rather than accumulating into ``.grad`` once per mini-batch) makes each
parameter's gradient arrive once per backward, which is what DDP's gradient hooks expect
(:mod:`uwe_lightning.training.distributed`); it costs one parameter-sized buffer for the running sum.
Dropout masks differ from those of one un-cached pass over the whole batch (other random draws for other
shapes), as with any change of batch layout; the expected gradient is the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from uwe_lightning.model.encoder import TokenEmbeddings

UNITS = ("texts", "tokens")


@dataclass(frozen=True)
class Chunk:
    """Rows ``[start, stop)`` and columns ``[first, last)`` of group ``group``'s padded inputs."""

    group: int
    start: int
    stop: int
    first: int
    last: int


def plan_chunks(masks: Sequence[Tensor], size: int, unit: str = "texts") -> list[Chunk]:
    """Contiguous mini-batches of each group: ``size`` rows (``texts``), or as many rows as keep rows x used
    width within ``size`` (``tokens``; at least one row each). Columns are cut to the chunk's used range.

    >>> m = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]]).bool()
    >>> [(c.start, c.stop, c.last) for c in plan_chunks([m], 2)]
    [(0, 2, 2), (2, 3, 3)]
    >>> [(c.start, c.stop, c.last) for c in plan_chunks([m], 4, "tokens")]
    [(0, 2, 2), (2, 3, 3)]
    """
    if unit not in UNITS:
        raise ValueError(f"grad cache unit must be one of {UNITS}, got {unit!r}")
    if size < 1:
        raise ValueError(f"grad cache mini-batch size must be >= 1, got {size}")
    chunks: list[Chunk] = []
    for group, mask in enumerate(masks):
        used = mask.bool()
        if used.numel() == 0:  # an empty group (a data-parallel shard without texts)
            continue
        rows = used.any(1)
        firsts = torch.where(rows, used.int().argmax(1), used.shape[1]).tolist()
        lasts = torch.where(rows, used.shape[1] - used.flip(1).int().argmax(1), 0).tolist()
        start = 0
        while start < len(firsts):
            stop, first, last = start + 1, firsts[start], lasts[start]
            while stop < len(firsts):
                f, la = min(first, firsts[stop]), max(last, lasts[stop])
                grown = stop + 1 - start if unit == "texts" else (stop + 1 - start) * max(la - f, 1)
                if grown > size:
                    break
                stop, first, last = stop + 1, f, la
            if first < last:  # rows with no real token at all need no encoding (their mask reads nothing)
                chunks.append(Chunk(group, start, stop, first, last))
            start = stop
    return chunks


@dataclass
class _Run:
    encode: Callable[[Tensor, Tensor], Tensor]  # (input_ids, attention_mask) -> [n, L, H]
    inputs: list[tuple[Tensor, Tensor]]
    chunks: list[Chunk]
    hidden: int


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


class _CachedEncoding(torch.autograd.Function):
    """Inputs: the run, then the parameters; outputs: one ``[n, L, H]`` tensor per group (see the module doc)."""

    @staticmethod
    def forward(ctx, run: _Run, *params: Tensor):
        device = run.inputs[0][0].device
        states, outs = [], [None] * len(run.inputs)
        for c in run.chunks:
            states.append(_rng_state(device))
            ids, mask = run.inputs[c.group]
            emb = run.encode(ids[c.start : c.stop, c.first : c.last], mask[c.start : c.stop, c.first : c.last])
            if outs[c.group] is None:
                outs[c.group] = emb.new_zeros((ids.shape[0], ids.shape[1], emb.shape[-1]))
            outs[c.group][c.start : c.stop, c.first : c.last] = emb
        dtype = next((o.dtype for o in outs if o is not None), torch.float32)
        outs = [o if o is not None else torch.zeros((*ids.shape, run.hidden), dtype=dtype, device=device)
                for o, (ids, _) in zip(outs, run.inputs, strict=True)]
        ctx.run, ctx.states, ctx.device = run, states, device
        ctx.autocast = (torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type))
        ctx.save_for_backward(*params)
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads: Tensor):
        run, params, device = ctx.run, ctx.saved_tensors, ctx.device
        summed: list[Tensor | None] = [None] * len(params)
        forked = [device] if device.type == "cuda" else []
        enabled, dtype = ctx.autocast
        for c, (cpu_state, cuda_state) in zip(run.chunks, ctx.states, strict=True):
            grad = grads[c.group]
            if grad is None:
                continue
            ids, mask = run.inputs[c.group]
            with torch.random.fork_rng(devices=forked), torch.enable_grad(), \
                    torch.autocast(device.type, dtype=dtype, enabled=enabled):
                torch.set_rng_state(cpu_state)
                if cuda_state is not None:
                    torch.cuda.set_rng_state(cuda_state, device)
                emb = run.encode(ids[c.start : c.stop, c.first : c.last], mask[c.start : c.stop, c.first : c.last])
            parts = torch.autograd.grad(emb, params, grad[c.start : c.stop, c.first : c.last], allow_unused=True)
            for i, part in enumerate(parts):
                if part is not None:
                    summed[i] = part if summed[i] is None else summed[i].add_(part)
        return (None, *summed)


def cached_encode(
    encode: Callable[[Tensor, Tensor], Tensor],
    params: Sequence[torch.nn.Parameter],
    inputs: Sequence[tuple[Tensor, Tensor]],
    hidden: int,
    size: int,
    unit: str = "texts",
) -> list[TokenEmbeddings]:
    """Token embeddings of each group of ``(input_ids, attention_mask)``, encoded GradCache-style.

    ``encode(input_ids, attention_mask) -> [n, L, H]`` is the encoder's forward; ``params`` are the parameters
    that get gradients (those with ``requires_grad``). Each result is trimmed like an un-cached encoding.
    Without gradients (``torch.no_grad``, evaluation) this is a plain mini-batched encoding.
    """
    inputs = [(ids, mask) for ids, mask in inputs]
    run = _Run(encode, inputs, plan_chunks([mask for _, mask in inputs], size, unit), hidden)
    params = [p for p in params if p.requires_grad]
    outs = _CachedEncoding.apply(run, *params)
    return [TokenEmbeddings(out, mask).trimmed() for out, (_, mask) in zip(outs, inputs, strict=True)]
