"""Late-interaction scorers over padded token embeddings: mean, maxsim, softmax, softmax_ymean.

Every scorer is all-pairs: ``fn(q, y)`` takes :class:`TokenEmbeddings` ``q [Nq, Lq, H]`` and ``y [Ny, Ly, H]``
and returns ``[Nq, Ny]``. The row side ``q`` is the *query of the ranking* and ``y`` the target.

Padding. Padded tokens never contribute: every max / softmax over tokens sees ``-inf`` at padded positions
(explicit boolean masks, never a zero embedding), and every mean divides by the number of real tokens. A side
with no real token at all scores 0 instead of NaN (its mean-pooled vector is zero, and so is its cosine).

Query-length normalisation. ``mean`` and ``softmax_ymean`` are in [-1, 1] by construction (a cosine, or a
convex combination of cosines). ``maxsim`` and ``softmax`` sum a per-query-token cosine aggregate and divide
by the number of real query tokens, so every score lies in [-1, 1] and long queries are not favoured; for a
fixed query this is a constant factor, so rankings equal ColBERT's un-normalised sum.

Direction. At inference the ranking's query is always the row side: Skill2Job scores skill -> job with the
skill's tokens as ``q``; Job2Skill scores job -> skill with the job title's tokens as ``q``. ``maxsim`` and
``softmax`` are asymmetric (the softmax / max runs over the *target* tokens and the mean over the *query*
tokens), so the two directions differ. In training the reverse term ``L_{Q|Y}`` of the MTM loss uses the score
with the TEXT as query and the skill as target; :func:`~uwe_lightning.model.pairwise.pairwise_scores` with ``both_directions=True`` gives
it as ``rev [Ny, Nq]`` (``rev[j, i]`` = score of query ``y_j`` against target ``q_i``), computed from the same
token-similarity matrix ``S`` (its other axis), so it costs one more softmax / max, not another ``S``
(``mean`` is symmetric: ``rev = fwd.T``; ``softmax_ymean`` pools the skill instead: a cheap extra pass).

Scorers.
- ``mean``: cosine of the mean-pooled embeddings (sentence-transformers pooling over real tokens).
- ``maxsim``: ColBERT MaxSim on L2-normalised tokens: mean over query tokens of the max cosine over targets.
- ``softmax`` (the paper's two-sided soft late interaction, section 4): ``S = E_q E_y^T`` (raw),
  ``S_hat`` = cosine token similarities, ``A = row-softmax(S / tau)`` over target tokens,
  score = ``<A, S_hat>_F / n_query_tokens``. As ``tau -> 0``, ``A`` becomes the one-hot argmax of the raw
  ``S`` per query token, so the score tends to MaxSim whenever the raw and cosine argmax agree (e.g. target
  tokens of equal norm); the paper calls this "converging to MaxSim".
- ``softmax_ymean`` (ContextMatch-like, the paper's "SoftMax - y-mean"): the target is mean-pooled to one
  vector ``ybar`` and the softmax runs over the QUERY tokens: ``a_i = softmax_i(q_i . ybar / tau)``,
  score = ``sum_i a_i cos(q_i, ybar)``. A softmax over the single pooled target token would be the constant 1
  (tau would do nothing), yet the paper tunes tau for this variant, and ContextMatch weights the sentence's
  tokens; hence the softmax is over the query tokens. Its reverse direction (text as query) pools the skill.

Default temperatures: 0.1 for ``softmax`` and 0.5 for ``softmax_ymean``, the per-variant optima reported in
Appendix A "Late interaction ablation" (its grid-search list bolds 0.5 for the soft late interaction; the
per-variant sentence after Figure 4 is the more specific one).

Pooled sides. ``ScorerSpec.pool_query`` / ``pool_target`` say that a side only ever needs its mean-pooled
vector (``mean``: both; ``softmax_ymean``: target). A ranker may then cache that side as :func:`pooled` (a
``TokenEmbeddings`` of length 1); the scorer gives identical scores on it: the mean of one token is itself.

In-batch all-pairs scoring for training (chunked, checkpointed): :mod:`uwe_lightning.model.pairwise`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from uwe_lightning.model.encoder import TokenEmbeddings

_EPS = 1e-8

# A kernel scores raw tensors (q_emb, q_mask, y_emb, y_mask, both) and returns (fwd [Nq, Ny], rev_t or None),
# where rev_t [Nq, Ny] holds at [i, j] the score of query y_j against target q_i (the transpose of the reverse
# direction), so that chunking over the rows of q also chunks the reverse direction.
Kernel = Callable[..., tuple[Tensor, Tensor | None]]

# ----------------------------------------------------------------------------------------------------------
# Masked primitives
# ----------------------------------------------------------------------------------------------------------


def mean_pool(tokens: TokenEmbeddings) -> Tensor:
    """Mean of the real tokens of each row, ``[N, H]``; a row without real tokens gives the zero vector.

    >>> emb = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [99.0, 99.0]]])
    >>> mean_pool(TokenEmbeddings(emb, torch.tensor([[1, 1, 0]])))
    tensor([[2., 3.]])
    """
    mask = tokens.mask.unsqueeze(-1).to(tokens.embeddings.dtype)
    count = mask.sum(1).clamp_min(1.0)
    return (tokens.embeddings * mask).sum(1) / count


def pooled(tokens: TokenEmbeddings) -> TokenEmbeddings:
    """The mean-pooled side as a length-1 :class:`TokenEmbeddings` (what a ranker caches for it)."""
    return TokenEmbeddings(mean_pool(tokens).unsqueeze(1), tokens.mask.any(1, keepdim=True))


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over the last axis at ``mask``; 0 where the mask is all False."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


def _masked_softmax(logits: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Softmax over ``dim`` with ``-inf`` at masked positions.

    A slice with no unmasked position would be all ``-inf`` and give NaN (and NaN gradients); it gets finite
    logits instead, so its weights are meaningless but finite: the kernels zero such scores with
    :func:`_zero_empty` (cheaper than multiplying the 4-D weights by a mask, which autograd would keep).
    """
    logits = logits.masked_fill(~mask, float("-inf"))
    return torch.softmax(logits.masked_fill(~mask.any(dim, keepdim=True), 0.0), dim=dim)


