"""ONNX: the export matches torch on varied shapes; the ONNX query backend ranks like torch for every scorer;
a missing or stale export is one clear error. Skipped where onnx / onnxscript / onnxruntime are absent."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from uwe_lightning.cli import export as export_cli  # noqa: E402
from uwe_lightning.io import ConfigError, ModelNotFoundError  # noqa: E402
from uwe_lightning.model.encoder import Encoder  # noqa: E402
from uwe_lightning.model.onnx import EXPORT_INFO_FILE, OnnxEncoder, default_onnx_path, export_onnx  # noqa: E402
from uwe_lightning.ranking.cache import model_fingerprint  # noqa: E402
from uwe_lightning.ranking.ranker import Ranker  # noqa: E402
from uwe_lightning.workbench.runner import EncoderRankingModel  # noqa: E402

SCORERS = ("mean", "maxsim", "softmax_ymean", "softmax")
ATOL = 1e-5
JOBS = ["software engineer", "nurse", "truck driver", "chef", "sales manager", "teacher",
        "data engineer python sql", "construction safety project manager and team lead for software " * 4]
SKILLS = ["python", "java", "sql", "manage team", "develop software", "care for patient", "teach",
          "drive truck", "cook food", "customer service", "analyse data and report", "plan project",
          "build construction safety plan", "marketing", "lead sales team", "manage", "data"]


@pytest.fixture(scope="module")
def exported(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny model with its ONNX export, made through the command line."""
    model_dir = tmp_path_factory.mktemp("onnx") / "tiny"
    shutil.copytree(tiny_model_dir, model_dir)
    record = export_cli.main(["onnx", str(model_dir)])
    assert Path(record["path"]) == default_onnx_path(model_dir)
    return model_dir


@pytest.fixture(scope="module")
def encoders(exported: Path) -> tuple[Encoder, OnnxEncoder]:
    encoder = Encoder.from_pretrained(str(exported)).eval()
    return encoder, OnnxEncoder(encoder, default_onnx_path(exported))


def padded_batch(lengths: list[int], width: int, vocab: int, left: bool, seed: int):
    gen = torch.Generator().manual_seed(seed)
    ids, mask = torch.zeros(len(lengths), width, dtype=torch.long), torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        cols = slice(width - n, width) if left else slice(0, n)
        ids[row, cols], mask[row, cols] = torch.randint(5, vocab, (n,), generator=gen), 1
    return ids, mask


@pytest.mark.parametrize("batch", [1, 3, 7])
@pytest.mark.parametrize("width", [1, 2, 9, 64, 128])
@pytest.mark.parametrize("left", [False, True])
def test_onnx_matches_torch_on_varied_shapes(encoders, batch, width, left):
    encoder, onnx_encoder = encoders
    lengths = [max(1, width - (width * row) // batch) for row in range(batch)]  # padded rows when batch > 1
    ids, mask = padded_batch(lengths, width, encoder.backbone.config.vocab_size, left, seed=batch * width)
    with torch.inference_mode():
        ref, got = encoder(ids, mask), onnx_encoder(ids, mask)
    assert got.embeddings.shape == ref.embeddings.shape and torch.equal(got.mask, ref.mask)
    assert (got.embeddings - ref.embeddings)[ref.mask].abs().max() < ATOL


def test_encode_texts_matches_torch(encoders):
    encoder, onnx_encoder = encoders
    texts = JOBS + SKILLS + ["x " * 300]  # one text cut at the model's limit
    ref, got = encoder.encode(texts, batch_size=4), onnx_encoder.encode(texts, batch_size=4)
    for r, g in zip(ref, got, strict=True):
        assert r.shape == g.shape and (r - g).abs().max() < ATOL
    assert encoder.backbone.training is False and onnx_encoder.training is False


def test_export_info_records_source_opset_versions_and_parity(exported):
    info = json.loads((exported / "onnx" / EXPORT_INFO_FILE).read_text())
    assert info["source_sha256"] == model_fingerprint(exported)
    assert info["opset"] == 18 and info["exporter"].startswith("torch.onnx.export(dynamo=True)")
    assert set(info["versions"]) == {"torch", "onnx", "onnxscript", "onnxruntime"}
    assert 0 <= info["parity"]["max_abs_diff"] < ATOL and len(info["parity"]["per_shape"]) >= 5
    assert not list((exported / "onnx").glob(".*")), "no temporary file left beside the export"


@pytest.mark.parametrize("scorer", SCORERS)
def test_onnx_query_backend_ranks_like_torch(exported, scorer):
    torch_ranker = Ranker.from_pretrained(str(exported), scorer=scorer, device="cpu")
    onnx_ranker = Ranker.from_pretrained(str(exported), scorer=scorer, device="cpu", query_backend="onnx")
    assert isinstance(onnx_ranker.query_encoder, OnnxEncoder) and onnx_ranker.query_backend == "onnx"
    for queries, targets in ((JOBS, SKILLS), (SKILLS, JOBS)):
        space = torch_ranker.index(targets)
        s_torch, i_torch = torch_ranker.rank(queries, space, k=5)
        s_onnx, i_onnx = onnx_ranker.rank(queries, onnx_ranker.index(targets), k=5)
        assert torch.equal(i_torch, i_onnx)
        assert torch.allclose(s_torch, s_onnx, atol=ATOL)
        one_by_one = torch.cat([onnx_ranker.rank([q], space, k=5)[1] for q in queries])  # single queries
        assert torch.equal(one_by_one, i_torch)


def test_with_scorer_keeps_the_onnx_session(exported):
    ranker = Ranker.from_pretrained(str(exported), device="cpu", query_backend="onnx")
    other = ranker.with_scorer("maxsim")
    assert other.query_encoder is ranker.query_encoder and other.query_backend == "onnx"


def test_workbench_adapter_scores_queries_with_the_onnx_backend(exported):
    def scores(backend: str) -> torch.Tensor:
        model = EncoderRankingModel(Ranker.from_pretrained(str(exported), scorer="softmax", device="cpu",
                                                           query_backend=backend))
        model.prepare(JOBS + SKILLS)
        return torch.cat([block for _, block in model.score_blocks(JOBS, SKILLS, block_size=3)])

    assert torch.allclose(scores("torch"), scores("onnx"), atol=ATOL)


def test_missing_export_is_one_error_naming_the_command(tiny_model_dir):
    with pytest.raises(ModelNotFoundError, match=r"no ONNX export at .*onnx/model\.onnx; make it with "
                                                 r"`python -m uwe_lightning\.export onnx "):
        Ranker.from_pretrained(str(tiny_model_dir), device="cpu", query_backend="onnx")


def test_query_backend_errors(exported, tiny_model_dir):
    encoder = Encoder.from_pretrained(str(tiny_model_dir))
    with pytest.raises(ConfigError, match="query_backend='tensorrt': must be one of torch, onnx"):
        Ranker(encoder, query_backend="tensorrt")
    with pytest.raises(ConfigError, match=r"query_backend=onnx needs onnx_file="):
        Ranker(encoder, query_backend="onnx")
    ranker = Ranker(encoder, device="cpu", query_backend="onnx", onnx_file=default_onnx_path(exported))
    assert isinstance(ranker.query_encoder, OnnxEncoder)


def test_stale_export_is_refused(exported, tmp_path):
    model_dir = tmp_path / "retrained"
    shutil.copytree(exported, model_dir)
    info_path = model_dir / "onnx" / EXPORT_INFO_FILE
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "source_sha256": "0" * 64}))
    with pytest.raises(ModelNotFoundError, match=r"exported from other weights .* re-run `python -m uwe_lightning"):
        Ranker.from_pretrained(str(model_dir), device="cpu", query_backend="onnx")


