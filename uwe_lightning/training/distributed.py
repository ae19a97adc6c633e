"""Data parallel training with global negatives: every rank's loss sees the whole global batch.

Every rank holds the same global step (skills, texts, positive masks: a pure function of (seed, step)) and
encodes only its contiguous shard of the skills and of each graph's texts
(:func:`~uwe_lightning.data.sampling.shard_bounds`). Per step:

1. :func:`exchange_texts` all-gathers the text token embeddings and masks of every graph (rows padded to the
   largest shard, columns to the widest shard, then cut back), so each rank has all ``N_G`` texts; the
   skills pass through it unchanged.
2. Each rank scores ITS skills against ALL texts, both directions (``1 / world`` of the scoring).
3. :func:`gather_score_rows` all-gathers those score rows: every rank then holds the full ``[S, N_G]`` and
   ``[N_G, S]`` matrices and computes the identical full loss on them.

Gradients. Because every rank computes the same loss, the backward of (3) keeps this rank's rows only and
multiplies them by ``world``; the backward of (1) sums the partial text gradients of all ranks (one
all-reduce) and keeps this rank's texts. Each rank's parameter gradient is then ``world`` times its shard's
exact contribution, and DDP's gradient MEAN over ranks gives exactly the gradient of one process on the whole
batch (``tests/test_distributed.py`` checks loss and every parameter gradient against a single process). The
returned loss is the true loss (logging, gradient clipping and NaN checks see the single-process values).

Deadlock-free by construction: the forward runs the same collectives in the same order on every rank (one
width exchange, one token exchange, one score gather per step, whatever a rank's shard holds), and the backward
has exactly one collective of its own (the token exchange's all-reduce), on which every parameter gradient of
the rank waits (the skills pass through the same autograd node), so it always precedes DDP's own gradient
all-reduce. A rank needs at least one skill (``data.skills_per_step >= world size``), so that it uses the
encoder in every step (DDP expects every rank to produce gradients); its shard of a graph may be empty.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from torch import Tensor

from uwe_lightning.data.sampling import shard_sizes
from uwe_lightning.io import ConfigError
from uwe_lightning.model.encoder import TokenEmbeddings
from uwe_lightning.training.provenance import current_hydra_config


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the initialised default process group; ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launched_as_rank_zero() -> bool:
    """Whether this process is global rank 0 of its launch, read from the environment before any trainer exists.

    Lightning's DDP launcher starts ranks ``1..n-1`` as copies of the command with ``LOCAL_RANK`` set (and
    ``NODE_RANK`` on other nodes); torchrun sets ``RANK``; SLURM (``srun``, the submitit launcher) sets
    ``SLURM_PROCID``. Only rank 0 prepares the run directory, writes ``run_info.json``, exports and tests.
    """
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"]) == 0
    if "LOCAL_RANK" in env or "NODE_RANK" in env:
        return int(env.get("LOCAL_RANK", 0)) == 0 and int(env.get("NODE_RANK", env.get("GROUP_RANK", 0))) == 0
    return int(env.get("SLURM_PROCID", 0)) == 0


def check_launch(trainer: pl.Trainer) -> None:
    """Refuse what cannot work: Lightning's DDP launcher re-runs the command line for ranks ``1..n-1``, which
    inside a local Hydra multirun (basic, joblib, submitit_local launchers) would start the whole sweep again in
    every rank. SLURM (the submitit_slurm launcher, one task per GPU) and torchrun start the ranks themselves."""
    from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher

    hydra_cfg = current_hydra_config()
    multirun = hydra_cfg is not None and str(hydra_cfg.mode) == "RunMode.MULTIRUN"
    launcher = getattr(trainer.strategy, "launcher", None)
    if (multirun and isinstance(launcher, _SubprocessScriptLauncher) and launcher.num_processes > 1
            and not launcher.cluster_environment.creates_processes_externally):
        raise ConfigError(
            f"trainer.devices={launcher.num_processes} with the ddp strategy in a local multirun: Lightning would "
            "start the whole sweep again in each rank. Run the jobs one at a time (no -m), or use "
            "hydra/launcher=submitit_slurm (one task per GPU)"
        )


def _pad(x: Tensor, rows: int, cols: int | None = None) -> Tensor:
    """``x`` zero-padded to ``rows`` (and, for ``[n, L, ...]`` tensors, ``cols``) at the end."""
    pad = [0] * (2 * x.dim())
    if cols is not None:
        pad[-3] = cols - x.shape[1]
    pad[-1] = rows - x.shape[0]
    return torch.nn.functional.pad(x, pad) if any(pad) else x


def _all_gather(x: Tensor, world: int) -> list[Tensor]:
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    return parts


class _GatherScoreRows(torch.autograd.Function):
    """All-gather of row shards in rank order; backward: this rank's rows times ``world`` (see the module doc)."""

    @staticmethod
    def forward(ctx, local: Tensor, sizes: list[int], rank: int, world: int) -> Tensor:
        ctx.bounds = (sum(sizes[:rank]), sum(sizes[: rank + 1]))
        ctx.world = world
        parts = _all_gather(_pad(local, max(sizes)), world)
        return torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)])

    @staticmethod
    def backward(ctx, grad: Tensor):
        start, stop = ctx.bounds
        return grad[start:stop] * ctx.world, None, None, None


