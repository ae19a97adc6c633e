"""Scorers: masks, per-pair reference formulas, directions, chunking / checkpointing, pooled sides, memory."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from uwe_lightning.model.encoder import TokenEmbeddings
from uwe_lightning.model.pairwise import SAVED_4D_TENSORS, estimate_peak_bytes, pairwise_scores
from uwe_lightning.model.scoring import SCORERS, get_scorer, mean_pool, pooled

NAMES = sorted(SCORERS)
TAU = {"softmax": 0.3, "softmax_ymean": 0.7}


def _scorer(name: str):
    return get_scorer(name, TAU.get(name))


def _random_tokens(n: int, length: int, h: int, seed: int, min_len: int = 1) -> TokenEmbeddings:
    """Random float64 tokens with ragged lengths; padded slots hold large garbage that must never matter."""
    gen = torch.Generator().manual_seed(seed)
    emb = torch.randn(n, length, h, generator=gen, dtype=torch.float64)
    lengths = torch.randint(min_len, length + 1, (n,), generator=gen)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    emb = torch.where(
        mask[..., None], emb, 50.0 * torch.randn(n, length, h, generator=gen, dtype=torch.float64)
    )
    return TokenEmbeddings(emb, mask)


def _real(te: TokenEmbeddings, i: int) -> torch.Tensor:
    return te.embeddings[i][te.mask[i]]


# ---- per-pair reference formulas on the real tokens only (loops, no masks) ---------------------------------


def _ref_mean(q: torch.Tensor, y: torch.Tensor, tau: float | None) -> float:
    return float(F.cosine_similarity(q.mean(0), y.mean(0), dim=0))


def _ref_maxsim(q: torch.Tensor, y: torch.Tensor, tau: float | None) -> float:
    per_token = [max(float(F.cosine_similarity(qi, yj, dim=0)) for yj in y) for qi in q]
    return sum(per_token) / len(per_token)


def _ref_softmax(q: torch.Tensor, y: torch.Tensor, tau: float | None) -> float:
    total = 0.0
    for qi in q:
        weights = [math.exp(float(qi @ yj) / tau) for yj in y]
        z = sum(weights)
        total += sum(
            w / z * float(F.cosine_similarity(qi, yj, dim=0)) for w, yj in zip(weights, y, strict=True)
        )
    return total / len(q)


def _ref_softmax_ymean(q: torch.Tensor, y: torch.Tensor, tau: float | None) -> float:
    ybar = y.mean(0)
    weights = [math.exp(float(qi @ ybar) / tau) for qi in q]
    z = sum(weights)
    return sum(w / z * float(F.cosine_similarity(qi, ybar, dim=0)) for w, qi in zip(weights, q, strict=True))


REFERENCES = {
    "mean": _ref_mean,
    "maxsim": _ref_maxsim,
    "softmax": _ref_softmax,
    "softmax_ymean": _ref_softmax_ymean,
}


@pytest.mark.parametrize("name", NAMES)
def test_matches_per_pair_reference_both_directions(name: str) -> None:
    q = _random_tokens(3, 5, 4, seed=1)
    y = _random_tokens(4, 6, 4, seed=2)
    # Small magnitudes keep exp(dot / tau) in range for the naive reference.
    q, y = TokenEmbeddings(q.embeddings * 0.3, q.mask), TokenEmbeddings(y.embeddings * 0.3, y.mask)
    fwd, rev = pairwise_scores(q, y, _scorer(name), both_directions=True)
    ref = REFERENCES[name]
    tau = TAU.get(name)
    expected_fwd = [[ref(_real(q, i), _real(y, j), tau) for j in range(len(y))] for i in range(len(q))]
    expected_rev = [[ref(_real(y, j), _real(q, i), tau) for i in range(len(q))] for j in range(len(y))]
    assert fwd.shape == (3, 4) and rev.shape == (4, 3)
    torch.testing.assert_close(fwd, torch.tensor(expected_fwd, dtype=torch.float64))
    torch.testing.assert_close(rev, torch.tensor(expected_rev, dtype=torch.float64))


@pytest.mark.parametrize("name", NAMES)
def test_reverse_equals_swapped_roles(name: str) -> None:
    q = _random_tokens(5, 4, 8, seed=3)
    y = _random_tokens(3, 7, 8, seed=4)
    scorer = _scorer(name)
    _, rev = pairwise_scores(q, y, scorer, both_directions=True)
    torch.testing.assert_close(rev, pairwise_scores(y, q, scorer))
    torch.testing.assert_close(scorer.fn(y, q), rev)


def test_token_scorers_are_asymmetric() -> None:
    """Guards against a reverse direction that is just ``fwd.T`` for the token-level scorers."""
    q = _random_tokens(4, 5, 8, seed=5)
    y = _random_tokens(4, 6, 8, seed=6)
    for name in ("maxsim", "softmax", "softmax_ymean"):
        fwd, rev = pairwise_scores(q, y, _scorer(name), both_directions=True)
        assert not torch.allclose(fwd, rev.T), name


@pytest.mark.parametrize("name", NAMES)
def test_padding_changes_nothing(name: str) -> None:
    q = _random_tokens(3, 4, 6, seed=7)
    y = _random_tokens(5, 5, 6, seed=8)

    def with_garbage(te: TokenEmbeddings, extra: int) -> TokenEmbeddings:
        garbage = 100.0 * torch.randn(len(te), extra, te.embeddings.shape[-1], dtype=torch.float64)
        return TokenEmbeddings(
            torch.cat([te.embeddings, garbage], 1),
            torch.cat([te.mask, torch.zeros(len(te), extra, dtype=bool)], 1),
        )

    scorer = _scorer(name)
    fwd, rev = pairwise_scores(q, y, scorer, both_directions=True)
    fwd2, rev2 = pairwise_scores(with_garbage(q, 3), with_garbage(y, 2), scorer, both_directions=True)
    torch.testing.assert_close(fwd2, fwd, rtol=0, atol=1e-12)
    torch.testing.assert_close(rev2, rev, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_scores_in_unit_interval(name: str) -> None:
    q = _random_tokens(6, 5, 8, seed=9)
    y = _random_tokens(7, 5, 8, seed=10)
    fwd, rev = pairwise_scores(q, y, _scorer(name), both_directions=True)
    for s in (fwd, rev):
        assert s.abs().max() <= 1 + 1e-9


def test_softmax_converges_to_maxsim_as_tau_goes_to_zero() -> None:
    # Unit-norm tokens: the raw and the cosine argmax coincide, so A -> one-hot of the MaxSim choice.
    q = _random_tokens(4, 5, 8, seed=11)
    y = _random_tokens(5, 6, 8, seed=12)
    q = TokenEmbeddings(F.normalize(q.embeddings, dim=-1), q.mask)
    y = TokenEmbeddings(F.normalize(y.embeddings, dim=-1), y.mask)
    maxsim = pairwise_scores(q, y, get_scorer("maxsim"), both_directions=True)
    gaps = []
    for tau in (1.0, 0.1, 0.01, 1e-4):
        soft = pairwise_scores(q, y, get_scorer("softmax", tau), both_directions=True)
        gaps.append(max(float((s - m).abs().max()) for s, m in zip(soft, maxsim, strict=True)))
    assert gaps[0] > 1e-2  # the limit is not trivially reached
    assert gaps[-1] < 1e-6
    assert gaps == sorted(gaps, reverse=True)


def _grads(name: str, chunk_size: int | None, checkpoint: bool, both: bool):
    q = _random_tokens(7, 5, 6, seed=13)
    y = _random_tokens(4, 6, 6, seed=14)
    qe = q.embeddings.clone().requires_grad_(True)
    ye = y.embeddings.clone().requires_grad_(True)
    out = pairwise_scores(
        TokenEmbeddings(qe, q.mask),
        TokenEmbeddings(ye, y.mask),
        _scorer(name),
        chunk_size=chunk_size,
        checkpoint=checkpoint,
        both_directions=both,
    )
    outs = out if both else (out,)
    # Position-dependent weights so that a permuted or mis-assembled chunk changes the gradient.
    loss = sum((o * torch.arange(o.numel(), dtype=o.dtype).reshape(o.shape).sin()).sum() for o in outs)
    loss.backward()
    return [o.detach() for o in outs], qe.grad, ye.grad


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("both", [False, True])
def test_chunked_and_checkpointed_equal_unchunked(name: str, both: bool) -> None:
    ref_out, ref_gq, ref_gy = _grads(name, None, False, both)
    assert ref_gq.abs().sum() > 0 and ref_gy.abs().sum() > 0
    for chunk_size, checkpoint in ((3, False), (3, True), (1, True), (100, True)):
        out, gq, gy = _grads(name, chunk_size, checkpoint, both)
        for a, b in zip(out, ref_out, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        torch.testing.assert_close(gq, ref_gq, rtol=0, atol=1e-12)
        torch.testing.assert_close(gy, ref_gy, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", [n for n in NAMES if SCORERS[n].pool_query or SCORERS[n].pool_target])
def test_pooled_side_gives_identical_scores(name: str) -> None:
    scorer = _scorer(name)
    q = _random_tokens(4, 5, 8, seed=15)
    y = _random_tokens(6, 7, 8, seed=16)
    full = scorer.fn(q, y)
    q_side = pooled(q) if scorer.pool_query else q
    y_side = pooled(y) if scorer.pool_target else y
    assert y_side.embeddings.shape[1] == 1
    torch.testing.assert_close(scorer.fn(q_side, y_side), full, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        pairwise_scores(q_side, y_side, scorer, chunk_size=2), full, rtol=0, atol=1e-12
    )


def test_pool_flags() -> None:
    flags = {n: (s.pool_query, s.pool_target) for n, s in SCORERS.items()}
    assert flags == {
        "mean": (True, True),
        "maxsim": (False, False),
        "softmax": (False, False),
        "softmax_ymean": (False, True),
    }


def test_mean_pool_ignores_padding_and_empty_rows() -> None:
    te = TokenEmbeddings(
        torch.tensor([[[1.0, 3.0], [3.0, 5.0]], [[7.0, 7.0], [9.0, 9.0]]]), torch.tensor([[1, 1], [0, 0]])
    )
    torch.testing.assert_close(mean_pool(te), torch.tensor([[2.0, 4.0], [0.0, 0.0]]))
    assert pooled(te).mask.tolist() == [[True], [False]]


@pytest.mark.parametrize("name", NAMES)
def test_fully_padded_rows_score_zero_without_nan(name: str) -> None:
    q = _random_tokens(3, 4, 6, seed=17)
    y = _random_tokens(3, 5, 6, seed=18)
    q.mask[1] = False
    y.mask[2] = False
    qe = q.embeddings.clone().requires_grad_(True)
    ye = y.embeddings.clone().requires_grad_(True)
    fwd, rev = pairwise_scores(
        TokenEmbeddings(qe, q.mask),
        TokenEmbeddings(ye, y.mask),
        _scorer(name),
        chunk_size=2,
        both_directions=True,
    )
    assert torch.isfinite(fwd).all() and torch.isfinite(rev).all()
    assert fwd[1].abs().max() == 0 and fwd[:, 2].abs().max() == 0
    assert rev[:, 1].abs().max() == 0 and rev[2].abs().max() == 0
    assert fwd[0, 0] != 0
    (fwd.sum() + rev.sum()).backward()
    assert torch.isfinite(qe.grad).all() and torch.isfinite(ye.grad).all()
    assert qe.grad[1].abs().max() == 0 and ye.grad[2].abs().max() == 0


def test_empty_query_batch() -> None:
    y = _random_tokens(3, 4, 6, seed=19)
    q = TokenEmbeddings(torch.zeros(0, 4, 6, dtype=torch.float64), torch.zeros(0, 4, dtype=torch.bool))
    fwd, rev = pairwise_scores(q, y, get_scorer("softmax"), chunk_size=2, both_directions=True)
    assert fwd.shape == (0, 3) and rev.shape == (3, 0)


def test_registry_errors_and_defaults() -> None:
    with pytest.raises(KeyError, match="known: maxsim, mean, softmax, softmax_ymean"):
        get_scorer("colbert")
    with pytest.raises(ValueError, match="no temperature"):
        get_scorer("maxsim", tau=0.1)
    with pytest.raises(ValueError, match="tau > 0"):
        get_scorer("softmax", tau=0.0)
    assert get_scorer("softmax").tau == 0.1
    assert get_scorer("softmax_ymean").tau == 0.5
    assert get_scorer("softmax", tau=0.05).tau == 0.05
    assert get_scorer("mean").tau is None
    with pytest.raises(ValueError, match="hidden sizes differ"):
        pairwise_scores(_random_tokens(2, 3, 4, 0), _random_tokens(2, 3, 5, 0), get_scorer("mean"))


def test_tau_changes_softmax_scores() -> None:
    q = _random_tokens(3, 5, 8, seed=20)
    y = _random_tokens(3, 5, 8, seed=21)
    for name in ("softmax", "softmax_ymean"):
        a = get_scorer(name, 0.2).fn(q, y)
        b = get_scorer(name, 2.0).fn(q, y)
        assert (a - b).abs().max() > 1e-3, name


def _saved_4d_tensors(name: str, checkpoint: bool) -> float:
    """Bytes of distinct [Nq, Ny, Lq, Ly]-sized tensors autograd keeps, in units of one such fp32 tensor."""
    nq, ny, lq, ly = 4, 4, 8, 8
    qe = torch.randn(nq, lq, 16, requires_grad=True)
    ye = torch.randn(ny, ly, 16, requires_grad=True)
    mask = torch.ones(nq, lq, dtype=torch.bool)
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 4 and t.numel() >= nq * ny * lq * ly // 4:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        pairwise_scores(
            TokenEmbeddings(qe, mask),
            TokenEmbeddings(ye, mask),
            get_scorer(name),
            chunk_size=2,
            checkpoint=checkpoint,
            both_directions=True,
        )
    return sum(saved.values()) / (nq * ny * lq * ly * 4)


def test_memory_kept_for_backward() -> None:
    assert _saved_4d_tensors("softmax", checkpoint=False) == SAVED_4D_TENSORS
    assert _saved_4d_tensors("maxsim", checkpoint=False) == 2
    for name in NAMES:
        assert _saved_4d_tensors(name, checkpoint=True) == 0, name


def test_estimate_peak_bytes_scales_with_chunk() -> None:
    full = estimate_peak_bytes(512, 512, 64, 64, 768, None, 2, checkpoint=False)
    ckpt = estimate_peak_bytes(512, 512, 64, 64, 768, 64, 2, checkpoint=True)
    assert ckpt < full / 5
    # One chunk of everything: checkpointing saves nothing at the peak.
    assert estimate_peak_bytes(512, 512, 64, 64, 768, 512, 2, checkpoint=True) == full


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_autocast_is_close_and_finite(name: str) -> None:
    q = _random_tokens(3, 5, 16, seed=22)
    y = _random_tokens(4, 6, 16, seed=23)
    q32 = TokenEmbeddings(q.embeddings.float(), q.mask)
    y32 = TokenEmbeddings(y.embeddings.float(), y.mask)
    scorer = _scorer(name)
    ref = pairwise_scores(q32, y32, scorer, both_directions=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = pairwise_scores(q32, y32, scorer, chunk_size=2, both_directions=True)
    for a, b in zip(low, ref, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a.float(), b, rtol=0, atol=0.05)