def test_export_cli_bad_input_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        export_cli.main(["onnx", str(tmp_path / "absent")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("[export] error: ") and "absent" in err[0]


def test_export_never_writes_into_the_shared_model_cache(tiny_model_dir, tmp_path, monkeypatch):
    cache = tmp_path / "models"
    shutil.copytree(tiny_model_dir, cache / "tiny")
    monkeypatch.setenv("UWE_MODEL_DIR", str(cache))
    with pytest.raises(ConfigError, match=r"shared model cache .* give --out DIR"):
        export_cli.export(str(cache / "tiny"))
    assert not (cache / "tiny" / "onnx").exists()


def test_export_worse_than_tolerance_is_not_published(encoders, tmp_path):
    encoder, _ = encoders
    out = tmp_path / "onnx" / "model.onnx"
    with pytest.raises(ValueError, match=r"differs from torch by .* not written to"):
        export_onnx(encoder, out, tolerance=-1.0)
    assert not list(out.parent.iterdir())


def test_evaluate_query_backend_onnx(exported, tiny_model_dir):
    from hydra import compose, initialize_config_dir

    from uwe_lightning.cli.evaluate import build_ranking_model
    from uwe_lightning.paths import CONF_DIR

    def build(model_dir: Path):
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("evaluate", overrides=["model=trained", f"model.backbone='{model_dir}'",
                                                 "query_backend=onnx", "device=cpu"])
        return build_ranking_model(cfg)

    model = build(exported)
    assert model.ranker.query_backend == "onnx" and model.name.endswith("+onnx-queries")
    with pytest.raises(ModelNotFoundError, match="make it with `python -m uwe_lightning.export onnx"):
        build(tiny_model_dir)


def test_int8_query_backends_rank_close_to_torch(exported, tmp_path):
    """``export onnx --int8`` writes model_int8.onnx (recorded in export_info.json); the onnx_int8 and
    torch_int8 query backends give lossy but close scores (their WorkBench MAP cost: agreement.md)."""
    model_dir = tmp_path / "tiny"
    shutil.copytree(exported, model_dir)
    record = export_cli.main(["onnx", str(model_dir), "--int8"])
    assert record["int8"]["bytes_int8"] < record["int8"]["bytes_fp32"]
    assert json.loads((model_dir / "onnx" / EXPORT_INFO_FILE).read_text())["int8"]["file"] == "model_int8.onnx"
    reference = Ranker.from_pretrained(str(model_dir), scorer="maxsim", device="cpu", precision="fp32")
    space = reference.index(SKILLS)
    want = reference.rank(JOBS, space, k=len(SKILLS))[0]
    for backend in ("onnx_int8", "torch_int8"):
        ranker = Ranker.from_pretrained(str(model_dir), scorer="maxsim", device="cpu", precision="fp32",
                                        query_backend=backend)
        assert ranker.query_backend == backend and ranker.query_encoder is not ranker.encoder
        got = ranker.rank(JOBS, space, k=len(SKILLS))[0]
        assert not torch.equal(got, want) and float((got - want).abs().max()) < 0.1, backend


def test_missing_int8_export_names_the_flag(exported):
    with pytest.raises(ModelNotFoundError, match=r"onnx/model_int8\.onnx; make it with `python -m "
                                                 r"uwe_lightning\.export onnx .* --int8`"):
        Ranker.from_pretrained(str(exported), device="cpu", query_backend="onnx_int8")
