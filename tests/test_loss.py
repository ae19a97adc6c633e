"""Losses of Table 4 against hand-computed values on tiny batches (expected numbers come from written-out
formulas with :mod:`math`, never from the code under test)."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers.tolerance import FP32_RTOL
from uwe_lightning.losses import LOSSES, PAPER_ALPHA, PAPER_TAU, LossConfig, build_loss

log, exp = math.log, math.exp


def _t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


# A graph "J" with 2 skills and 3 texts: text 0 = "nurse" sampled for skill 0, text 1 = "chef" sampled for
# skill 1, text 2 = "nurse" again, sampled for skill 1. Edges: nurse-skill0, nurse-skill1, chef-skill1, so
# both copies of "nurse" are positives of both skills.
DUP_FWD = _t([[2.0, 0.0, 2.0], [1.0, 1.0, 1.0]])  # [S=2, N=3], skill as query
DUP_REV = _t([[1.5, 0.5], [0.0, 1.0], [1.5, 0.5]])  # [N=3, S=2], text as query
DUP_POS = torch.tensor([[True, False, True], [True, True, True]])
DUP_PAIR = torch.tensor([0, 1, 1])
DUP_TAU = 0.5  # logits: fwd [[4, 0, 4], [2, 2, 2]], rev [[3, 1], [0, 2], [3, 1]]


def _dup_batch():
    return {"J": (DUP_FWD, DUP_REV)}, {"J": DUP_POS}, {"J": DUP_PAIR}


def test_mtm_hand_computed_with_duplicate_text_column() -> None:
    total, logs = build_loss("mtm", tau={"J": DUP_TAU}, alpha={"J": 1.0})(*_dup_batch())
    # L_{Y|Q}: skill 0 has positives {0, 2}, each -log(e^4 / (e^4 + e^0 + e^4)); skill 1 has all three,
    # each -log(1/3).
    row0 = (-log(exp(4) / (2 * exp(4) + 1)) - log(exp(4) / (2 * exp(4) + 1))) / 2
    row1 = log(3)
    y_given_q = (row0 + row1) / 2
    # L_{Q|Y}: "nurse" (both copies) has positives {skill 0, skill 1}; "chef" has {skill 1}.
    nurse = (-log(exp(3) / (exp(3) + exp(1))) - log(exp(1) / (exp(3) + exp(1)))) / 2
    chef = -log(exp(2) / (exp(0) + exp(2)))
    q_given_y = (nurse + chef + nurse) / 3
    assert logs["J/y_given_q"] == pytest.approx(y_given_q, rel=FP32_RTOL)
    assert logs["J/q_given_y"] == pytest.approx(q_given_y, rel=FP32_RTOL)
    assert logs["J/total"] == pytest.approx(y_given_q + q_given_y, rel=FP32_RTOL)
    assert float(total) == pytest.approx(y_given_q + q_given_y, rel=FP32_RTOL)
    assert logs["total"] == pytest.approx(float(total), rel=FP32_RTOL)


def test_mtm_pairwise_hand_computed_treats_other_positives_as_negatives() -> None:
    total, logs = build_loss("mtm_pairwise", tau={"J": DUP_TAU}, alpha={"J": 1.0})(*_dup_batch())
    # Pairs (skill 0, text 0), (skill 1, text 1), (skill 1, text 2); one target each.
    fwd = (-log(exp(4) / (2 * exp(4) + 1)) - log(1 / 3) - log(1 / 3)) / 3
    rev = (
        -log(exp(3) / (exp(3) + exp(1))) - log(exp(2) / (1 + exp(2))) - log(exp(1) / (exp(3) + exp(1)))
    ) / 3
    assert logs["J/y_given_q"] == pytest.approx(fwd, rel=FP32_RTOL)
    assert logs["J/q_given_y"] == pytest.approx(rev, rel=FP32_RTOL)
    assert float(total) == pytest.approx(fwd + rev, rel=FP32_RTOL)


def test_rows_without_positives_are_skipped() -> None:
    # 3 skills, 2 vacancy sentences, both sampled for skill 0; skill 1 and 2 have no edge in V.
    fwd = _t([[1.0, 0.0], [50.0, -50.0], [0.0, 0.0]])
    rev = _t([[1.0, 0.0, 0.0], [0.0, 2.0, 1.0]])
    pos = torch.tensor([[True, True], [False, False], [False, False]])
    pair = torch.tensor([0, 0])
    total, logs = build_loss("mtm", tau={"V": 1.0}, alpha={"V": 1.0})(
        {"V": (fwd, rev)}, {"V": pos}, {"V": pair}
    )
    y_given_q = (-log(exp(1) / (exp(1) + 1)) - log(1 / (exp(1) + 1))) / 2  # only skill 0's row
    q_given_y = (-log(exp(1) / (exp(1) + 2)) - log(1 / (1 + exp(2) + exp(1)))) / 2
    assert logs["V/y_given_q"] == pytest.approx(y_given_q, rel=FP32_RTOL)
    assert logs["V/q_given_y"] == pytest.approx(q_given_y, rel=FP32_RTOL)
    assert math.isfinite(float(total))


def test_infonce_uses_one_denominator_across_graphs() -> None:
    # 2 skills; J: one job title for skill 0; A: two alternatives, for skill 1 and for skill 0.
    scores = {
        "J": (_t([[2.0], [0.0]]), _t([[0.0, 0.0]])),
        "A": (_t([[1.0, 0.5], [0.0, 3.0]]), _t([[0.0, 0.0], [0.0, 0.0]])),
    }
    pos = {"J": torch.tensor([[True], [False]]), "A": torch.tensor([[False, True], [True, False]])}
    pair = {"J": torch.tensor([0]), "A": torch.tensor([1, 0])}
    loss = build_loss("infonce", tau=0.5, alpha={"J": 1.0, "A": 0.5})
    total, logs = loss(scores, pos, pair)
    # Concatenated columns [J0, A0, A1] at tau 0.5: skill 0 logits (4, 2, 1), skill 1 logits (0, 0, 6).
    z0, z1 = exp(4) + exp(2) + exp(1), exp(0) + exp(0) + exp(6)
    pair_j0 = -log(exp(4) / z0)  # (skill 0, J0)
    pair_a0 = -log(exp(0) / z1)  # (skill 1, A0)
    pair_a1 = -log(exp(1) / z0)  # (skill 0, A1)
    assert float(total) == pytest.approx((pair_j0 + pair_a0 + pair_a1) / 3, rel=FP32_RTOL)  # alpha does not weight
    assert logs["J/infonce"] == pytest.approx(pair_j0, rel=FP32_RTOL)
    assert logs["A/infonce"] == pytest.approx((pair_a0 + pair_a1) / 2, rel=FP32_RTOL)
    # Per-graph denominators would give a different number for J's pair: -log(e^4 / e^4) = 0.
    assert logs["J/infonce"] > 0.1


def test_infonce_ignores_reverse_scores() -> None:
    fwd = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    rev = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    total, _ = build_loss("infonce", tau=0.1, alpha={"J": 1.0})(
        {"J": (fwd, rev)}, {"J": torch.eye(2, dtype=torch.bool)}, {"J": torch.tensor([0, 1])}
    )
    total.backward()
    assert fwd.grad.abs().sum() > 0 and rev.grad is None


def test_infonce_rejects_per_graph_temperatures() -> None:
    with pytest.raises(ValueError, match="one temperature"):
        build_loss("infonce", tau=PAPER_TAU, alpha=PAPER_ALPHA)(*_random_batch(seed=0, diagonal=True))


def _random_batch(seed: int, diagonal: bool, n_skills: int = 3):
    """Random scores for graphs J, V, A; with ``diagonal`` the positives are exactly the pairing."""
    gen = torch.Generator().manual_seed(seed)
    scores, pos, pair = {}, {}, {}
    for graph, n_texts in (("J", 4), ("V", 3), ("A", 5)):
        index = torch.randint(0, n_skills, (n_texts,), generator=gen)
        mask = torch.zeros(n_skills, n_texts, dtype=torch.bool)
        mask[index, torch.arange(n_texts)] = True
        if not diagonal:
            mask |= torch.rand(n_skills, n_texts, generator=gen) < 0.4
        scores[graph] = (
            torch.randn(n_skills, n_texts, generator=gen),
            torch.randn(n_texts, n_skills, generator=gen),
        )
        pos[graph], pair[graph] = mask, index
    return scores, pos, pair


def test_mtm_equals_mtm_pairwise_when_positives_are_the_pairing() -> None:
    # Each skill appears at most once per graph here, so the multi-label sets reduce to the pairs.
    gen = torch.Generator().manual_seed(3)
    scores, pos, pair = {}, {}, {}
    for graph in ("J", "V", "A"):
        index = torch.randperm(4, generator=gen)[:3]  # 3 texts for 3 of the 4 skills; one skill has none
        scores[graph] = (torch.randn(4, 3, generator=gen), torch.randn(3, 4, generator=gen))
        pos[graph] = torch.zeros(4, 3, dtype=torch.bool)
        pos[graph][index, torch.arange(3)] = True
        pair[graph] = index
    mtm_total, mtm_logs = build_loss("mtm")(scores, pos, pair)
    pairwise_total, pairwise_logs = build_loss("mtm_pairwise")(scores, pos, pair)
    torch.testing.assert_close(mtm_total, pairwise_total)
    assert mtm_logs == pytest.approx(pairwise_logs)


def test_mtm_differs_from_pairwise_with_extra_positives() -> None:
    scores, pos, pair = _random_batch(seed=1, diagonal=False)
    assert float(build_loss("mtm")(scores, pos, pair)[0]) != pytest.approx(
        float(build_loss("mtm_pairwise")(scores, pos, pair)[0])
    )


def test_total_is_alpha_weighted_sum_of_graph_terms() -> None:
    scores, pos, pair = _random_batch(seed=2, diagonal=False)
    alpha = {"J": 1.0, "V": 0.5, "A": 0.25}
    for name in ("mtm", "mtm_pairwise"):
        total, logs = build_loss(name, tau=PAPER_TAU, alpha=alpha)(scores, pos, pair)
        expected = sum(alpha[g] * (logs[f"{g}/y_given_q"] + logs[f"{g}/q_given_y"]) for g in alpha)
        assert float(total) == pytest.approx(expected, rel=FP32_RTOL)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_weight_zero_graph_is_not_computed(name: str) -> None:
    scores, pos, pair = _random_batch(seed=4, diagonal=False)
    tau = {"J": 0.05, "V": 0.05, "A": 0.05}
    only_j = build_loss(name, tau=tau, alpha={"J": 1.0})(
        {"J": scores["J"]}, {"J": pos["J"]}, {"J": pair["J"]}
    )
    # NaN scores in V would raise if V were computed.
    scores["V"] = (torch.full_like(scores["V"][0], math.nan), torch.full_like(scores["V"][1], math.nan))
    total, logs = build_loss(name, tau=tau, alpha={"J": 1.0, "V": 0.0, "A": 0.0})(
        {"J": scores["J"], "V": scores["V"]}, pos, pair
    )
    assert float(total) == pytest.approx(float(only_j[0]))
    assert not any(key.startswith(("V/", "A/")) for key in logs)


def test_non_finite_loss_names_graph_and_term() -> None:
    scores, pos, pair = _random_batch(seed=5, diagonal=False)
    fwd, rev = scores["V"]
    fwd = fwd.clone()
    fwd[0, 0] = math.inf
    scores["V"] = (fwd, rev)
    with pytest.raises(FloatingPointError, match="graph V, term y_given_q"):
        build_loss("mtm")(scores, pos, pair)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_flow_to_both_directions(name: str) -> None:
    scores, pos, pair = _random_batch(seed=6, diagonal=False)
    leaves = {
        g: (f.clone().requires_grad_(True), r.clone().requires_grad_(True)) for g, (f, r) in scores.items()
    }
    tau = 0.1 if name == "infonce" else None
    total, _ = build_loss(name, tau=tau)(leaves, pos, pair)
    total.backward()
    for graph, (fwd, rev) in leaves.items():
        assert fwd.grad is not None and fwd.grad.abs().sum() > 0, graph
        if name != "infonce":
            assert rev.grad is not None and rev.grad.abs().sum() > 0, graph


def test_bfloat16_scores_give_float32_loss() -> None:
    scores, pos, pair = _random_batch(seed=7, diagonal=False)
    half = {g: (f.bfloat16(), r.bfloat16()) for g, (f, r) in scores.items()}
    total, _ = build_loss("mtm")(half, pos, pair)
    assert total.dtype == torch.float32
    assert float(total) == pytest.approx(float(build_loss("mtm")(scores, pos, pair)[0]), rel=0.05)


def test_bad_batches_and_configs_raise_clear_errors() -> None:
    scores, pos, pair = _random_batch(seed=8, diagonal=False)
    with pytest.raises(KeyError, match="known: infonce, mtm, mtm_pairwise"):
        build_loss("triplet")
    with pytest.raises(KeyError, match="pos_masks has no entry for graph 'A'"):
        build_loss("mtm")(scores, {"J": pos["J"], "V": pos["V"]}, pair)
    bad_pair = dict(pair)
    bad_pair["J"] = (pair["J"] + 1) % 3  # points at skills the mask may not link
    bad_pos = dict(pos)
    bad_pos["J"] = torch.zeros_like(pos["J"])
    bad_pos["J"][pair["J"], torch.arange(4)] = True
    with pytest.raises(ValueError, match="graph J: pos_mask\\[pair_index\\[j\\], j\\] is False"):
        build_loss("mtm")(scores, bad_pos, bad_pair)
    with pytest.raises(ValueError, match="graph V: rev scores"):
        build_loss("mtm")({**scores, "V": (scores["V"][0], scores["V"][1][:, :2])}, pos, pair)
    with pytest.raises(ValueError, match="loss.tau.J"):
        LossConfig(tau={"J": 0.0}, alpha={"J": 1.0})
    with pytest.raises(KeyError, match="no temperature for graph 'V'"):
        LossConfig(tau={"J": 0.1}, alpha={"J": 1.0, "V": 0.5})
    with pytest.raises(ValueError, match="every graph weight 0"):
        LossConfig(tau={"J": 0.1}, alpha={"J": 0.0})


def test_paper_defaults() -> None:
    config = LossConfig()
    assert config.tau == {"J": 0.05, "V": 0.02, "A": 0.02}
    assert config.alpha == {"J": 1.0, "V": 0.5, "A": 0.5}
    assert config.active_graphs == ("J", "V", "A")


@pytest.mark.parametrize("name", ["infonce", "mtm_pairwise", "mtm"])
def test_a_graph_without_texts_in_the_batch_is_skipped(name) -> None:
    """A step whose sampled skills have no neighbour in A: A contributes 0 and is logged as skipped."""
    scores, pos, pair = _random_batch(seed=3, diagonal=True)
    alpha = {"J": 1.0, "V": 0.5, "A": 0.5}
    tau = 0.05 if name == "infonce" else PAPER_TAU
    total, logs = build_loss(name, tau=tau, alpha=alpha)({g: scores[g] for g in ("J", "V")}, pos, pair)
    reference, _ = build_loss(name, tau=tau, alpha={"J": 1.0, "V": 0.5})(scores, pos, pair)
    assert logs["A/skipped"] == 1.0 and "J/skipped" not in logs
    assert torch.equal(total, reference)
    with pytest.raises(ValueError, match="no active graph"):
        build_loss(name, tau=tau, alpha=alpha)({}, pos, pair)
