"""Contrastive losses of the paper's Table 4: ``infonce`` (Eq. 1), ``mtm_pairwise`` and ``mtm`` (Eq. 2-4).

Batch structure (from the data module). ``S`` distinct skills are the rows. For each bipartite graph
``G`` in {"J" (job titles), "V" (vacancy sentences), "A" (skill alternatives)} the batch holds ``N_G`` texts
(columns) with

- ``scores[G] = (fwd [S, N_G], rev [N_G, S])``: ``fwd`` scores skill -> text (skill as query), ``rev`` scores
  text -> skill (text as query; see :func:`uwe_lightning.model.scoring.pairwise_scores`);
- ``pos_masks[G]: bool [S, N_G]``: the graph's edges between every batch skill and every batch text, so a text
  that occurs twice, or a job linked to two sampled skills, is a positive wherever the graph has the edge;
- ``pair_index[G]: long [N_G]``: the row of the skill each text was sampled for
  (``pos_masks[G][pair_index[G][j], j]`` must be True).

Losses (all scores are divided by a temperature before the softmax):

- ``infonce`` (Eq. 1; asymmetric, single-label, not structure-aware): the batch is the sequence of
  (skill, text) pairs over all graphs; each pair's loss is ``-log softmax`` of its skill's row over ALL texts
  of all graphs concatenated (one denominator), at the pair's text; mean over pairs. One temperature, and
  graphs are not weighted: ``alpha`` only selects the graphs in the batch (``alpha_G = 0`` drops a graph).
- ``mtm_pairwise`` (symmetric, structure-aware, single-label): per graph, the forward term is the
  cross-entropy of row ``pair_index[j]`` over G's texts with target ``j`` and the reverse term the
  cross-entropy of ``rev[j]`` over skills with target ``pair_index[j]``, each averaged over pairs;
  ``L_G = fwd + rev``, ``L = sum_G alpha_G L_G``. Other positives of a row count as negatives here.
- ``mtm`` (Eq. 2-4; symmetric, multi-label, structure-aware): per graph, ``L_{Y|Q}`` averages, for every skill
  row with at least one positive in G, the mean over its positives of ``-log softmax(fwd[q] / tau_G)[y]``
  (averaging outside the log, Khosla et al. 2020), over such rows; ``L_{Q|Y}`` does the same for every text
  column over its positive skills with ``rev``; ``L_G = L_{Y|Q} + L_{Q|Y}``; ``L_MTM = sum_G alpha_G L_G``.
  Rows without positives (a skill with no neighbour in G) are skipped.

Temperatures and weights are per graph (paper, Appendix A: tau J 0.05, V 0.02, A 0.02; alpha J 1.0, V 0.5,
A 0.5). A graph with ``alpha_G = 0`` is skipped before any compute; a non-finite term raises
:class:`FloatingPointError` naming its graph and term.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from uwe_lightning.data.graphs import GRAPHS

#: Appendix A grid-search optimum (the ``loss/mtm.yaml`` values).
PAPER_TAU = {"J": 0.05, "V": 0.02, "A": 0.02}
PAPER_ALPHA = {"J": 1.0, "V": 0.5, "A": 0.5}

Scores = Mapping[str, tuple[Tensor, Tensor]]
LossFn = Callable[[Scores, Mapping[str, Tensor], Mapping[str, Tensor]], tuple[Tensor, dict[str, float]]]


@dataclass(frozen=True)
class LossConfig:
    """Per-graph temperatures and weights; a graph with weight 0 (or absent from ``alpha``) is not trained."""

    tau: dict[str, float] = field(default_factory=lambda: dict(PAPER_TAU))
    alpha: dict[str, float] = field(default_factory=lambda: dict(PAPER_ALPHA))

    def __post_init__(self) -> None:
        for graph, weight in self.alpha.items():
            if not (math.isfinite(weight) and weight >= 0):
                raise ValueError(f"loss.alpha.{graph} must be a finite weight >= 0, got {weight}")
        for graph in self.active_graphs:
            tau = self.tau.get(graph)
            if tau is None:
                raise KeyError(f"loss.tau has no temperature for graph {graph!r} (alpha.{graph} > 0)")
            if not (math.isfinite(tau) and tau > 0):
                raise ValueError(f"loss.tau.{graph} must be a finite temperature > 0, got {tau}")
        if not self.active_graphs:
            raise ValueError(f"loss.alpha gives every graph weight 0: {self.alpha}")

    @property
    def active_graphs(self) -> tuple[str, ...]:
        """Graphs with a positive weight, in ``alpha``'s order."""
        return tuple(g for g, w in self.alpha.items() if w > 0)


