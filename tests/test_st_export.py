"""``python -m uwe_lightning.export st <model dir> --out DIR``: a checked sentence-transformers copy of a saved model.

The copy and the refusals are tested always; the load in sentence-transformers where it is installed (extra ``st``),
and its absence through a stand-in that raises what :func:`uwe_lightning.io.require` raises.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat

import pytest
import torch

from tests.helpers.tolerance import assert_close_to_scale
from uwe_lightning.cli import export as export_cli
from uwe_lightning.io import MissingDependencyError
from uwe_lightning.model import st_export
from uwe_lightning.model.pretrained import UWEModel
from uwe_lightning.model.st_export import CHECK_TEXTS, EXPORT_INFO_FILE, our_embeddings

HAS_ST = importlib.util.find_spec("sentence_transformers") is not None


@pytest.fixture(scope="module")
def saved(tiny_model_dir, tmp_path_factory):
    """Saved UWE models of the tiny backbone: one with the mean scorer, one with softmax (weights nudged)."""
    root = tmp_path_factory.mktemp("saved")
    mean = UWEModel.from_pretrained(tiny_model_dir).save_pretrained(root / "mean")
    model = UWEModel.from_pretrained(tiny_model_dir, scorer="softmax")
    with torch.no_grad():
        for p in model.encoder.backbone.parameters():
            p.add_(0.01 * torch.randn_like(p, generator=None))
    softmax = model.save_pretrained(root / "softmax")
    (softmax / "onnx").mkdir()
    (softmax / "onnx" / "model.onnx").write_bytes(b"not copied")
    return {"mean": mean, "softmax": softmax}


def no_sentence_transformers(monkeypatch):
    def missing(module, feature):
        raise MissingDependencyError(f"{feature} needs the 'sentence_transformers' package, which is not installed: "
                                     "pip install 'uwe_lightning[st]'")

    monkeypatch.setattr(st_export, "require", missing)


def run_cli(*args, capsys):
    capsys.readouterr()  # what ran before
    with pytest.raises(SystemExit) as exit_info:
        export_cli.main(["st", *map(str, args)])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "it/s]" not in line]  # progress bars
    return exit_info.value.code, err


def test_copy_is_published_whole_readable_and_without_the_onnx_export(saved, tmp_path, monkeypatch, capsys):
    no_sentence_transformers(monkeypatch)
    out = tmp_path / "published" / "my-model"
    previous = os.umask(0o077)  # a strict umask: the published files must still be 0644, directories 0755
    try:
        record = export_cli.main(["st", str(saved["mean"]), "--out", str(out)])
    finally:
        os.umask(previous)
    assert record["path"] == str(out) and record["pooled"] is False and record["scorer"] == "mean"
    copied = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    source = sorted(p.relative_to(saved["mean"]).as_posix() for p in saved["mean"].rglob("*"))
    assert copied == sorted([*source, EXPORT_INFO_FILE])
    for path in [out.parent, out, *out.rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644), path
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "no staging directory left"
    info = json.loads((out / EXPORT_INFO_FILE).read_text())
    assert "pip install 'uwe_lightning[st]'" in info["check"]["skipped"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("[export] not checked: ") and "uwe_lightning[st]" in err[0]
    assert UWEModel.from_pretrained(out).scorer.name == "mean"  # our loader checks the copied files' sha256

    code, err = run_cli(saved["mean"], "--out", out, capsys=capsys)
    assert code == 2 and len(err) == 1 and "exists; give another --out or --overwrite" in err[0]
    export_cli.main(["st", str(saved["mean"]), "--out", str(out), "--overwrite"])
    assert (out / EXPORT_INFO_FILE).is_file() and len([p for p in out.parent.iterdir()]) == 1


def test_token_scorer_is_refused_with_the_routes_that_keep_it(saved, tmp_path, monkeypatch, capsys):
    no_sentence_transformers(monkeypatch)
    out = tmp_path / "st"
    code, err = run_cli(saved["softmax"], "--out", out, capsys=capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("[export] error: export st: ")
    assert "scorer 'softmax'" in err[0] and "export onnx" in err[0] and "--pooled" in err[0]
    assert not out.exists() and not list(tmp_path.iterdir())
    record = export_cli.main(["st", str(saved["softmax"]), "--out", str(out), "--pooled"])
    assert record["pooled"] is True and not (out / "onnx").exists()
    assert json.loads((out / "config_sentence_transformers.json").read_text())["uwe"]["scorer"] == "softmax"


def test_maxsim_refusal_names_pylate(tiny_model_dir, tmp_path):
    maxsim = UWEModel.from_pretrained(tiny_model_dir, scorer="maxsim").save_pretrained(tmp_path / "maxsim")
    with pytest.raises(st_export.ConfigError, match="PyLate format"):
        st_export.export_sentence_transformers(maxsim, tmp_path / "out")
    pylate = UWEModel.from_pretrained(tiny_model_dir, scorer="maxsim").save_pretrained(tmp_path / "pl", format="pylate")
    with pytest.raises(st_export.ConfigError, match="is in the PyLate format"):
        st_export.export_sentence_transformers(pylate, tmp_path / "out", pooled=True)


def test_bad_sources_are_one_line(tiny_model_dir, saved, tmp_path, capsys):
    code, err = run_cli(tmp_path / "absent", "--out", tmp_path / "o", capsys=capsys)
    assert code == 2 and len(err) == 1 and "is not a directory" in err[0]
    code, err = run_cli(tiny_model_dir, "--out", tmp_path / "o", capsys=capsys)  # a bare backbone
    assert code == 2 and len(err) == 1 and "has no uwe.json" in err[0]
    code, err = run_cli(saved["mean"], "--out", saved["mean"] / "inside", capsys=capsys)
    assert code == 2 and len(err) == 1 and "inside) the model directory" in err[0]
    code, err = run_cli(saved["mean"], "--out", tmp_path / "o", "--tolerance", "0", capsys=capsys)
    assert code == 2 and len(err) == 1 and "--tolerance 0" in err[0]
    assert not (tmp_path / "o").exists()


def test_a_failed_check_publishes_nothing(saved, tmp_path, monkeypatch, capsys):
    """A copy that sentence-transformers would embed differently (here: our side perturbed) is not published."""
    def check(model_dir, tolerance, texts=CHECK_TEXTS):
        raise st_export.DataError(f"export st: SentenceTransformer({model_dir}) differs from our encoder by 0.5")

    monkeypatch.setattr(st_export, "check_with_sentence_transformers", check)
    out = tmp_path / "o"
    code, err = run_cli(saved["mean"], "--out", out, capsys=capsys)
    assert code == 2 and len(err) == 1 and "differs from our encoder" in err[0]
    assert not out.exists() and not list(tmp_path.iterdir()), "staging removed"


@pytest.mark.skipif(not HAS_ST, reason="sentence-transformers not installed (pip install 'uwe_lightning[st]')")
@pytest.mark.parametrize("which", ["mean", "softmax"])
def test_sentence_transformers_loads_the_copy_as_our_encoder_embeds(saved, tmp_path, which, capsys):
    import sentence_transformers

    args = ["st", str(saved[which]), "--out", str(tmp_path / "st")] + (["--pooled"] if which == "softmax" else [])
    record = export_cli.main(args)
    check = record["check"]
    assert check["passed"] and check["texts"] == len(CHECK_TEXTS) and check["max_abs_diff"] <= check["allowed"]
    assert "[export] checked: " in capsys.readouterr().out
    model = sentence_transformers.SentenceTransformer(str(tmp_path / "st"), device="cpu")
    got = torch.as_tensor(model.encode(list(CHECK_TEXTS))).float()
    assert_close_to_scale(got, our_embeddings(saved[which], CHECK_TEXTS))


@pytest.mark.skipif(not HAS_ST, reason="sentence-transformers not installed (pip install 'uwe_lightning[st]')")
def test_the_check_catches_a_copy_that_embeds_differently(saved, tmp_path, monkeypatch):
    real = st_export.our_embeddings
    monkeypatch.setattr(st_export, "our_embeddings", lambda d, t: real(d, t) + 1e-2)
    with pytest.raises(st_export.DataError, match="differs from our encoder"):
        st_export.export_sentence_transformers(saved["mean"], tmp_path / "st")
    assert not list(tmp_path.iterdir())
