"""Training end to end on CPU with the tiny BERT, the fixture edge files and the miniature data pack.

Every run composes the real ``train`` config (so the config groups are exercised too) and overrides only
sizes and locations: model = ``tiny_model_dir``, data = ``edges`` protocol on tests/fixtures/edges,
validation/test = WorkBench tasks of tests/fixtures/uwe-data-mini.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException, InstantiationException

from tests.helpers.configs import make_cfg
from uwe_lightning.io import ConfigError
from uwe_lightning.training import callbacks as callbacks_mod
from uwe_lightning.training.checkpointing import AtomicCheckpointIO
from uwe_lightning.training.module import NonFiniteError, UWEModule, first_nonfinite_grad
from uwe_lightning.training.run import build_datamodule, train


def read_ckpt(path: Path) -> dict:
    return torch.load(str(path), map_location="cpu", weights_only=False)


@pytest.fixture
def seen_batches(monkeypatch) -> list[tuple[int, torch.Tensor]]:
    """(batch.step, skill input_ids) of every training step, recorded through the module."""
    seen: list[tuple[int, torch.Tensor]] = []
    original = UWEModule.training_step

    def recording(self, batch, batch_idx):
        seen.append((batch.step, batch.skill_inputs["input_ids"].clone()))
        return original(self, batch, batch_idx)

    monkeypatch.setattr(UWEModule, "training_step", recording)
    return seen


# ----------------------------------------------------------------------------------------------------------
# Whole runs
# ----------------------------------------------------------------------------------------------------------


def test_fast_dev_run_exports_and_tests(tmp_path, tiny_model_dir):
    cfg = make_cfg(tmp_path, tiny_model_dir, "debug=fast_dev_run", "test.knowledge_gain=true")
    summary = train(cfg)

    assert summary["final_step"] == 1
    assert [h["step"] for h in (json.loads(line) for line in (tmp_path / "val_history.jsonl").open())] == [
        0,
        1,
    ]
    assert not list(tmp_path.rglob("best-step*.ckpt"))  # fast_dev_run: no monitored checkpoint
    meta = json.loads((tmp_path / "best_model" / "uwe.json").read_text())
    assert (meta["scorer"], meta["tau"], meta["max_length"], meta["provenance"]["step"]) == ("softmax", 0.1, None, 1)
    assert meta["provenance"]["source_checkpoint"] == "final in-memory model"
    assert (tmp_path / "best_model" / "model.safetensors").is_file()
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["split"] == "test" and sorted(results["tasks"]) == ["JobNorm", "SkillNorm"]
    assert (tmp_path / "results.md").is_file() and (tmp_path / "knowledge_gain.md").is_file()
    card = (tmp_path / "best_model" / "README.md").read_text()  # the model card, rewritten with the test table
    assert "scorer: `softmax`, tau: `0.1`" in card and "## Test results" in card and "| JobNorm |" in card
    assert "EdgeFileSource, graphs J/V/A" in card
    assert_card_states_the_run(card, results, tmp_path, tiny_model_dir)
    # The one step ran at LR 0 (linear warm-up starts at 0), so the trained weights equal the base model's
    # and every knowledge gain is exactly 0.
    gains = results["knowledge_gain"]
    assert sorted(gains["tasks"]) == ["JobNorm", "SkillNorm"]
    for task, row in gains["tasks"].items():
        assert row["map_final"] == results["tasks"][task]["map"]
        assert row["map_step0"] == results["step0"]["tasks"][task]["map"]
        assert row["gain"] == 0.0
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["config"]["trainer"]["fast_dev_run"] is True
    assert isinstance(info["git"]["commit"], str) and info["git"]["commit"]
    assert info["versions"]["torch"] == torch.__version__
    assert info["summary"]["final_step"] == 1


def test_checkpoint_then_resume_continues_the_stream(tmp_path, tiny_model_dir, seen_batches):
    first = train(make_cfg(tmp_path, tiny_model_dir, "logger=csv", steps=4, every=2))
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert first["final_step"] == 4 and read_ckpt(last)["global_step"] == 4
    assert [s for s, _ in seen_batches] == [0, 1, 2, 3]
    best = list((tmp_path / "checkpoints").glob("best-step*.ckpt"))
    assert len(best) == 1
    assert (tmp_path / "csv" / "version_0" / "metrics.csv").is_file()

    seen_batches.clear()
    second = train(make_cfg(tmp_path, tiny_model_dir, "logger=csv", "resume=true", steps=6, every=2))
    assert second["final_step"] == 6
    assert [s for s, _ in seen_batches] == [4, 5]
    ckpt = read_ckpt(last)
    assert ckpt["global_step"] == 6
    assert ckpt["lr_schedulers"][0]["last_epoch"] == 6  # the LR schedule continued too
    # The resumed stream is the uninterrupted one: steps 4 and 5 of a fresh datamodule.
    reference = build_datamodule(make_cfg(tmp_path, tiny_model_dir, steps=6))
    from transformers import AutoTokenizer

    reference.set_tokenizer(AutoTokenizer.from_pretrained(str(tiny_model_dir)))
    expected = [b.skill_inputs["input_ids"] for b in reference.train_dataloader()][4:6]
    for (_, got), want in zip(seen_batches, expected, strict=True):
        assert torch.equal(got, want)
    history = [json.loads(line)["step"] for line in (tmp_path / "val_history.jsonl").open()]
    assert history == [0, 2, 4, 6]  # no second step-0 evaluation after resuming
    assert second["val_step0"]["step"] == 0  # the callback's history came back from the checkpoint
    starts = json.loads((tmp_path / "run_info.json").read_text())["starts"]
    assert [(s["start_step"], s["resumed_from"]) for s in starts] == [(0, None), (4, str(last))]


@pytest.mark.parametrize(
    ("maps", "best_step"),
    [({0: 0.1, 2: 0.5, 4: 0.3, 5: 0.4}, 2), ({0: 0.1, 2: 0.5, 4: 0.3, 5: 0.9}, 5)],
    ids=["best-mid-run", "best-at-final-off-grid-step"],
)
def test_best_checkpoint_is_selected_and_exported(tmp_path, tiny_model_dir, monkeypatch, maps, best_step):
    """val/macro/map is faked per step; max_steps=5 is off the 2-step grid, so step 5 is validated too."""

    def fake_evaluate(self, pl_module, step):
        row = {"map": maps[step], "rp@10": 0.0}
        return {"tasks": {"JobNorm": row}, "unavailable": {}, "macro": {"map": maps[step], "rp@10": 0.0}}

    monkeypatch.setattr(callbacks_mod.WorkBenchValidation, "evaluate", fake_evaluate)
    summary = train(make_cfg(tmp_path, tiny_model_dir, "test.tasks=[]", steps=5, every=2))

    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.ckpt"))
    assert ckpts == sorted([f"best-step{best_step:06d}.ckpt", "last.ckpt"])
    assert read_ckpt(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 5
    meta = json.loads((tmp_path / "best_model" / "uwe.json").read_text())
    assert meta["provenance"]["step"] == best_step
    assert meta["provenance"]["val_metric"]["name"] == "val/macro/map"
    assert meta["provenance"]["val_metric"]["value"] == pytest.approx(100 * maps[best_step])  # percent
    assert summary["best_val"]["step"] == best_step
    assert not (tmp_path / "results.json").exists()  # test.tasks=[]


def test_nan_loss_stops_naming_step_and_graph_and_keeps_the_good_checkpoint(
    tmp_path, tiny_model_dir, monkeypatch
):
    original = UWEModule.graph_scores

    def poisoned(self, batch):
        scores, pos_masks, pair_index = original(self, batch)
        if self.global_step == 3:
            fwd, rev = scores["V"]
            scores["V"] = (fwd * float("nan"), rev)
        return scores, pos_masks, pair_index

    monkeypatch.setattr(UWEModule, "graph_scores", poisoned)
    with pytest.raises(NonFiniteError) as info:
        train(make_cfg(tmp_path, tiny_model_dir, steps=6, every=2))
    message = str(info.value)
    assert "step 3" in message and "graph V" in message
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert f"{last} (step 2) was not overwritten" in message
    ckpt = read_ckpt(last)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "best_model").exists()


def test_nonfinite_gradient_stops_before_the_update(tmp_path, tiny_model_dir, monkeypatch):
    """A finite loss with an inf gradient must not reach the weights (checked before the optimiser step)."""

    def poison_grad(self):
        if self.global_step == 1:
            self.encoder.backbone.embeddings.word_embeddings.weight.grad[0, 0] = math.inf

    monkeypatch.setattr(UWEModule, "on_after_backward", poison_grad, raising=False)
    with pytest.raises(
        NonFiniteError,
        match=r"non-finite gradient at step 1 in parameter "
        r"model\.encoder\.backbone\.embeddings\.word_embeddings\.weight",
    ):
        train(make_cfg(tmp_path, tiny_model_dir, steps=4, every=1))
    ckpt = read_ckpt(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_sigterm_saves_last_checkpoint_and_exits_nonzero(tmp_path, tiny_model_dir, monkeypatch):
    """Preemption: Lightning raises SIGTERMException between steps; the step is saved and resumable."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    def stop_at_step_3(self, outputs, batch, batch_idx):
        if self.global_step == 3:
            raise SIGTERMException

    monkeypatch.setattr(UWEModule, "on_train_batch_end", stop_at_step_3, raising=False)
    with pytest.raises(SystemExit) as info:
        train(make_cfg(tmp_path, tiny_model_dir, steps=6, every=2))
    assert info.value.code == 143
    assert read_ckpt(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 3


# ----------------------------------------------------------------------------------------------------------
# Config errors
# ----------------------------------------------------------------------------------------------------------


def test_unknown_override_key_fails_naming_it(tmp_path, tiny_model_dir):
    with pytest.raises(ConfigCompositionException, match=r"optim\.lrr"):
        make_cfg(tmp_path, tiny_model_dir, "optim.lrr=1e-4")


def test_unknown_key_added_to_a_section_fails_naming_it(tmp_path, tiny_model_dir):
    cfg = make_cfg(tmp_path, tiny_model_dir, "+validation.every_n_step=10")
    with pytest.raises(ConfigError, match=r"validation\.every_n_step: section 'validation'"):
        train(cfg)


def test_unknown_loss_key_fails_naming_it(tmp_path, tiny_model_dir):
    cfg = make_cfg(tmp_path, tiny_model_dir, "+loss.temperature=0.1")
    with pytest.raises(InstantiationException, match="temperature"):
        train(cfg)


def test_all_zero_loss_weights_skip_the_run(tmp_path, tiny_model_dir):
    """A grid point with alpha J = V = A = 0 has nothing to train: recorded as skipped, sweep continues."""
    cfg = make_cfg(tmp_path, tiny_model_dir, "loss.alpha.J=0", "loss.alpha.V=0", "loss.alpha.A=0")
    summary = train(cfg)
    assert "weight 0" in summary["skipped"]
    assert json.loads((tmp_path / "run_info.json").read_text())["summary"] == summary


# ----------------------------------------------------------------------------------------------------------
# Units
# ----------------------------------------------------------------------------------------------------------


def test_optimizer_groups_and_linear_schedule(tiny_model_dir):
    module = UWEModule(str(tiny_model_dir), scorer="mean", lr=1e-3, weight_decay=0.1, max_steps=10)
    config = module.configure_optimizers()
    optimizer, schedule = config["optimizer"], config["lr_scheduler"]["scheduler"]
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    lrs = []
    for _ in range(11):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    # warm-up = ceil(10 % of 10) = 1 step: 0, then 1e-3 decaying linearly to 0 at step 10.
    expected = [0.0] + [1e-3 * (10 - s) / 9 for s in range(1, 11)]
    assert lrs == pytest.approx(expected)
    assert module.encoder.training  # dropout on during training (from_pretrained returns eval mode)


def test_first_nonfinite_grad_names_the_parameter():
    layer = torch.nn.Linear(2, 2)
    params = dict(layer.named_parameters())
    layer.weight.grad = torch.ones(2, 2)
    layer.bias.grad = torch.zeros(2)
    assert first_nonfinite_grad(params) is None
    layer.bias.grad = torch.tensor([0.0, math.inf])
    assert first_nonfinite_grad(params) == "bias"


def test_atomic_checkpoint_io_keeps_the_good_file(tmp_path):
    io, path = AtomicCheckpointIO(), tmp_path / "ckpts" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, path)
    with pytest.raises(FloatingPointError, match="non-finite weights in \\['w'\\]"):
        io.save_checkpoint({"state_dict": {"w": torch.tensor([1.0, math.nan, 0.0])}, "global_step": 2}, path)
    kept = read_ckpt(path)
    assert kept["global_step"] == 1 and torch.equal(kept["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_throughput_summary_is_recorded(tmp_path, tiny_model_dir):
    """Each run reports steps/s, texts/s and peak memory of its training steps."""
    import json

    train(make_cfg(tmp_path, tiny_model_dir, "logger=csv", "test.tasks=[]", steps=2, every=2))
    summary = json.loads((tmp_path / "run_info.json").read_text())["summary"]["throughput"]
    assert summary["train_steps_timed"] == 2
    assert summary["steps_per_s"] > 0 and summary["texts_per_s"] > 0 and summary["peak_cpu_rss_gib"] > 0


def assert_card_states_the_run(card: str, results: dict, *local_dirs) -> None:
    """The exported card parses with huggingface_hub's own card parser, its metadata and model-index come from
    this run (its backbone, its measured test numbers, nothing else), and it names no local directory."""
    from huggingface_hub import ModelCard

    data = ModelCard(card).data
    assert (data.library_name, data.pipeline_tag, data.language) == ("sentence-transformers",
                                                                     "sentence-similarity", ["en"])
    assert data.base_model is None and data.license is None  # a local tiny backbone: no hub id, no license known
    measured = {(r.dataset_config, r.metric_type): r.metric_value for r in data.eval_results}
    expected = {(task, metric): round(row[metric], 2) for task, row in results["tasks"].items()  # percent
                for metric in ("map", "rp@10")}
    expected |= {("macro average", m): round(results["macro"][m], 2) for m in ("map", "rp@10")}
    assert measured == expected
    assert all(r.dataset_split == "test" for r in data.eval_results)
    for local in local_dirs:
        assert str(local) not in card
    assert not re.search(r"(^|[\s`(])/(tmp|work|home|root|var)/", card)