# ----------------------------------------------------------------------------------------------------------
# Per-graph terms (pure functions of one graph's tensors)
# ----------------------------------------------------------------------------------------------------------


def multi_positive_nll(logits: Tensor, positives: Tensor) -> Tensor:
    """Mean over rows with >= 1 positive of the mean over positives of ``-log softmax(row)[positive]``.

    The average is outside the log (Khosla et al. 2020); rows without positives are skipped. A row with
    scores (log 3, 0, 0) and positives at 0 and 1: (-log(3/5) - log(1/5)) / 2 = 1.0601.

    >>> multi_positive_nll(torch.tensor([[math.log(3), 0.0, 0.0], [5.0, 1.0, 2.0]]),
    ...                    torch.tensor([[True, True, False], [False, False, False]]))
    tensor(1.0601)
    """
    log_prob = torch.log_softmax(logits.float(), dim=-1)
    n_pos = positives.sum(-1)
    per_row = -torch.where(positives, log_prob, 0.0).sum(-1) / n_pos.clamp_min(1)
    has_pos = n_pos > 0
    return (per_row * has_pos).sum() / has_pos.sum()  # NaN (caught by the caller) if no row has a positive


def mtm_terms(fwd: Tensor, rev: Tensor, pos_mask: Tensor, tau: float) -> dict[str, Tensor]:
    """Eq. 2-3 for one graph: ``{"y_given_q": L_{Y|Q}, "q_given_y": L_{Q|Y}}``."""
    return {
        "y_given_q": multi_positive_nll(fwd / tau, pos_mask),
        "q_given_y": multi_positive_nll(rev / tau, pos_mask.T),
    }


def mtm_pairwise_terms(fwd: Tensor, rev: Tensor, pair_index: Tensor, tau: float) -> dict[str, Tensor]:
    """One positive per pair: CE of skill row ``pair_index[j]`` -> text ``j``, and of text ``j`` -> skill."""
    columns = torch.arange(len(pair_index), device=fwd.device)
    return {
        "y_given_q": F.cross_entropy(fwd[pair_index].float() / tau, columns),
        "q_given_y": F.cross_entropy(rev.float() / tau, pair_index),
    }


# ----------------------------------------------------------------------------------------------------------
# Losses over all graphs
# ----------------------------------------------------------------------------------------------------------


def mtm_loss(
    scores: Scores, pos_masks: Mapping[str, Tensor], pair_index: Mapping[str, Tensor], config: LossConfig
) -> tuple[Tensor, dict[str, float]]:
    """``L_MTM = sum_G alpha_G (L_{Y|Q} + L_{Q|Y})`` (Eq. 4)."""
    return _sum_over_graphs(
        lambda g, fwd, rev: mtm_terms(fwd, rev, pos_masks[g], config.tau[g]), scores, pos_masks, pair_index, config
    )


def mtm_pairwise_loss(
    scores: Scores, pos_masks: Mapping[str, Tensor], pair_index: Mapping[str, Tensor], config: LossConfig
) -> tuple[Tensor, dict[str, float]]:
    """``sum_G alpha_G (CE_fwd + CE_rev)`` with one positive per (skill, text) pair."""
    return _sum_over_graphs(
        lambda g, fwd, rev: mtm_pairwise_terms(fwd, rev, pair_index[g], config.tau[g]),
        scores, pos_masks, pair_index, config,
    )


def _sum_over_graphs(
    graph_terms: Callable[[str, Tensor, Tensor], dict[str, Tensor]],
    scores: Scores, pos_masks: Mapping[str, Tensor], pair_index: Mapping[str, Tensor], config: LossConfig,
) -> tuple[Tensor, dict[str, float]]:
    """``sum_G alpha_G sum(graph_terms(G, fwd_G, rev_G))`` over the active graphs, each checked first: the shape
    of both structure-aware losses, which differ only in a graph's terms."""
    terms = {}
    for graph in config.active_graphs:
        fwd, rev = _checked_graph(graph, scores, pos_masks, pair_index)
        terms[graph] = graph_terms(graph, fwd, rev)
    total = sum(config.alpha[g] * sum(graph.values()) for g, graph in terms.items())
    return total, _logs(total, terms, pos_masks, pair_index)


