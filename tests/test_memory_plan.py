"""The memory planner: its per-layer constants against the tensors a backbone really keeps, its arithmetic, its CLI."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tests.helpers.memory import saved_tensor_bytes
from uwe_lightning.efficiency.memory import (
    GIB,
    BackboneShape,
    StepShape,
    attention_maps,
    encoder_pass_bytes,
    largest_grad_cache,
    plan,
)


def kept_bytes(model: torch.nn.Module, texts: int, length: int) -> int:
    """Bytes of the (distinct, non-parameter) tensors autograd keeps for backward of one training forward."""
    ids = torch.randint(5, 60, (texts, length))
    return saved_tensor_bytes(model, lambda: model.train()(input_ids=ids, attention_mask=torch.ones_like(ids)))


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return BackboneShape.from_pretrained(str(tiny_model_dir))


def test_backbone_shape_reads_the_config(tiny, tiny_model_dir):
    from transformers import AutoModel

    assert (tiny.hidden, tiny.layers, tiny.heads, tiny.intermediate) == (32, 2, 2, 64)
    assert tiny.params == sum(p.numel() for p in AutoModel.from_pretrained(str(tiny_model_dir)).parameters())


@pytest.mark.parametrize(("texts", "length"), [(3, 16), (2, 40), (6, 8)])
def test_activation_constants_match_what_bert_keeps(tiny_model_dir, tiny, texts, length):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(tiny_model_dir))
    maps = attention_maps(tiny, "cpu")
    assert maps == 3  # CPU SDPA with dropout materialises the attention
    kept, _ = encoder_pass_bytes(tiny, texts, length, 4, maps, checkpointing=False)
    assert kept == pytest.approx(kept_bytes(model, texts, length), rel=0.03)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    kept_ckpt, _ = encoder_pass_bytes(tiny, texts, length, 4, maps, checkpointing=True)
    assert kept_ckpt == pytest.approx(kept_bytes(model, texts, length), rel=0.1)


def test_grad_cache_and_checkpointing_lower_the_peak_and_ddp_splits_the_encoder(tiny):
    step = StepShape(skills=64, texts_per_graph=(64, 64, 64), max_length=32, device="cpu")
    plain = plan(tiny, step)
    static = plain["weights"] + plain["adamw_states"] + plain["autocast_weights"] + plain["ddp_buckets"]
    assert plain["peak"] == static + max(plain["while_scoring"], plain["while_encoder_backward"])
    assert plain["while_encoder_backward"] == (plain["encoder_activations"] + plain["backward_working"]
                                               + plain["gradients"])
    peaks = [plan(tiny, replace(step, grad_cache=n))["peak"] for n in (64, 16, 4, 1)]
    assert peaks == sorted(peaks, reverse=True) and peaks[0] < plain["peak"]
    assert plan(tiny, replace(step, backbone_checkpointing=True))["encoder_activations"] < plain["encoder_activations"]
    ddp = plan(tiny, replace(step, world=4))
    assert ddp["encoder_activations"] == pytest.approx(plain["encoder_activations"] / 4, rel=0.01)
    assert ddp["gathered_texts"] > 0 and ddp["ddp_buckets"] == 4 * tiny.params
    assert ddp["scoring"] < plain["scoring"]  # each rank scores its own skill rows


def test_largest_grad_cache_fits_and_one_more_does_not(tiny):
    step = StepShape(skills=64, texts_per_graph=(64, 64, 64), max_length=32, device="cpu")
    budget = plan(tiny, replace(step, grad_cache=10))["peak"]
    best = largest_grad_cache(tiny, step, budget)
    assert best >= 10 and plan(tiny, replace(step, grad_cache=best))["peak"] <= budget
    assert best == 64 or plan(tiny, replace(step, grad_cache=best + 1))["peak"] > budget
    assert largest_grad_cache(tiny, step, 1) is None


def test_cli_prints_the_variants_for_a_train_config(tiny_model_dir, capsys):
    from uwe_lightning.cli.plan_memory import main

    text = main([f"model.backbone={tiny_model_dir}", "trainer=cpu", "data.skills_per_step=32",
                 "train.grad_cache=true", "train.grad_cache_size=8", "--budget-gib", "1"])
    assert "32 skills + 32/32/32 texts x 64 tokens" in text
    assert "| **peak** (weights, AdamW, ... + the larger phase) |" in text
    assert "GradCache 8 texts" in text and "Largest GradCache mini-batch within 1 GiB" in text
    assert capsys.readouterr().out.strip() == text.strip()
    assert plan(BackboneShape.from_pretrained(str(tiny_model_dir)), StepShape(skills=32, texts_per_graph=(32,) * 3,
                                                                               device="cpu"))["peak"] < GIB


def test_cli_needs_a_device_count(tiny_model_dir, capsys):
    from uwe_lightning.cli.plan_memory import main

    with pytest.raises(SystemExit) as exit_:
        main([f"model.backbone={tiny_model_dir}", "trainer=ddp"])
    assert exit_.value.code == 2
    assert "trainer.devices='auto': give the number of devices with --world N" in capsys.readouterr().err


def test_cli_takes_padded_lengths_per_group(tiny_model_dir, capsys):
    from uwe_lightning.cli.plan_memory import main

    short = main([f"model.backbone={tiny_model_dir}", "trainer=cpu", "--lengths", "8,12,40,10"])
    assert "8/12/40/10 padded tokens (skills/graphs; budget 64)" in short
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([f"model.backbone={tiny_model_dir}", "trainer=cpu", "--lengths", "8,12"])
    assert "--lengths: lengths (8, 12): one per group (skills + 3 graphs)" in capsys.readouterr().err
