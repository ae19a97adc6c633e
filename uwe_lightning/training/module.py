"""The UWE LightningModule: one shared encoder, a late-interaction scorer and the many-to-many loss.

Each step encodes the batch's skills once and each graph's texts once (at most ``train_max_length`` tokens,
the paper's 64), scores every skill against every text of each graph in both directions (skill as query and
text as query; see :func:`uwe_lightning.model.pairwise.pairwise_scores`) and hands the scores with the batch's
positive masks to the loss (paper eq. 2-4). Optimisation follows Appendix A: AdamW, linear warm-up over the
first 10 % of the steps, then linear decay to 0 (:mod:`uwe_lightning.training.optim`). The trained
model is a :class:`~uwe_lightning.model.pretrained.UWEModel` (``module.model``): ``module.save_pretrained(dir)``
writes the project's one model format.

Memory and scale (``train`` config section): ``grad_cache`` encodes the batch GradCache-style in mini-batches
(:mod:`uwe_lightning.model.grad_cache`), ``backbone_checkpointing`` recomputes the backbone's layers in
backward, and under DDP each rank encodes its shard of the batch while the loss sees the whole batch
(:mod:`uwe_lightning.training.distributed`). None of them changes the gradient.

Non-finite values stop training with :class:`NonFiniteError` naming the step and the graph (or parameter).
The error is raised before the optimiser step, so the weights that the last checkpoint holds were never
touched by the bad update; :class:`uwe_lightning.training.checkpointing.AtomicCheckpointIO` additionally refuses
to write a checkpoint whose weights are not finite.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor

from uwe_lightning.data.graphs import GRAPHS
from uwe_lightning.losses import GraphLoss
from uwe_lightning.model.encoder import Encoder, TokenEmbeddings
from uwe_lightning.model.grad_cache import UNITS, cached_encode
from uwe_lightning.model.pairwise import pairwise_scores
from uwe_lightning.model.pretrained import UWEModel
from uwe_lightning.model.scoring import ScorerSpec
from uwe_lightning.training.distributed import exchange_texts, gather_score_rows, rank_world
from uwe_lightning.training.optim import decay_groups, linear_warmup_decay, warmup_steps_for


def batch_counts(batch: Any) -> dict[str, float]:
    """What a step holds: its skill rows, and per graph its texts and the skill rows without a positive there
    (those rows act as negatives only); logged every step as ``train/skills``, ``train/<G>/texts``, ..."""
    counts = {"train/skills": float(batch.num_skills)}  # the global batch's (data parallel: not the shard's)
    for name, part in batch.graphs.items():
        counts[f"train/{name}/texts"] = float(part.pos_mask.shape[1])
        counts[f"train/{name}/rows_without_positive"] = float((~part.pos_mask.any(dim=1)).sum())
    return counts


class NonFiniteError(FloatingPointError):
    """A NaN/inf loss or gradient; the message names the step and the graph or parameter."""


def first_nonfinite_grad(named_params: Mapping[str, torch.nn.Parameter]) -> str | None:
    """Name of the first parameter whose gradient holds NaN/inf, or None (one fused norm in the good case)."""
    grads = [(n, p.grad) for n, p in named_params.items() if p.grad is not None]
    if not grads:
        return None
    norms = torch._foreach_norm([g for _, g in grads])
    if bool(torch.isfinite(torch.stack(norms)).all()):
        return None
    return next(n for (n, _), v in zip(grads, norms, strict=True) if not bool(torch.isfinite(v)))


def seed_step(seed: int, step: int, rank: int = 0) -> None:
    """Seed torch (CPU and CUDA), numpy and ``random`` from (seed, step): each step's dropout is fixed by them.
    Data-parallel rank ``r > 0`` seeds from (seed, step, r), so ranks draw independent dropout masks.

    >>> seed_step(0, 5); a = torch.rand(2); seed_step(0, 5); bool(torch.equal(a, torch.rand(2)))
    True
    """
    state = np.random.SeedSequence([seed, step] + ([rank] if rank else [])).generate_state(2, np.uint32)
    value = int(state[0]) << 32 | int(state[1])
    torch.manual_seed(value)
    np.random.seed(int(state[0]))
    random.seed(value)


class UWEModule(pl.LightningModule):
    """Trains a :class:`UWEModel` (shared encoder + scorer) with a graph-wise contrastive loss.

    Args:
        backbone: a name for :func:`uwe_lightning.model.backbones.resolve_backbone` or a HF model dir.
        scorer: a :class:`ScorerSpec` (what the ``scorer`` config group instantiates) or a scorer name.
        scorer_tau: the temperature when ``scorer`` is a name (``None``: its default).
        loss: a :class:`GraphLoss` (what the ``loss`` config group instantiates), or its ``{name, tau, alpha}``
            (default: MTM with the paper's tau / alpha) restricted to ``graphs``.
        graphs: the graphs of the training data; the loss sees only those with a positive weight.
        lr / weight_decay / warmup_ratio / betas / eps: AdamW and the linear schedule (Appendix A).
        max_steps: total optimiser steps (the schedule's length).
        train_max_length: token cap for every training text (paper: 64; inference is unconstrained).
        score_chunk_size / score_checkpoint: memory controls of :func:`pairwise_scores`.
        grad_cache / grad_cache_size / grad_cache_unit: encode GradCache-style in mini-batches of
            ``grad_cache_size`` texts or padded tokens (:func:`~uwe_lightning.model.grad_cache.cached_encode`).
        backbone_checkpointing: recompute the backbone's layers in backward
            (:meth:`~uwe_lightning.model.encoder.Encoder.enable_gradient_checkpointing`).
        model_dir: where named backbones are assembled (``None``: the default model cache).
        seed: with the batch's step, seeds dropout (and every other RNG) at the start of each step, so the
            randomness of step ``k`` does not depend on what ran before it: a run resumed from any checkpoint
            is the uninterrupted run (bit-identical weights on CPU).
    """

    def __init__(
        self,
        backbone: str,
        scorer: ScorerSpec | str = "softmax",
        scorer_tau: float | None = None,
        loss: GraphLoss | Mapping[str, Any] | None = None,
        graphs: tuple[str, ...] | list[str] = GRAPHS,
        lr: float = 8e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        betas: tuple[float, float] | list[float] = (0.9, 0.999),
        eps: float = 1e-8,
        max_steps: int = 1000,
        train_max_length: int = 64,
        score_chunk_size: int | None = 64,
        score_checkpoint: bool = True,
        model_dir: str | None = None,
        seed: int = 0,
        grad_cache: bool = False,
        grad_cache_size: int = 64,
        grad_cache_unit: str = "texts",
        backbone_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if grad_cache_unit not in UNITS or grad_cache_size < 1:
            raise ValueError(f"grad cache mini-batch: {grad_cache_size} {grad_cache_unit} (size >= 1, unit in {UNITS})")
        if not isinstance(loss, GraphLoss):
            loss = GraphLoss(**dict(loss or {"name": "mtm"}), graphs=graphs)
        encoder = Encoder.from_pretrained(backbone, model_dir)
        self.model = UWEModel(encoder, scorer, scorer_tau, train_max_length=train_max_length,
                              provenance={"backbone": backbone})
        self.model.train()  # from_pretrained returns eval mode; training uses the backbone's dropout
        if backbone_checkpointing:
            encoder.enable_gradient_checkpointing()
        spec = self.model.scorer
        self.save_hyperparameters(
            {
                "backbone": backbone,
                "scorer": spec.name,
                "scorer_tau": spec.tau,
                "loss": loss.config(),
                "graphs": list(graphs),
                "lr": lr,
                "weight_decay": weight_decay,
                "warmup_ratio": warmup_ratio,
                "betas": list(betas),
                "eps": eps,
                "max_steps": max_steps,
                "train_max_length": train_max_length,
                "score_chunk_size": score_chunk_size,
                "score_checkpoint": score_checkpoint,
                "seed": seed,
                "grad_cache": grad_cache,
                "grad_cache_size": grad_cache_size,
                "grad_cache_unit": grad_cache_unit,
                "backbone_checkpointing": backbone_checkpointing,
            },
            logger=False,  # kept in checkpoints; the loggers get the run's whole config once (training.run)
        )
        self.loss_fn = loss
        self.graphs = loss.active_graphs  # graphs with weight 0 are neither encoded nor scored

    @property
    def encoder(self) -> Encoder:
        return self.model.encoder

    @property
    def scorer(self) -> ScorerSpec:
        return self.model.scorer

    def save_pretrained(self, out_dir: str | Path, **provenance: Any) -> Path:
        """The trained model in the project's model format (:meth:`UWEModel.save_pretrained`)."""
        return self.model.save_pretrained(out_dir, step=int(self.global_step), **provenance)

    # ------------------------------------------------------------------------------------------------------
    # Forward
    # ------------------------------------------------------------------------------------------------------

    def encode_inputs(self, inputs: Mapping[str, Tensor]) -> TokenEmbeddings:
        """Token embeddings of a tokenised batch (only the keys every backbone accepts); no rows: ``[0, 0, H]``."""
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        if ids.shape[0] == 0:  # an empty data-parallel shard
            hidden = self.encoder.hidden_size
            return TokenEmbeddings(torch.zeros((0, 0, hidden), device=ids.device), mask.bool())
        return self.encoder(ids, mask).trimmed()

    def encode_groups(self, groups: list[Mapping[str, Tensor]]) -> list[TokenEmbeddings]:
        """Token embeddings of each tokenised group (skills, then each graph's texts): one pass per group, or
        GradCache mini-batches over all of them (``grad_cache``)."""
        hp = self.hparams
        if not hp.get("grad_cache", False):
            return [self.encode_inputs(g) for g in groups]
        inputs = [(g["input_ids"], g["attention_mask"]) for g in groups]
        return cached_encode(lambda ids, mask: self.encoder(ids, mask).embeddings, list(self.encoder.parameters()),
                             inputs, self.encoder.hidden_size, hp.grad_cache_size, hp.grad_cache_unit)

    def graph_scores(self, batch: Any) -> tuple[dict, dict, dict]:
        """Per graph of the whole batch: (fwd [S, N], rev [N, S]) scores in fp32, positive masks, pair indices.

        Under data parallel this rank encodes its shard, receives every rank's texts, scores its skills against
        all of them and gathers the score rows of all skills (:mod:`~uwe_lightning.training.distributed`).
        """
        rank, world = rank_world()
        if tuple(batch.shard) != (rank, world):
            raise RuntimeError(f"batch tokenised for shard {tuple(batch.shard)} reached rank {rank} of {world}")
        if batch.num_skills < world:
            raise ValueError(f"data.skills_per_step={batch.num_skills} is below the {world} data-parallel ranks: "
                             "every rank needs at least one skill per step")
        graphs = [g for g in self.graphs if g in batch.graphs]  # absent: no text this step (the loss skips it)
        parts = [batch.graphs[g] for g in graphs]
        encoded = self.encode_groups([batch.skill_inputs] + [part.text_inputs for part in parts])
        skills, texts = encoded[0], encoded[1:]
        if graphs:
            skills, texts = exchange_texts(skills, texts, [part.num_texts for part in parts])
        fwd_rev = []
        for tok in texts:
            fwd, rev = pairwise_scores(
                skills,
                tok,
                self.scorer,
                chunk_size=self.hparams.score_chunk_size,
                checkpoint=self.hparams.score_checkpoint,
                both_directions=True,
            )
            fwd_rev += [fwd.float(), rev.float().T]
        scores, pos_masks, pair_index = {}, {}, {}
        if not graphs:
            return scores, pos_masks, pair_index
        rows = gather_score_rows(torch.cat(fwd_rev, dim=1), batch.num_skills)  # [S, sum of 2 N_G]
        rows = rows.split([t.shape[1] for t in fwd_rev], dim=1)
        for i, (graph, part) in enumerate(zip(graphs, parts, strict=True)):
            scores[graph] = (rows[2 * i], rows[2 * i + 1].T)
            pos_masks[graph] = part.pos_mask
            pair_index[graph] = part.pair_index
        return scores, pos_masks, pair_index

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        seed_step(int(self.hparams.get("seed", 0)), int(batch.step), rank_world()[0])

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        scores, pos_masks, pair_index = self.graph_scores(batch)
        step = self.global_step
        n_skills = batch.num_skills
        if not scores:  # not one text in any trained graph: nothing to learn from (logged, not an error)
            self.log_dict({f"train/{g}/skipped": 1.0 for g in self.graphs}, batch_size=n_skills)
            return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
        try:
            loss, logs = self.loss_fn(scores, pos_masks, pair_index)
        except FloatingPointError as err:
            raise NonFiniteError(f"non-finite loss at step {step} (batch step {batch.step}): {err}") from err
        if not bool(torch.isfinite(loss)):
            bad = [k for k, v in logs.items() if not math.isfinite(float(v))]
            raise NonFiniteError(
                f"non-finite loss {float(loss)} at step {step}; non-finite terms: {bad or 'total'}"
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=n_skills)
        terms = {f"train/{k}": float(v) for k, v in logs.items() if k != "total"}
        self.log_dict(terms, batch_size=n_skills)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=n_skills)
        self.log_dict(batch_counts(batch), batch_size=n_skills)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Stop before a NaN/inf gradient reaches the weights (a finite loss can still give one)."""
        bad = first_nonfinite_grad(dict(self.named_parameters()))
        if bad is not None:
            raise NonFiniteError(f"non-finite gradient at step {self.global_step} in parameter {bad}")

    # ------------------------------------------------------------------------------------------------------
    # Optimisation
    # ------------------------------------------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        groups = decay_groups(dict(self.named_parameters()), hp.weight_decay)
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps)
        warmup = warmup_steps_for(hp.max_steps, hp.warmup_ratio)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: linear_warmup_decay(step, warmup, hp.max_steps)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