def infonce_loss(
    scores: Scores, pos_masks: Mapping[str, Tensor], pair_index: Mapping[str, Tensor], config: LossConfig
) -> tuple[Tensor, dict[str, float]]:
    """Eq. 1: one softmax per pair over the texts of all graphs together; mean over all pairs."""
    graphs = config.active_graphs
    taus = {config.tau[g] for g in graphs}
    if len(taus) != 1:
        used = {g: config.tau[g] for g in graphs}
        raise ValueError(f"infonce uses one temperature for all graphs; got loss.tau {used}")
    tau = taus.pop()
    fwd_all = torch.cat([_checked_graph(g, scores, pos_masks, pair_index)[0] for g in graphs], dim=1).float()
    log_prob = torch.log_softmax(fwd_all / tau, dim=-1)
    per_pair, offset = {}, 0
    for graph in graphs:
        index = pair_index[graph]
        columns = offset + torch.arange(len(index), device=index.device)
        per_pair[graph] = -log_prob[index, columns]
        offset += len(index)
    total = torch.cat(list(per_pair.values())).mean()
    terms = {g: {"infonce": losses.mean()} for g, losses in per_pair.items()}
    return total, _logs(total, terms, pos_masks, pair_index)


LOSSES: dict[str, Callable[..., tuple[Tensor, dict[str, float]]]] = {
    "infonce": infonce_loss,
    "mtm_pairwise": mtm_pairwise_loss,
    "mtm": mtm_loss,
}


def build_loss(
    name: str, tau: Mapping[str, float] | float | None = None, alpha: Mapping[str, float] | None = None
) -> GraphLoss:
    """The loss ``name`` over the graphs of ``alpha`` (``None``: the paper's tau / alpha, all three graphs).

    The result is called as ``fn(scores, pos_masks, pair_index) -> (total, logs)``; ``logs`` maps
    ``"<G>/<term>"``, ``"<G>/total"`` (unweighted) and ``"total"`` to floats.
    """
    alpha = dict(PAPER_ALPHA if alpha is None else alpha)
    return GraphLoss(name, tau=tau, alpha=alpha, graphs=tuple(alpha))


class GraphLoss:
    """The configured loss of a run: ``name`` with per-graph ``tau`` / ``alpha``, restricted to ``graphs``.

    What the ``loss`` config group instantiates (``graphs`` comes from ``data.graphs``). A scalar ``tau`` applies
    to every graph; a graph missing from ``alpha`` gets weight 1. Graphs with weight 0 are neither encoded nor
    scored (:attr:`active_graphs`); a config that leaves no graph to train raises :class:`ValueError`.

    Args:
        name: a key of :data:`LOSSES` (``infonce``, ``mtm_pairwise``, ``mtm``).
        tau: per-graph temperatures or one float.
        alpha: per-graph weights.
        graphs: the graphs of the training data.

    Example:
        >>> loss = GraphLoss("mtm", tau={"J": 0.05, "V": 0.02, "A": 0.02}, alpha={"J": 1, "V": 0.0}, graphs=["J", "V"])
        >>> loss.active_graphs, loss.config()["tau"]
        (('J',), {'J': 0.05})
    """

    def __init__(
        self,
        name: str = "mtm",
        tau: Mapping[str, float] | float | None = None,
        alpha: Mapping[str, float] | float | None = None,
        graphs: Sequence[str] = GRAPHS,
    ) -> None:
        if name not in LOSSES:
            raise KeyError(f"unknown loss {name!r}; known: {', '.join(sorted(LOSSES))}")
        graphs = tuple(graphs)
        unknown = sorted(set(graphs) - set(GRAPHS))
        if unknown or not graphs:
            raise ValueError(f"graphs must be a non-empty subset of {GRAPHS}, got {list(graphs)}")
        tau = dict(PAPER_TAU) if tau is None else tau
        alpha = dict(PAPER_ALPHA) if alpha is None else alpha
        per_tau: dict[str, float] = {}
        per_alpha: dict[str, float] = {}
        for graph in graphs:
            value = tau.get(graph) if isinstance(tau, Mapping) else tau
            if value is None:
                raise KeyError(f"loss.tau has no value for graph {graph!r} (loss {name!r})")
            per_tau[graph] = float(value)
            per_alpha[graph] = float(alpha.get(graph, 1.0)) if isinstance(alpha, Mapping) else float(alpha)
        if not any(w > 0 for w in per_alpha.values()):
            raise ValueError(
                f"every trained graph {list(graphs)} has loss weight 0 (loss.alpha {per_alpha}): nothing to train"
            )
        self.name = name
        self.settings = LossConfig(tau=per_tau, alpha=per_alpha)
        self._fn = LOSSES[name]

    @property
    def active_graphs(self) -> tuple[str, ...]:
        return self.settings.active_graphs

    def config(self) -> dict:
        """Plain ``{name, tau, alpha}`` of the active graphs (what checkpoints and run summaries record)."""
        graphs = self.active_graphs
        return {
            "name": self.name,
            "tau": {g: self.settings.tau[g] for g in graphs},
            "alpha": {g: self.settings.alpha[g] for g in graphs},
        }

    def __call__(
        self, scores: Scores, pos_masks: Mapping[str, Tensor], pair_index: Mapping[str, Tensor]
    ) -> tuple[Tensor, dict[str, float]]:
        """The loss over the active graphs present in ``scores``; a graph without texts in this batch (a step
        whose sampled skills have no neighbour in it) contributes 0 and is logged as ``<G>/skipped = 1``."""
        present = tuple(g for g in self.active_graphs if g in scores)
        skipped = {f"{g}/skipped": 1.0 for g in self.active_graphs if g not in scores}
        if not present:
            raise ValueError(f"no active graph {list(self.active_graphs)} has a text in this batch")
        settings = self.settings if not skipped else LossConfig(
            tau={g: self.settings.tau[g] for g in present}, alpha={g: self.settings.alpha[g] for g in present}
        )
        total, logs = self._fn(scores, pos_masks, pair_index, config=settings)
        return total, {**logs, **skipped}

    def __repr__(self) -> str:
        return f"GraphLoss({self.config()})"


