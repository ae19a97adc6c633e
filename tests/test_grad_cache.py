"""GradCache and backbone checkpointing change memory, not gradients (tiny BERT / tiny MPNet, CPU, fp32).

GradCache with dropout ON must equal encoding the same mini-batches with gradients kept (the RNG replay makes
the second pass draw the first pass's dropout masks; without the replay the test fails, checked below); with
dropout off it equals the plain one-pass encoding of the whole batch. Every scorer and loss.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.helpers.distributed import Case, make_dataset, make_module
from tests.helpers.memory import saved_tensor_bytes
from tests.helpers.tolerance import FP32_RTOL, assert_close_to_scale, mismatched_tensors
from uwe_lightning.model.encoder import TokenEmbeddings
from uwe_lightning.model.grad_cache import cached_encode, plan_chunks
from uwe_lightning.training.module import seed_step

STEP = 0


def loss_and_grads(module, batch) -> tuple[float, dict[str, torch.Tensor]]:
    module.zero_grad(set_to_none=True)
    seed_step(0, batch.step)
    scores, pos_masks, pair_index = module.graph_scores(batch)
    loss = module.loss_fn(scores, pos_masks, pair_index)[0]
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def chunked_with_grad(module, size: int, unit: str):
    """The reference: the same mini-batches, in the same order, encoded with gradients kept."""

    def encode_groups(groups):
        out = []
        chunks = plan_chunks([g["attention_mask"] for g in groups], size, unit)
        for i, g in enumerate(groups):
            ids, mask = g["input_ids"], g["attention_mask"]
            parts = []
            for c in (c for c in chunks if c.group == i):
                emb = module.encoder(ids[c.start : c.stop, c.first : c.last], mask[c.start : c.stop, c.first : c.last])
                parts.append(F.pad(emb.embeddings, (0, 0, c.first, ids.shape[1] - c.last)))
            full = torch.cat(parts) if parts else torch.zeros((*ids.shape, module.encoder.hidden_size))
            out.append(TokenEmbeddings(full, mask).trimmed())
        return out

    return encode_groups


def assert_same_grads(got: dict, want: dict) -> None:
    """Every gradient on its own scale: GradCache and checkpointing reorder float32 sums (tests.helpers.tolerance)."""
    assert got.keys() == want.keys()
    assert mismatched_tensors(got, want) == {}


@pytest.fixture(scope="module")
def batch(tiny_model_dir):
    return make_dataset(tiny_model_dir).batch(STEP)


CACHED = [("mtm", s, 2, "texts") for s in ("mean", "maxsim", "softmax", "softmax_ymean")]
CACHED += [(loss, "softmax", 30, "tokens") for loss in ("infonce", "mtm_pairwise", "mtm")]


@pytest.mark.parametrize(("loss", "scorer", "size", "unit"), CACHED, ids=["-".join(map(str, c)) for c in CACHED])
def test_grad_cache_with_dropout_equals_the_same_mini_batches_with_grad(tiny_model_dir, batch, loss, scorer, size,
                                                                        unit):
    cached = make_module(tiny_model_dir, Case(loss, scorer, STEP, grad_cache=size, dropout=True))
    cached.hparams.grad_cache_unit = unit
    reference = make_module(tiny_model_dir, Case(loss, scorer, STEP, dropout=True))
    reference.encode_groups = chunked_with_grad(reference, size, unit)
    got_loss, got = loss_and_grads(cached, batch)
    want_loss, want = loss_and_grads(reference, batch)
    assert got_loss == pytest.approx(want_loss, rel=FP32_RTOL)
    assert_same_grads(got, want)
    plain = make_module(tiny_model_dir, Case(loss, scorer, STEP, dropout=True))
    _, other = loss_and_grads(plain, batch)  # dropout is on: one pass over the whole batch draws other masks
    assert max((other[n] - want[n]).abs().max() for n in want) > 1e-4


def test_without_rng_replay_the_gradients_differ(tiny_model_dir, batch, monkeypatch):
    """The replay is what makes the test above pass: restoring no RNG state gives other dropout masks."""
    cached = make_module(tiny_model_dir, Case("mtm", "softmax", STEP, grad_cache=2, dropout=True))
    reference = make_module(tiny_model_dir, Case("mtm", "softmax", STEP, dropout=True))
    reference.encode_groups = chunked_with_grad(reference, 2, "texts")
    _, want = loss_and_grads(reference, batch)
    monkeypatch.setattr(torch, "set_rng_state", lambda state: None)
    _, got = loss_and_grads(cached, batch)
    assert max((got[n] - want[n]).abs().max() for n in want) > 1e-4


@pytest.mark.parametrize("unit", ["texts", "tokens"])
def test_grad_cache_without_dropout_equals_one_pass(tiny_model_dir, batch, unit):
    size = 2 if unit == "texts" else 25
    cached = make_module(tiny_model_dir, Case("mtm", "softmax", STEP, grad_cache=size))
    cached.hparams.grad_cache_unit = unit
    plain = make_module(tiny_model_dir, Case("mtm", "softmax", STEP))
    got_loss, got = loss_and_grads(cached, batch)
    want_loss, want = loss_and_grads(plain, batch)
    assert got_loss == pytest.approx(want_loss, rel=FP32_RTOL)
    assert_same_grads(got, want)


def test_token_mini_batches_respect_the_budget(batch):
    masks = [batch.skill_inputs["attention_mask"], *(g.text_inputs["attention_mask"] for g in batch.graphs.values())]
    for budget in (1, 10, 25, 60):
        chunks = plan_chunks(masks, budget, "tokens")
        for c in chunks:
            assert (c.stop - c.start) == 1 or (c.stop - c.start) * (c.last - c.first) <= budget
        for group, mask in enumerate(masks):  # every row once, in order; no real token cut off
            rows = [c for c in chunks if c.group == group]
            assert [r.start for r in rows] == [0] + [r.stop for r in rows[:-1]] and rows[-1].stop == len(mask)
            for c in rows:
                assert not mask[c.start : c.stop, : c.first].any() and not mask[c.start : c.stop, c.last :].any()
    with pytest.raises(ValueError, match="unit must be one of"):
        plan_chunks(masks, 4, "words")


def test_cached_encode_without_grad_is_plain_encoding(tiny_model_dir, batch):
    module = make_module(tiny_model_dir, Case("mtm", "mean", STEP)).eval()
    inputs = [(batch.skill_inputs["input_ids"], batch.skill_inputs["attention_mask"])]
    with torch.no_grad():
        got = cached_encode(lambda i, m: module.encoder(i, m).embeddings, list(module.parameters()), inputs,
                            module.encoder.hidden_size, 2)[0]
        want = module.encoder(*inputs[0]).trimmed()
    assert torch.equal(got.mask, want.mask)  # real tokens equal; padding (which no scorer reads) is zero here
    assert_close_to_scale(got.embeddings[got.mask], want.embeddings[want.mask])


# ----------------------------------------------------------------------------------------------------------
# Backbone (activation) checkpointing
# ----------------------------------------------------------------------------------------------------------


def saved_activation_bytes(module, batch) -> int:
    return saved_tensor_bytes(module, lambda: module.encode_inputs(batch.graphs["J"].text_inputs))


def tiny_mpnet_module(tiny_model_dir, checkpointing: bool):
    """A 2-layer MPNet (no transformers gradient checkpointing: our per-layer fallback) behind the tiny vocab."""
    from transformers import MPNetConfig, MPNetModel

    module = make_module(tiny_model_dir, Case("mtm", "softmax", STEP, dropout=True))
    torch.manual_seed(0)
    config = MPNetConfig(vocab_size=module.encoder.tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=130, pad_token_id=0)
    module.model.encoder.backbone = MPNetModel(config).train()
    if checkpointing:
        assert module.encoder.enable_gradient_checkpointing() == "layers"
    return module


@pytest.mark.parametrize("backbone", ["bert", "mpnet"])
def test_backbone_checkpointing_keeps_gradients_and_drops_activations(tiny_model_dir, batch, backbone):
    if backbone == "bert":
        plain = make_module(tiny_model_dir, Case("mtm", "softmax", STEP, dropout=True))
        ckpt = make_module(tiny_model_dir, Case("mtm", "softmax", STEP, dropout=True, backbone_checkpointing=True))
        backbone = ckpt.encoder.backbone  # transformers' own checkpointing (renamed "activation" in 5.2x)
        renamed = hasattr(type(backbone), "is_activation_checkpointing")
        assert getattr(backbone, "is_activation_checkpointing" if renamed else "is_gradient_checkpointing")
    else:
        plain, ckpt = tiny_mpnet_module(tiny_model_dir, False), tiny_mpnet_module(tiny_model_dir, True)
    assert plain.state_dict().keys() == ckpt.state_dict().keys()
    got_loss, got = loss_and_grads(ckpt, batch)  # dropout on: the recomputation replays the RNG
    want_loss, want = loss_and_grads(plain, batch)
    assert got_loss == pytest.approx(want_loss, rel=FP32_RTOL)
    assert_same_grads(got, want)
    assert saved_activation_bytes(ckpt, batch) < 0.6 * saved_activation_bytes(plain, batch)
    ckpt.eval()  # inference is the plain forward
    with torch.no_grad():
        torch.testing.assert_close(ckpt.encode_inputs(batch.skill_inputs).embeddings,
                                   plain.eval().encode_inputs(batch.skill_inputs).embeddings)


def test_a_backbone_without_layers_to_checkpoint_is_named(tiny_model_dir):
    module = make_module(tiny_model_dir, Case("mtm", "mean", STEP))
    module.model.encoder.backbone = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="Sequential has no list of layers"):
        module.encoder.enable_gradient_checkpointing()


# ----------------------------------------------------------------------------------------------------------
# Through a training run: same weights as without GradCache, and resume still exact
# ----------------------------------------------------------------------------------------------------------


def final_state(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def test_grad_cache_run_trains_like_the_plain_run(tmp_path, tiny_model_dir):
    """One mini-batch per group draws the same dropout masks as the plain path, so the runs agree (dropout on)."""
    from tests.helpers.configs import make_cfg
    from uwe_lightning.training.run import train

    common = ("logger=none", "validation.tasks=[]", "test.tasks=[]", "export.select=last", "optim.eps=1e-3")
    train(make_cfg(tmp_path / "plain", tiny_model_dir, *common, steps=3))
    train(make_cfg(tmp_path / "cached", tiny_model_dir, *common, "train.grad_cache=true",
                   "train.grad_cache_size=1000", steps=3))
    plain, cached = final_state(tmp_path / "plain"), final_state(tmp_path / "cached")
    from transformers import AutoModel

    start = {f"model.encoder.backbone.{n}": v for n, v in AutoModel.from_pretrained(str(tiny_model_dir)).state_dict().items()}
    assert any(not torch.equal(plain[n], start[n]) for n in start if n in plain)  # the runs did train
    assert mismatched_tensors(cached, plain) == {}  # key biases: trained from 0 by float noise (noise floor)


def test_grad_cache_and_checkpointing_runs_resume_exactly(tmp_path, tiny_model_dir):
    from tests.helpers.configs import make_cfg
    from tests.helpers.faults import Killed
    from tests.test_faults_training import weights_sha256
    from uwe_lightning.training.run import train

    options = ("logger=none", "train.grad_cache=true", "train.grad_cache_size=3", "train.grad_cache_unit=texts",
               "train.backbone_checkpointing=true", "test.tasks=[]")
    train(make_cfg(tmp_path / "whole", tiny_model_dir, *options, steps=4, every=2))
    fault = ["+callbacks.fault._target_=tests.helpers.faults.KillAt", "+callbacks.fault.step=3"]
    with pytest.raises(Killed):
        train(make_cfg(tmp_path / "killed", tiny_model_dir, *options, *fault, steps=4, every=2))
    summary = train(make_cfg(tmp_path / "killed", tiny_model_dir, *options, "resume=true", steps=4, every=2))
    assert summary["final_step"] == 4
    assert weights_sha256(tmp_path / "killed") == weights_sha256(tmp_path / "whole")