def gather_score_rows(local: Tensor, total: int) -> Tensor:
    """The ``[total, ...]`` rows of which this rank computed its shard ``local`` (identity in one process)."""
    rank, world = rank_world()
    if world == 1:
        return local
    sizes = shard_sizes(total, world)
    if local.shape[0] != sizes[rank]:
        raise ValueError(f"rank {rank} holds {local.shape[0]} score rows, its shard of {total} is {sizes[rank]}")
    return _GatherScoreRows.apply(local, sizes, rank, world)


class _ExchangeTexts(torch.autograd.Function):
    """Skills pass through; every graph's text tokens are all-gathered (rows and columns padded, then cut).

    Inputs: skill embeddings, then per graph its local embeddings; non-tensor settings come first. Outputs:
    skill embeddings, per graph the gathered embeddings, then per graph the gathered masks (not
    differentiable). Backward: one all-reduce (SUM) of every graph's text gradient, this rank's slice kept.
    """

    @staticmethod
    def forward(ctx, plan: dict, skills: Tensor, *texts_and_masks: Tensor):
        n = len(plan["sizes"])
        texts, masks = texts_and_masks[:n], texts_and_masks[n:]
        world = plan["world"]
        ctx.plan = plan
        ctx.local_shapes = [tuple(t.shape) for t in texts]
        flat_emb, flat_mask = [], []
        for emb, mask, sizes, width in zip(texts, masks, plan["sizes"], plan["widths"], strict=True):
            flat_emb.append(_pad(emb, max(sizes), width).reshape(-1))
            flat_mask.append(_pad(mask.to(torch.uint8), max(sizes), width).reshape(-1))
        gathered = _all_gather(torch.cat(flat_emb), world)
        gathered_masks = _all_gather(torch.cat(flat_mask), world)
        hidden = skills.shape[-1]
        out_emb, out_mask = [], []
        offset = 0
        for sizes, width in zip(plan["sizes"], plan["widths"], strict=True):
            count = max(sizes) * width
            emb_parts, mask_parts = [], []
            for r in range(world):
                emb_parts.append(gathered[r][offset * hidden : (offset + count) * hidden]
                                 .view(max(sizes), width, hidden)[: sizes[r]])
                mask_parts.append(gathered_masks[r][offset : offset + count].view(max(sizes), width)[: sizes[r]])
            out_emb.append(torch.cat(emb_parts))
            out_mask.append(torch.cat(mask_parts).bool())
            offset += count
        ctx.mark_non_differentiable(*out_mask)
        return (skills.view_as(skills), *out_emb, *out_mask)

    @staticmethod
    def backward(ctx, grad_skills: Tensor, *grads: Tensor):
        plan = ctx.plan
        rank, n = plan["rank"], len(plan["sizes"])
        grads = grads[:n]
        shapes = [(sum(sizes), width) for sizes, width in zip(plan["sizes"], plan["widths"], strict=True)]
        hidden = ctx.local_shapes[0][-1] if ctx.local_shapes else grad_skills.shape[-1]
        full = [g if g is not None else grad_skills.new_zeros((*shape, hidden)) for g, shape in zip(grads, shapes,
                                                                                                   strict=True)]
        dtype = full[0].dtype if full else grad_skills.dtype
        flat = torch.cat([g.float().reshape(-1) for g in full])  # fp32: W partial sums under bf16 autocast
        dist.all_reduce(flat)
        out, offset = [], 0
        for g, sizes, local_shape in zip(full, plan["sizes"], ctx.local_shapes, strict=True):
            summed = flat[offset : offset + g.numel()].view(g.shape).to(dtype)
            offset += g.numel()
            start = sum(sizes[:rank])
            out.append(summed[start : start + sizes[rank], : local_shape[1]])
        return (None, grad_skills, *out, *([None] * n))


def exchange_texts(
    skills: TokenEmbeddings, texts: Sequence[TokenEmbeddings], totals: Sequence[int]
) -> tuple[TokenEmbeddings, list[TokenEmbeddings]]:
    """This rank's skills, and every graph's texts of ALL ranks in rank order (identity in one process).

    ``totals[g]``: the graph's texts in the global batch. Widths are padded to the widest shard (a column that
    is padding in every row never changes a score: scorers read the mask).
    """
    rank, world = rank_world()
    if world == 1:
        return skills, list(texts)
    sizes = [shard_sizes(total, world) for total in totals]
    for tok, size, total in zip(texts, sizes, totals, strict=True):
        if len(tok) != size[rank]:
            raise ValueError(f"rank {rank} encoded {len(tok)} texts, its shard of {total} is {size[rank]}")
    local_widths = torch.tensor([tok.embeddings.shape[1] for tok in texts], dtype=torch.long,
                                device=skills.embeddings.device)
    widths = torch.stack(_all_gather(local_widths, world)).amax(0).tolist() if len(texts) else []
    plan = {"rank": rank, "world": world, "sizes": sizes, "widths": widths}
    dtype = skills.embeddings.dtype  # the same on every rank (an empty shard's placeholder may differ)
    embs = [t.embeddings.to(dtype) for t in texts]
    out = _ExchangeTexts.apply(plan, skills.embeddings, *embs, *[t.mask for t in texts])
    n = len(texts)
    gathered = [TokenEmbeddings(emb, mask) for emb, mask in zip(out[1 : 1 + n], out[1 + n :], strict=True)]
    return TokenEmbeddings(out[0], skills.mask), gathered