# ----------------------------------------------------------------------------------------------------------
# Checks and bookkeeping
# ----------------------------------------------------------------------------------------------------------


def _checked_graph(
    graph: str, scores: Scores, pos_masks: Mapping[str, Tensor], pair_index: Mapping[str, Tensor]
) -> tuple[Tensor, Tensor]:
    """The graph's ``(fwd, rev)`` after shape checks that need no device sync."""
    for what, mapping in (("scores", scores), ("pos_masks", pos_masks), ("pair_index", pair_index)):
        if graph not in mapping:
            raise KeyError(f"{what} has no entry for graph {graph!r} (its alpha > 0); has {sorted(mapping)}")
    fwd, rev = scores[graph]
    mask, index = pos_masks[graph], pair_index[graph]
    n_skills, n_texts = fwd.shape
    if rev.shape != (n_texts, n_skills):
        raise ValueError(f"graph {graph}: rev scores {tuple(rev.shape)} should be {(n_texts, n_skills)}")
    if mask.shape != fwd.shape or mask.dtype != torch.bool:
        raise ValueError(
            f"graph {graph}: pos_mask {tuple(mask.shape)} {mask.dtype} should be bool {tuple(fwd.shape)}"
        )
    if index.shape != (n_texts,) or index.dtype != torch.long:
        raise ValueError(
            f"graph {graph}: pair_index {tuple(index.shape)} {index.dtype} should be long ({n_texts},)"
        )
    return fwd, rev


def _logs(
    total: Tensor,
    terms: dict[str, dict[str, Tensor]],
    pos_masks: Mapping[str, Tensor],
    pair_index: Mapping[str, Tensor],
) -> dict[str, float]:
    """Float logs of every term, with one device sync for the values and the pairing check together."""
    names, values = [], []
    for graph, graph_terms in terms.items():
        for term, value in graph_terms.items():
            names.append(f"{graph}/{term}")
            values.append(value.detach().float())
        names.append(f"{graph}/total")
        values.append(sum(graph_terms.values()).detach().float())
    names.append("total")
    values.append(total.detach().float())
    paired = [_pairing_holds(pos_masks[g], pair_index[g]).float() for g in terms]
    numbers = torch.stack(values + paired).tolist()
    logs = dict(zip(names, numbers[: len(names)], strict=True))
    for graph, ok in zip(terms, numbers[len(names) :], strict=True):
        if not ok:
            raise ValueError(
                f"graph {graph}: pos_mask[pair_index[j], j] is False for some text j (bad batch)"
            )
    for name, value in logs.items():
        if not math.isfinite(value):
            graph, _, term = name.partition("/")
            where = f"graph {graph}, term {term}" if term else "the total"
            raise FloatingPointError(f"non-finite loss ({value}) in {where}; logs: {logs}")
    return logs


def _pairing_holds(pos_mask: Tensor, pair_index: Tensor) -> Tensor:
    columns = torch.arange(len(pair_index), device=pair_index.device)
    return pos_mask[pair_index, columns].all()
