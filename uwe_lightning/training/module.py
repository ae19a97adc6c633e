"""The UWE LightningModule: one shared encoder, a late-interaction scorer and the many-to-many loss.

Each step encodes the batch's skills once and each graph's texts once (at most ``train_max_length`` tokens,
the paper's 64), scores every skill against every text of each graph in both directions (skill as query and
text as query; see :func:`uwe_lightning.model.scoring.pairwise_scores`) and hands the scores with the batch's
positive masks to the loss (paper eq. 2-4). Optimisation follows Appendix A: AdamW, linear warm-up over the
first 10 % of the steps, then linear decay to 0.

Non-finite values stop training with :class:`NonFiniteError` naming the step and the graph (or parameter).
The error is raised before the optimiser step, so the weights that the last checkpoint holds were never
touched by the bad update; :class:`uwe_lightning.training.callbacks.AtomicCheckpointIO` additionally refuses
to write a checkpoint whose weights are not finite.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from uwe_lightning.model.encoder import Encoder, TokenEmbeddings
from uwe_lightning.model.scoring import ScorerSpec, get_scorer, pairwise_scores

GRAPHS = ("J", "V", "A")
PAPER_TAU = {"J": 0.05, "V": 0.02, "A": 0.02}  # Appendix A (the loss/mtm.yaml values)
PAPER_ALPHA = {"J": 1.0, "V": 0.5, "A": 0.5}


class NonFiniteError(FloatingPointError):
    """A NaN/inf loss or gradient; the message names the step and the graph or parameter."""


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


def first_nonfinite_grad(named_params: Mapping[str, torch.nn.Parameter]) -> str | None:
    """Name of the first parameter whose gradient holds NaN/inf, or None (one fused norm in the good case)."""
    grads = [(n, p.grad) for n, p in named_params.items() if p.grad is not None]
    if not grads:
        return None
    norms = torch._foreach_norm([g for _, g in grads])
    if bool(torch.isfinite(torch.stack(norms)).all()):
        return None
    return next(n for (n, _), v in zip(grads, norms, strict=True) if not bool(torch.isfinite(v)))


class UWEModule(pl.LightningModule):
    """Trains a shared :class:`Encoder` with a ScorerSpec and a graph-wise contrastive loss.

    Args:
        backbone: a name for :func:`uwe_lightning.model.backbones.resolve_backbone` or a HF model dir.
        scorer / scorer_tau: the late-interaction scorer and its temperature (``None``: its default).
        loss: ``{"name", "tau": {G: float} | float, "alpha": {G: float}}`` (the ``loss`` config group;
            default: MTM with the paper's tau / alpha).
        graphs: the graphs trained on; the loss sees only these.
        lr / weight_decay / warmup_ratio / betas / eps: AdamW and the linear schedule (Appendix A).
        max_steps: total optimiser steps (the schedule's length).
        train_max_length: token cap for every training text (paper: 64; inference is unconstrained).
        score_chunk_size / score_checkpoint: memory controls of :func:`pairwise_scores`.
        model_dir: where named backbones are assembled (``None``: the default model cache).
    """

    def __init__(
        self,
        backbone: str,
        scorer: str = "softmax",
        scorer_tau: float | None = None,
        loss: Mapping[str, Any] | None = None,
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
    ) -> None:
        super().__init__()
        loss = dict(loss or {"name": "mtm", "tau": dict(PAPER_TAU), "alpha": dict(PAPER_ALPHA)})
        graphs = tuple(graphs)
        unknown = sorted(set(graphs) - set(GRAPHS))
        if unknown or not graphs:
            raise ValueError(f"graphs must be a non-empty subset of {GRAPHS}, got {list(graphs)}")
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.save_hyperparameters(
            {
                "backbone": backbone,
                "scorer": scorer,
                "scorer_tau": scorer_tau,
                "loss": loss,
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
            }
        )
        self.graphs = active_graphs(loss, graphs)  # graphs with weight 0 are neither encoded nor scored
        self.loss_fn = build_graph_loss(loss, self.graphs)
        self.scorer: ScorerSpec = get_scorer(scorer, scorer_tau)
        self.encoder = Encoder.from_pretrained(backbone, model_dir)
        self.encoder.train()  # from_pretrained returns eval mode; training uses the backbone's dropout

    # ------------------------------------------------------------------------------------------------------
    # Forward
    # ------------------------------------------------------------------------------------------------------

    def encode_inputs(self, inputs: Mapping[str, Tensor]) -> TokenEmbeddings:
        """Token embeddings of a tokenised batch (only the keys every backbone accepts)."""
        return self.encoder(inputs["input_ids"], inputs["attention_mask"]).trimmed()

    def graph_scores(self, batch: Any) -> tuple[dict, dict, dict]:
        """Per graph: (fwd [S, N], rev [N, S]) scores in fp32, positive masks and pair indices."""
        skills = self.encode_inputs(batch.skill_inputs)
        scores, pos_masks, pair_index = {}, {}, {}
        for graph in self.graphs:
            if graph not in batch.graphs:
                raise KeyError(
                    f"batch at step {batch.step} has no graph {graph!r} (has {sorted(batch.graphs)})"
                )
            part = batch.graphs[graph]
            texts = self.encode_inputs(part.text_inputs)
            fwd, rev = pairwise_scores(
                skills,
                texts,
                self.scorer,
                chunk_size=self.hparams.score_chunk_size,
                checkpoint=self.hparams.score_checkpoint,
                both_directions=True,
            )
            scores[graph] = (fwd.float(), rev.float())
            pos_masks[graph] = part.pos_mask
            pair_index[graph] = part.pair_index
        return scores, pos_masks, pair_index

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        scores, pos_masks, pair_index = self.graph_scores(batch)
        step = self.global_step
        try:
            loss, logs = self.loss_fn(scores, pos_masks, pair_index)
        except FloatingPointError as err:
            raise NonFiniteError(f"non-finite loss at step {step} (batch step {batch.step}): {err}") from err
        if not bool(torch.isfinite(loss)):
            bad = [k for k, v in logs.items() if not math.isfinite(float(v))]
            raise NonFiniteError(
                f"non-finite loss {float(loss)} at step {step}; non-finite terms: {bad or 'total'}"
            )
        n_skills = int(batch.skill_inputs["input_ids"].shape[0])
        self.log("train/loss", loss, prog_bar=True, batch_size=n_skills)
        terms = {f"train/{k}": float(v) for k, v in logs.items() if k != "total"}
        self.log_dict(terms, batch_size=n_skills)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=n_skills)
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


def loss_weights(
    loss_cfg: Mapping[str, Any], graphs: tuple[str, ...]
) -> tuple[dict[str, float], dict[str, float]]:
    """Per-graph tau and alpha for :func:`uwe_lightning.loss.build_loss`; a scalar tau applies to all graphs.

    >>> mtm = {"name": "mtm", "tau": {"J": 0.05, "V": 0.02, "A": 0.02}, "alpha": {"J": 1, "V": 0.5}}
    >>> loss_weights(mtm, ("J",))
    ({'J': 0.05}, {'J': 1.0})
    >>> loss_weights({"name": "infonce", "tau": 0.05}, ("J", "V"))
    ({'J': 0.05, 'V': 0.05}, {'J': 1.0, 'V': 1.0})
    """
    tau_cfg = loss_cfg.get("tau")
    alpha_cfg = loss_cfg.get("alpha") or {}
    tau: dict[str, float] = {}
    alpha: dict[str, float] = {}
    for graph in graphs:
        value = tau_cfg if not isinstance(tau_cfg, Mapping) else tau_cfg.get(graph)
        if value is None:
            raise KeyError(f"loss.tau has no value for graph {graph!r} (loss {loss_cfg.get('name')!r})")
        tau[graph] = float(value)
        alpha[graph] = (
            float(alpha_cfg.get(graph, 1.0)) if isinstance(alpha_cfg, Mapping) else float(alpha_cfg)
        )
    return tau, alpha


def active_graphs(loss_cfg: Mapping[str, Any], graphs: tuple[str, ...]) -> tuple[str, ...]:
    """The graphs with a positive loss weight; an error when there is none (nothing to train).

    >>> active_graphs({"name": "mtm", "tau": 0.05, "alpha": {"J": 1.0, "V": 0.0, "A": 0.5}}, ("J", "V", "A"))
    ('J', 'A')
    """
    _, alpha = loss_weights(loss_cfg, graphs)
    active = tuple(g for g in graphs if alpha[g] > 0)
    if not active:
        raise ValueError(
            f"every trained graph {list(graphs)} has loss weight 0 (loss.alpha {alpha}): nothing to train"
        )
    return active


def build_graph_loss(loss_cfg: Mapping[str, Any], graphs: tuple[str, ...]):
    """The loss callable of ``loss_cfg`` restricted to ``graphs`` (unknown keys in the config fail here)."""
    from uwe_lightning.loss import build_loss

    unknown = sorted(set(loss_cfg) - {"name", "tau", "alpha"})
    if unknown:
        raise KeyError(f"unknown key(s) {unknown} in the loss config; expected name, tau, alpha")
    tau, alpha = loss_weights(loss_cfg, graphs)
    return build_loss(str(loss_cfg["name"]), tau=tau, alpha=alpha)
