"""Offline bundles: fp16 weight parts, the derived data directory, pack -> unpack, corruption, a run from it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers.configs import base_overrides
from tests.helpers.paths import MINI_DATA
from uwe_lightning.io import ConfigError, DataError
from uwe_lightning.offline.bundle import MANIFEST_FILE, pack, parse_size, unpack, verify
from uwe_lightning.offline.weights import plan_parts, read_fp32_state, write_fp16_parts
from uwe_lightning.paths import DERIVED_INDEX_FILE, REPO_DIR
from uwe_lightning.protocol import build
from uwe_lightning.workbench.dataset import SPLITS
from uwe_lightning.workbench.runner import load_tasks

PART_SIZE = 16 * 1024
TASKS = ["JobNorm", "SkillNorm", "SkillNorm@heldout", "SkillExtr-H", "SkillSim"]


def test_weights_travel_as_bit_exact_fp16_parts_and_come_back_as_fp32(tiny_model_dir, tmp_path):
    source = load_file(str(tiny_model_dir / "model.safetensors"))
    total = sum(t.numel() * 2 for t in source.values())
    part_size = max(total // 3, max(t.numel() * 2 for t in source.values()) + 4096)
    parts = write_fp16_parts(tiny_model_dir / "model.safetensors", tmp_path, part_size)
    assert len(parts) >= 2 and all(p.stat().st_size <= part_size for p in parts)
    shipped: dict[str, torch.Tensor] = {}
    for part in parts:
        shipped.update(load_file(str(part)))
    assert list(shipped) == list(source)  # every tensor once, in the source's order
    for name, tensor in source.items():
        expected = tensor.to(torch.float16) if tensor.is_floating_point() else tensor
        assert shipped[name].dtype == expected.dtype and torch.equal(shipped[name], expected), name
    restored = read_fp32_state(parts)
    for name, tensor in source.items():
        if tensor.is_floating_point():
            assert restored[name].dtype == torch.float32
            assert torch.equal(restored[name], tensor.to(torch.float16).float()), name


def test_a_part_size_below_the_largest_tensor_names_it():
    with pytest.raises(ConfigError, match="too small for tensor 'big'"):
        plan_parts({"big": torch.zeros(100_000, dtype=torch.float16)}, 100_000)


@pytest.mark.parametrize(("text", "size"), [("55MiB", 55 * 2**20), ("2KB", 2000), ("4096", 4096)])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["55 parsecs", "", "12"])
def test_parse_size_rejects_what_is_not_a_size(bad):
    with pytest.raises(ConfigError, match="part_size"):
        parse_size(bad)


@pytest.fixture(scope="module")
def bundle(tiny_model_dir, tmp_path_factory) -> Path:
    import shutil

    root = tmp_path_factory.mktemp("bundle")
    model = shutil.copytree(tiny_model_dir, root / "model-src")
    (model / "README.md").write_text("".join(f"line {i} of a long model card\n" for i in range(2000)))  # ~60 KB
    out = root / "b"
    # 16 KiB parts: the weights travel in several fp16 parts, the model card in byte parts.
    pack(out, model, "tiny", PART_SIZE, str(MINI_DATA), 0.1, 0.5, tasks=TASKS)
    return out


def test_no_file_of_the_bundle_is_above_the_part_size_and_the_manifest_holds_them_all(bundle):
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    listed = {p["path"] for f in manifest["files"] for p in f["parts"]}
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert on_disk - listed == {MANIFEST_FILE, "UNPACK.md"}
    assert all(p.stat().st_size <= PART_SIZE for p in bundle.rglob("*") if p.is_file())
    assert len([f for f in manifest["files"] if "/weights-" in f["path"]]) >= 3
    assert [f["path"] for f in manifest["files"] if len(f["parts"]) > 1] == ["model/tiny/README.md"]
    assert manifest["data"]["unavailable"] == ["SkillSim/test", "SkillSim/val"]  # the mini pack has no SkillMatch
    assert verify(bundle) == len(listed)


def test_a_damaged_or_missing_part_is_named(bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    part = next(copy.glob("model/tiny/weights-*.safetensors"))
    data = bytearray(part.read_bytes())
    data[-1] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"{part.name}: sha256 mismatch"):
        unpack(copy, tmp_path / "node")
    assert not (tmp_path / "node" / "models").exists()  # nothing half-written
    part.unlink()
    with pytest.raises(DataError, match="missing part"):
        verify(copy)


@pytest.fixture(scope="module")
def node(bundle, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("node")
    unpack(bundle, target)
    return target


def test_unpacked_data_equals_what_the_pack_gives(node):
    derived = node / "data"
    assert (derived / DERIVED_INDEX_FILE).is_file()
    original = build.build_open_protocol(MINI_DATA, 0.1, 0.5)
    restored = build.build_open_protocol(derived, 0.1, 0.5)
    assert restored.vocab.uris == original.vocab.uris and restored.vocab.labels == original.vocab.labels
    for name, graph in original.graphs.items():
        again = restored.graphs[name]
        assert again.texts == graph.texts
        assert again.skill_index.tolist() == graph.skill_index.tolist()
        assert again.text_index.tolist() == graph.text_index.tolist()
    options = original.task_options()
    for split in SPLITS:
        want, want_missing = load_tasks(TASKS, split, MINI_DATA, options)
        got, got_missing = load_tasks(TASKS, split, derived, options)
        assert set(got) == set(want) and set(got_missing) == set(want_missing) == {"SkillSim"}
        for name, dataset in want.items():
            assert (got[name].queries, got[name].targets, got[name].labels, got[name].exclude) == (
                dataset.queries, dataset.targets, dataset.labels, dataset.exclude), name


def test_other_protocol_fractions_or_raw_files_fail_clearly(node):
    with pytest.raises(DataError, match="built with"):
        build.build_open_protocol(node / "data", 0.2, 0.5)
    with pytest.raises(DataError, match="derived data directory"):
        from uwe_lightning.esco import load_skills

        load_skills(node / "data", "v1.2.0")


def test_the_unpacked_model_is_the_fp16_rounded_source(tiny_model_dir, node):
    source = load_file(str(tiny_model_dir / "model.safetensors"))
    restored = load_file(str(node / "models" / "tiny" / "model.safetensors"))
    assert set(restored) == set(source)
    for name, tensor in source.items():
        if tensor.is_floating_point():
            assert restored[name].dtype == torch.float32
            assert torch.equal(restored[name], tensor.half().float())
    assert (node / "models" / "tiny" / "tokenizer.json").is_file()
    assert (node / "models" / "tiny" / "README.md").read_text().count("long model card") == 2000  # byte parts joined


def test_a_training_run_from_the_unpacked_bundle_needs_no_data_pack(node, tmp_path):
    from hydra import compose, initialize_config_dir

    from uwe_lightning.paths import CONF_DIR
    from uwe_lightning.training.run import train

    local = [o for o in base_overrides(tmp_path / "run", node / "models" / "tiny", steps=2, every=2)
             if not o.startswith(("data=", "data.source", "paths.data_dir", "validation.tasks", "test.tasks"))]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*local, "data=open", f"paths.data_dir='{node / 'data'}'",
                                          "validation.tasks=[JobNorm,SkillNorm@heldout]",
                                          "test.tasks=[JobNorm,SkillNorm@heldout]"])
    train(cfg)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert list(results["tasks"]) == ["JobNorm", "SkillNorm@heldout"]
    assert not results["unavailable"]


def test_bundle_cli_errors_are_one_line(tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "uwe_lightning.bundle", *args], capture_output=True,
                              text=True, cwd=REPO_DIR, timeout=300)

    missing_out = run("pack", "model=minilm")
    assert missing_out.returncode == 2 and missing_out.stderr.strip().splitlines() == [
        "[bundle] error: out: give the bundle directory, e.g. `bundle pack out=bundles/mpnet`"]
    no_bundle = run("unpack", str(tmp_path), f"target={tmp_path / 'node'}")
    assert no_bundle.returncode == 2 and "no manifest.json" in no_bundle.stderr
    assert len(no_bundle.stderr.strip().splitlines()) == 1


def test_the_bench_draws_its_training_texts_from_a_derived_data_dir(node):
    from uwe_lightning.efficiency.measure import training_texts

    texts = training_texts(node / "data", n_skills=5, seed=0)
    assert sorted(texts) == ["A", "J", "S", "V"] and all(len(v) == 5 and all(v) for v in texts.values())