def _zero_empty(scores: Tensor, row_mask: Tensor, col_mask: Tensor) -> Tensor:
    """Score 0 wherever the row or the column text has no real token."""
    return scores.masked_fill(~(row_mask.any(-1)[:, None] & col_mask.any(-1)[None, :]), 0.0)


def _masked_max(values: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Max over ``dim`` ignoring masked positions; 0 where nothing is unmasked."""
    best = values.masked_fill(~mask, float("-inf")).amax(dim)
    return best.masked_fill(~mask.any(dim), 0.0)


def _doc_example() -> tuple[TokenEmbeddings, TokenEmbeddings]:
    """The doctests' pair: query tokens ``e1, e2``; target tokens ``e1, (1, 1)`` and a padded ``(5, 5)``.

    Token dot products: e1.e1 = 1, e1.(1,1) = 1, e2.e1 = 0, e2.(1,1) = 1; cosines: 1, 1/sqrt2, 0, 1/sqrt2.
    The padded garbage token must change nothing.
    """
    q = TokenEmbeddings(torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]), torch.tensor([[True, True]]))
    y = TokenEmbeddings(
        torch.tensor([[[1.0, 0.0], [1.0, 1.0], [5.0, 5.0]]]), torch.tensor([[True, True, False]])
    )
    return q, y


def _score(name: str, tau: float | None = None, both: bool = False) -> list[float]:
    """Doctest helper: the example's score(s), rounded to 4 decimals."""
    q, y = _doc_example()
    spec = get_scorer(name, tau)
    fwd, rev_t = spec.kernel(q.embeddings, q.mask, y.embeddings, y.mask, both)
    out = (fwd, rev_t.T) if both else (fwd,)
    return [round(float(t), 4) for t in out]


# ----------------------------------------------------------------------------------------------------------
# Kernels (raw tensors; both directions from one similarity matrix)
# ----------------------------------------------------------------------------------------------------------


def _mean_kernel(qe: Tensor, qm: Tensor, ye: Tensor, ym: Tensor, both: bool) -> tuple[Tensor, Tensor | None]:
    """Cosine of the mean-pooled vectors; symmetric.

    Means (0.5, 0.5) and (1, 0.5): cos = 0.75 / (sqrt(0.5) * sqrt(1.25)) = 0.9487 (both directions).

    >>> _score("mean", both=True)
    [0.9487, 0.9487]
    """
    q_vec = F.normalize(mean_pool(TokenEmbeddings(qe, qm)), dim=-1, eps=_EPS)
    y_vec = F.normalize(mean_pool(TokenEmbeddings(ye, ym)), dim=-1, eps=_EPS)
    fwd = q_vec @ y_vec.T
    return fwd, (fwd if both else None)  # a cosine is symmetric


def _maxsim_kernel(
    qe: Tensor, qm: Tensor, ye: Tensor, ym: Tensor, both: bool
) -> tuple[Tensor, Tensor | None]:
    """Mean over query tokens of the max cosine over target tokens.

    Forward: (max(1, 1/sqrt2) + max(0, 1/sqrt2)) / 2 = 0.8536. Reverse (target tokens as query):
    (max(1, 0) + max(1/sqrt2, 1/sqrt2)) / 2 = 0.8536.

    >>> _score("maxsim", both=True)
    [0.8536, 0.8536]
    """
    cos = torch.einsum("ikh,jlh->ijkl", F.normalize(qe, dim=-1, eps=_EPS), F.normalize(ye, dim=-1, eps=_EPS))
    q_tok = qm[:, None, :]  # [Nq, 1, Lq]
    y_tok = ym[None, :, :]  # [1, Ny, Ly]
    fwd = _masked_mean(_masked_max(cos, y_tok[:, :, None, :], dim=-1), q_tok)
    if not both:
        return fwd, None
    rev_t = _masked_mean(_masked_max(cos, q_tok[..., None], dim=-2), y_tok)
    return fwd, rev_t


def _softmax_kernel(
    qe: Tensor, qm: Tensor, ye: Tensor, ym: Tensor, both: bool, tau: float
) -> tuple[Tensor, Tensor | None]:
    """``<softmax(S / tau), S_hat>_F / n_query_tokens``, softmax over the target tokens.

    tau = 1. Forward: query token e1 has S = (1, 1), A = (1/2, 1/2), sum A*S_hat = (1 + 1/sqrt2) / 2 = 0.8536;
    e2 has S = (0, 1), A = (0.2689, 0.7311), sum = 0.7311 / sqrt2 = 0.5170; mean 0.6853 (float32: 0.6852).
    Reverse: target token e1 as query has S = (1, 0), A = (0.7311, 0.2689), sum = 0.7311; (1, 1) has
    S = (1, 1), A = (1/2, 1/2), sum = 1/sqrt2; mean 0.7191.

    >>> _score("softmax", tau=1.0, both=True)
    [0.6852, 0.7191]
    """
    # Two einsums instead of S / (norm outer product): autograd then keeps only the [N, L, H] inputs, not a
    # 4-D denominator or a second 4-D copy of S.
    logits = torch.einsum("ikh,jlh->ijkl", qe, ye) / tau  # S / tau, [Nq, Ny, Lq, Ly]
    cos = torch.einsum("ikh,jlh->ijkl", F.normalize(qe, dim=-1, eps=_EPS), F.normalize(ye, dim=-1, eps=_EPS))
    q_tok = qm[:, None, :]
    y_tok = ym[None, :, :]
    attn = _masked_softmax(logits, y_tok[:, :, None, :], dim=-1)  # A: row-softmax over target tokens
    fwd = _zero_empty(_masked_mean((attn * cos).sum(-1), q_tok), qm, ym)  # <A, S_hat>_F / n_query_tokens
    if not both:
        return fwd, None
    attn_rev = _masked_softmax(logits, q_tok[..., None], dim=-2)  # the text's tokens are now the query
    rev_t = _zero_empty(_masked_mean((attn_rev * cos).sum(-2), y_tok), qm, ym)
    return fwd, rev_t


def _pooled_target_score(tok: Tensor, tok_mask: Tensor, target: Tensor, tau: float) -> Tensor:
    """ContextMatch: softmax over the query tokens of ``tok . target / tau``, weights times token cosines.

    ``tok [N, L, H]``, ``target [M, H]`` -> ``[N, M]``.
    """
    dots = torch.einsum("nlh,mh->nml", tok, target)
    cos = torch.einsum(
        "nlh,mh->nml", F.normalize(tok, dim=-1, eps=_EPS), F.normalize(target, dim=-1, eps=_EPS)
    )
    weights = _masked_softmax(dots / tau, tok_mask[:, None, :], dim=-1)
    # A row without query tokens has no real weights; a zero ``target`` (empty target) has zero cosines.
    return (weights * cos).sum(-1).masked_fill(~tok_mask.any(-1)[:, None], 0.0)


def _softmax_ymean_kernel(
    qe: Tensor, qm: Tensor, ye: Tensor, ym: Tensor, both: bool, tau: float
) -> tuple[Tensor, Tensor | None]:
    """ContextMatch: target mean-pooled to ``ybar``, softmax over the query tokens of ``q_i . ybar / tau``.

    tau = 1, ybar = (1, 0.5): dots (1, 0.5) -> a = (0.6225, 0.3775); cosines (0.8944, 0.4472);
    score 0.6225 * 0.8944 + 0.3775 * 0.4472 = 0.7256. Reverse: qbar = (0.5, 0.5), target tokens e1, (1, 1) as
    the query: dots (0.5, 1) -> a = (0.3775, 0.6225); cosines (0.7071, 1); score 0.8894.

    >>> _score("softmax_ymean", tau=1.0, both=True)
    [0.7256, 0.8894]
    """
    fwd = _pooled_target_score(qe, qm, mean_pool(TokenEmbeddings(ye, ym)), tau)
    if not both:
        return fwd, None
    rev_t = _pooled_target_score(ye, ym, mean_pool(TokenEmbeddings(qe, qm)), tau).T
    return fwd, rev_t


# ----------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------


def _forward_only(kernel: Kernel, q: TokenEmbeddings, y: TokenEmbeddings) -> Tensor:
    return kernel(q.embeddings, q.mask, y.embeddings, y.mask, False)[0]


@dataclass(frozen=True)
class ScorerSpec:
    """A scorer with its temperature bound.

    ``fn(q, y) -> [Nq, Ny]`` is the all-pairs score; ``kernel`` is the raw-tensor form that can also give the
    reverse direction (used by :func:`~uwe_lightning.model.pairwise.pairwise_scores`). ``pool_query`` / ``pool_target``: that side only ever
    needs its mean-pooled vector, so a ranker may cache it as :func:`pooled`.
    """

    name: str
    fn: Callable[[TokenEmbeddings, TokenEmbeddings], Tensor]
    pool_query: bool
    pool_target: bool
    tau: float | None
    kernel: Kernel


@dataclass(frozen=True)
class _ScorerDef:
    kernel: Callable[..., tuple[Tensor, Tensor | None]]
    pool_query: bool
    pool_target: bool
    default_tau: float | None


_DEFS: dict[str, _ScorerDef] = {
    "mean": _ScorerDef(_mean_kernel, pool_query=True, pool_target=True, default_tau=None),
    "maxsim": _ScorerDef(_maxsim_kernel, pool_query=False, pool_target=False, default_tau=None),
    "softmax": _ScorerDef(_softmax_kernel, pool_query=False, pool_target=False, default_tau=0.1),
    "softmax_ymean": _ScorerDef(_softmax_ymean_kernel, pool_query=False, pool_target=True, default_tau=0.5),
}


def _build(name: str, tau: float | None) -> ScorerSpec:
    spec = _DEFS[name]
    if spec.default_tau is None:
        if tau is not None:
            raise ValueError(f"scorer {name!r} has no temperature; got tau={tau} (leave scorer.tau null)")
        kernel = spec.kernel
    else:
        tau = spec.default_tau if tau is None else float(tau)
        if not (tau > 0 and math.isfinite(tau)):
            raise ValueError(f"scorer {name!r} needs a finite tau > 0, got {tau}")
        kernel = functools.partial(spec.kernel, tau=tau)
    fn = functools.partial(_forward_only, kernel)
    return ScorerSpec(name, fn, spec.pool_query, spec.pool_target, tau, kernel)


SCORERS: dict[str, ScorerSpec] = {name: _build(name, None) for name in _DEFS}
"""Every scorer with its default temperature; :func:`get_scorer` binds another one."""


def get_scorer(name: str, tau: float | None = None) -> ScorerSpec:
    """The scorer ``name`` with temperature ``tau`` (``None``: its default; mean/maxsim take no tau)."""
    if name not in _DEFS:
        raise KeyError(f"unknown scorer {name!r}; known: {', '.join(sorted(_DEFS))}")
    return SCORERS[name] if tau is None else _build(name, tau)
