"""Data parallel with global negatives: one DDP step on 2 gloo processes equals one process on the whole batch.

Both processes build the same tiny module and the same global step, tokenise their shard, and run one step of
the real :meth:`UWEModule.graph_scores` + loss through ``DistributedDataParallel`` (what Lightning's ``ddp``
strategy wraps); rank 0's loss and every parameter gradient (DDP's average) must equal those of one process on the
whole batch, fp32, for mtm / infonce / mtm_pairwise with the mean and softmax scorers, including a step where rank
1's shard of graph A is empty, and with GradCache and backbone checkpointing on. Dropout is off: each rank draws
its own dropout masks, so with dropout only the expectation matches. All cases run in one pair of forked
processes (a few seconds).
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers.distributed import Case, run_cases, step_result
from tests.helpers.tolerance import FP32_SCALE_TOL, mismatched_tensors
from uwe_lightning.data.sampling import shard_bounds, shard_sizes
from uwe_lightning.losses import GraphLoss

NORMAL, SPARSE = 0, 2  # data steps: every graph has >= 2 texts; graph A (one edge) has exactly one text
CASES = [
    *[Case(loss, scorer, step, sparse_a=step == SPARSE)
      for loss in ("mtm", "infonce") for scorer in ("mean", "softmax") for step in (NORMAL, SPARSE)],
    Case("mtm_pairwise", "softmax", SPARSE, sparse_a=True),
    Case("mtm", "maxsim", NORMAL, grad_cache=2),
    Case("mtm", "softmax", SPARSE, grad_cache=3, sparse_a=True, backbone_checkpointing=True),
]


def case_id(case: Case) -> str:
    extra = [f"gradcache{case.grad_cache}"] * bool(case.grad_cache) + ["ckpt"] * case.backbone_checkpointing
    return "-".join([case.loss, case.scorer, "empty-shard" if case.sparse_a else "full-shards", *extra])


@pytest.fixture(scope="module")
def sparse_a(tmp_path_factory):
    path = tmp_path_factory.mktemp("edges") / "A.csv"
    path.write_text("skill,text\npython,py\n")
    return path


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory, tiny_model_dir, sparse_a):
    out = tmp_path_factory.mktemp("ddp") / "results"
    return dict(zip(CASES, zip(*run_cases(tiny_model_dir, sparse_a, CASES, out), strict=True), strict=True))


def reference_step(model_dir, case: Case, sparse_a) -> dict:
    """One process on the whole batch, without GradCache or checkpointing (what every DDP case must equal)."""
    plain = Case(case.loss, case.scorer, case.step, sparse_a=case.sparse_a)
    return step_result(model_dir, plain, (0, 1), sparse_a, ddp=False)


def step_mismatches(rank0: dict, reference: dict, scale_tol: float = FP32_SCALE_TOL) -> dict[str, str]:
    """What differs between a DDP step and the reference: the loss, then each parameter gradient on its own
    scale (:mod:`tests.helpers.tolerance`: kernel choice and the shard split reorder float32 sums; the worst
    measured reordering error, ``python -m tests.helpers.margins``, is ~1e-5 of a tensor's scale)."""
    out = mismatched_tensors(rank0["grads"], reference["grads"], scale_tol=scale_tol)
    if rank0["loss"] != pytest.approx(reference["loss"], rel=scale_tol):
        out["loss"] = f"{rank0['loss']} != {reference['loss']}"
    return out


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_ddp_step_equals_one_process_on_the_whole_batch(case, ddp_results, tiny_model_dir, sparse_a):
    rank0, rank1 = ddp_results[case]
    reference = reference_step(tiny_model_dir, case, sparse_a)
    assert rank0["loss"] == rank1["loss"]  # every rank computes the same full-batch loss
    assert rank0["grads"].keys() == reference["grads"].keys()
    for name, want in reference["grads"].items():
        got = rank0["grads"][name]
        if want is None:  # the pooler: never part of the loss, in DDP neither
            assert got is None, name
            continue
        assert want.abs().max() > 0, name  # the comparison is not vacuous
        torch.testing.assert_close(rank1["grads"][name], got, rtol=0, atol=0)  # DDP's average is the same on both
    assert step_mismatches(rank0, reference) == {}
    if case.sparse_a:  # the case really had an empty shard
        assert (rank0["shard_sizes"]["A"], rank1["shard_sizes"]["A"]) == (1, 0)
    else:
        assert min(rank1["shard_sizes"].values()) >= 1


class _NoAllReduce:
    """torch.distributed as the text exchange sees it, with its gradient all-reduce left out."""

    def __getattr__(self, name):
        return (lambda *args, **kwargs: None) if name == "all_reduce" else getattr(torch.distributed, name)


def _unscaled_row_backward(ctx, grad):
    start, stop = ctx.bounds
    return grad[start:stop], None, None, None  # forgets the x world that DDP's mean undoes


def _shifted_shards(n: int, rank: int, world: int) -> tuple[int, int]:
    start, stop = shard_bounds(n, rank, world)
    return (start - 1, stop - 1) if start > 0 else (start, stop)  # rank 1 re-encodes rank 0's last row


_FULL_LOSS = GraphLoss.__call__


def _loss_without_graph_a(self, scores, pos_masks, pair_index):
    keep = [g for g in scores if g != "A"]
    return _FULL_LOSS(self, *({g: d[g] for g in keep} for d in (scores, pos_masks, pair_index)))


DEFECTS = {
    "text gradients not all-reduced": ("uwe_lightning.training.distributed.dist", _NoAllReduce()),
    "score-row gradients not scaled by world": (
        "uwe_lightning.training.distributed._GatherScoreRows.backward", staticmethod(_unscaled_row_backward)),
    "shards overlap by one row": ("uwe_lightning.data.datamodule.shard_bounds", _shifted_shards),
    "loss term of graph A dropped": ("uwe_lightning.losses.GraphLoss.__call__", _loss_without_graph_a),
}


@pytest.mark.parametrize("defect", DEFECTS)
def test_the_gradient_check_catches_real_defects(defect, tiny_model_dir, sparse_a, tmp_path, monkeypatch):
    """Each defect a DDP implementation can have, injected into the ranks (forked after the patch), fails the
    check of the test above, and would fail it even with a 100x looser tolerance: the scaled tolerance is
    tight where it matters."""
    case = Case("mtm", "mean", NORMAL)
    reference = reference_step(tiny_model_dir, case, sparse_a)  # before the patch: the true step
    target, value = DEFECTS[defect]
    monkeypatch.setattr(target, value)
    rank0, _ = run_cases(tiny_model_dir, sparse_a, [case], tmp_path / "results")
    assert step_mismatches(rank0[0], reference, scale_tol=100 * FP32_SCALE_TOL), defect


def test_shards_are_contiguous_and_cover_the_batch():
    for n in range(0, 9):
        for world in (1, 2, 3, 8):
            bounds = [shard_bounds(n, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
            assert shard_sizes(n, world) == [b - a for a, b in bounds]
            assert max(shard_sizes(n, world)) - min(shard_sizes(n, world)) <= 1
    with pytest.raises(ValueError, match="rank 2 of world size 2"):
        shard_bounds(4, 2, 2)


def test_sharded_batches_concatenate_to_the_whole_batch(tiny_model_dir, sparse_a):
    from tests.helpers.distributed import make_dataset

    whole = make_dataset(tiny_model_dir, (0, 1)).batch(NORMAL)
    shards = [make_dataset(tiny_model_dir, (r, 2)).batch(NORMAL) for r in range(2)]
    assert [b.shard for b in shards] == [(0, 2), (1, 2)]
    assert all(b.num_skills == whole.num_skills and b.num_texts == whole.num_texts for b in shards)
    rows = [b.skill_inputs["attention_mask"].sum(1) for b in shards]
    assert torch.equal(torch.cat(rows), whole.skill_inputs["attention_mask"].sum(1))
    for name, part in whole.graphs.items():
        for b in shards:  # masks and pair indices stay global
            assert torch.equal(b.graphs[name].pos_mask, part.pos_mask)
            assert torch.equal(b.graphs[name].pair_index, part.pair_index)
        lengths = torch.cat([b.graphs[name].text_inputs["attention_mask"].sum(1) for b in shards])
        assert torch.equal(lengths, part.text_inputs["attention_mask"].sum(1))
    empty = make_dataset(tiny_model_dir, (1, 2), sparse_a).batch(SPARSE).graphs["A"].text_inputs["input_ids"]
    assert tuple(empty.shape) == (0, 0)


def test_fewer_skills_than_ranks_is_refused(tiny_model_dir, monkeypatch):
    from tests.helpers.distributed import make_dataset, make_module
    from uwe_lightning.training import module as module_mod

    monkeypatch.setattr(module_mod, "rank_world", lambda: (0, 8))
    batch = make_dataset(tiny_model_dir, (0, 8)).batch(NORMAL)
    with pytest.raises(ValueError, match=r"skills_per_step=5 is below the 8 data-parallel ranks"):
        make_module(tiny_model_dir, Case("mtm", "mean", NORMAL)).graph_scores(batch)
    with pytest.raises(RuntimeError, match=r"batch tokenised for shard \(0, 1\) reached rank 0 of 8"):
        make_module(tiny_model_dir, Case("mtm", "mean", NORMAL)).graph_scores(
            make_dataset(tiny_model_dir, (0, 1)).batch(NORMAL))


@pytest.mark.slow
def test_lightning_ddp_run_matches_one_process(tmp_path):
    """Real runs through the CLI: ``trainer=ddp trainer.accelerator=cpu trainer.devices=2`` (Lightning starts rank 1)
    against one process, the tiny model without dropout: the same losses at every step, the same validation, the
    same final weights. AdamW's eps is raised so that float noise in near-zero gradients is not amplified into
    lr-sized differences (the per-step gradients are compared exactly by the tests above)."""
    import csv
    import subprocess
    import sys

    from tests.helpers.configs import base_overrides
    from tests.helpers.models import build_tiny_model
    from uwe_lightning.paths import REPO_DIR

    model = build_tiny_model(tmp_path / "tiny", dropout=0.0)
    common = [*base_overrides(None, model, steps=4, every=2, test_tasks="[JobNorm]"), "logger=csv", "optim.eps=1e-3",
              "trainer.enable_progress_bar=false"]
    runs = {"one": ["trainer=cpu"], "ddp": ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]}
    for name, extra in runs.items():
        cmd = [sys.executable, "-m", "uwe_lightning.train", *common, *extra, f"hydra.run.dir={tmp_path / name}"]
        result = subprocess.run(cmd, cwd=REPO_DIR, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]

    def losses(run: str) -> list[float]:
        with open(next((tmp_path / run / "csv").glob("version_*/metrics.csv"))) as fh:
            return [float(r["train/loss"]) for r in csv.DictReader(fh) if r.get("train/loss")]

    assert len(losses("one")) == 4 and losses("ddp") == pytest.approx(losses("one"), rel=1e-5)
    weights = {r: torch.load(tmp_path / r / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"] for r in runs}
    assert mismatched_tensors(weights["ddp"], weights["one"]) == {}
    history = {r: [json.loads(line) for line in (tmp_path / r / "val_history.jsonl").open()] for r in runs}
    assert [h["step"] for h in history["ddp"]] == [0, 2, 4]
    assert [h["val/macro/map"] for h in history["ddp"]] == pytest.approx([h["val/macro/map"] for h in history["one"]])
    assert (tmp_path / "ddp" / "results.json").is_file() and (tmp_path / "ddp" / "best_model").is_dir()
    info = json.loads((tmp_path / "ddp" / "run_info.json").read_text())
    assert len(info["starts"]) == 1 and info["summary"]["final_step"] == 4  # written once, by rank 0
