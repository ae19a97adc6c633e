"""Faults around ranking and evaluation: damaged or unwritable caches, bad ``rank`` arguments, empty splits,
results that already exist, left-padding tokenizers, models that do not resolve, file modes."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers.configs import rank_cfg as _rank_cfg
from tests.helpers.paths import MINI_DATA, writable_pack
from tests.helpers.tolerance import assert_close_to_scale, scaled_mismatch
from uwe_lightning.io import ConfigError, DataError, ModelNotFoundError, atomic_write_text
from uwe_lightning.model.backbones import resolve_backbone
from uwe_lightning.model.encoder import Encoder, TokenEmbeddings
from uwe_lightning.model.lexical import TfidfRankingModel
from uwe_lightning.paths import REPO_DIR
from uwe_lightning.ranking import cache as cache_lib
from uwe_lightning.ranking.ranker import Ranker
from uwe_lightning.ranking.texts import is_blank
from uwe_lightning.workbench.report import keep_previous, write_results
from uwe_lightning.workbench.runner import evaluate

SKILLS = ["python", "java", "sql", "manage team", "develop software", "care for patient", "teach", "drive truck",
          "cook food", "customer service", "analyse data and report", "plan project"]
QUERIES = ["software engineer", "nurse", "truck driver", "data engineer python sql"]


@pytest.fixture(scope="module")
def ranker(tiny_model_dir: Path) -> Ranker:
    return Ranker.from_pretrained(str(tiny_model_dir), scorer="maxsim", device="cpu")


def _strict_json(path: Path):
    def refuse(name: str):
        raise AssertionError(f"{path} holds {name}: not strict JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


# ---------------------------------------------------------------------------------------------------------
# 1. A damaged cache payload is detected and rebuilt
# ---------------------------------------------------------------------------------------------------------


def _tensor_span(path: Path, name: str) -> tuple[int, int]:
    """Byte range of tensor ``name`` inside a safetensors file."""
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    start, stop = json.loads(raw[8 : 8 + header_len])[name]["data_offsets"]
    return 8 + header_len + start, 8 + header_len + stop


@pytest.mark.parametrize("tensor", ["tokens", "offsets"])
def test_damaged_cache_payload_is_rebuilt_and_ranks_like_a_fresh_cache(ranker, tmp_path, tensor):
    fresh = ranker.index(SKILLS)  # no cache
    want_scores, want_index = ranker.rank(QUERIES, fresh, k=3)
    ranker.index(SKILLS, cache_dir=tmp_path)
    path = ranker.last_index_path
    start, stop = _tensor_span(path, tensor)
    raw = bytearray(path.read_bytes())
    if tensor == "tokens":  # NaNs in the middle of the token rows: parses, passes every layout check
        middle = (start + stop) // 2 & ~1
        raw[middle : middle + 64] = b"\xff\x7f" * 32
    else:  # move one text boundary by a token: lengths stay >= 1, the layout stays valid
        offsets = torch.frombuffer(bytearray(raw[start:stop]), dtype=torch.int64).clone()
        offsets[2] += 1 if int(offsets[3] - offsets[2]) > 1 else -1
        raw[start:stop] = offsets.numpy().tobytes()
    path.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match=f"target-space cache rebuilt: .*checksum mismatch in {tensor}"):
        rebuilt = ranker.index(SKILLS, cache_dir=tmp_path)
    assert not ranker.last_index_hit
    scores, index = ranker.rank(QUERIES, rebuilt, k=3)
    assert torch.equal(index, want_index) and torch.allclose(scores, want_scores, atol=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ranker.index(SKILLS, cache_dir=tmp_path)
    assert ranker.last_index_hit


def test_cache_of_the_previous_format_is_rebuilt_not_trusted(ranker, tmp_path):
    """A format-1 file (no checksum) given as an explicit cache file: rebuilt with a warning, not an error."""
    good = ranker.index(SKILLS)
    key = ranker.cache_key(SKILLS, tmp_path)
    old_key = {**key.as_dict(), "format": 1}
    path = tmp_path / "space.safetensors"
    save_file({"tokens": good.tokens.clone(), "offsets": good.offsets.clone()}, str(path),
              metadata={"uwe_target_cache": json.dumps({"key": old_key})})
    with pytest.warns(UserWarning, match="target-space cache rebuilt"):
        ranker.index(SKILLS, cache_file=path)
    header = json.loads(cache_lib._read_meta(path)["uwe_target_cache"])
    assert header["key"]["format"] == cache_lib.FORMAT_VERSION and header["checksum"]["tokens"]


def test_checksum_written_without_xxhash_is_sha256_and_unverifiable_ones_are_rebuilt(ranker, tmp_path, monkeypatch):
    tokens, offsets = ranker.index(SKILLS).tokens, ranker.index(SKILLS).offsets
    key = ranker.cache_key(SKILLS, tmp_path)
    path = cache_lib.save_packed(tmp_path / "a.safetensors", tokens, offsets, key, checksum="xxh3_128")
    monkeypatch.setattr(cache_lib, "checksum_available", lambda name: name == "sha256")
    assert cache_lib.default_checksum() == "sha256"
    with pytest.raises(cache_lib.CacheError, match="cannot verify"):
        cache_lib.load_packed(path, key)
    cache_lib.save_packed(path, tokens, offsets, key)
    loaded, _ = cache_lib.load_packed(path, key)
    assert torch.equal(loaded, tokens)


# ---------------------------------------------------------------------------------------------------------
# 2. A cache directory that cannot be written
# ---------------------------------------------------------------------------------------------------------


def test_unwritable_cache_dir_warns_once_and_ranks_uncached(ranker, tmp_path, monkeypatch):
    want = ranker.index(SKILLS)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    cache_dir = blocker / "cache"  # mkdir fails whoever runs the test (root ignores chmod 0555)
    with pytest.warns(UserWarning, match=f"cache directory {cache_dir} is not writable") as caught:
        got = ranker.index(SKILLS, cache_dir=cache_dir)
    assert len([w for w in caught if "not writable" in str(w.message)]) == 1
    assert torch.equal(got.tokens, want.tokens) and ranker.last_index_path is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per directory
        ranker.index(SKILLS, cache_dir=cache_dir)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cache_lib, "save_packed", refuse)  # a read-only directory, as a non-root user sees it
    read_only = tmp_path / "read-only"
    with pytest.warns(UserWarning, match=f"cache directory {read_only} is not writable \\(Permission denied\\)"):
        scores, _ = ranker.rank(QUERIES, ranker.index(SKILLS, cache_dir=read_only), k=2)
    assert scores.shape == (len(QUERIES), 2)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_cache_dir_with_chmod(ranker, tmp_path):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        with pytest.warns(UserWarning, match="not writable"):
            ranker.index(SKILLS, cache_dir=read_only)
    finally:
        read_only.chmod(0o755)


# ---------------------------------------------------------------------------------------------------------
# 3. rank: arguments checked before any work; invisible queries; non-UTF-8 target files
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def targets_file(tmp_path: Path) -> Path:
    path = tmp_path / "targets.txt"
    path.write_text("\n".join(SKILLS) + "\n")
    return path


@pytest.mark.parametrize("k", ["abc", "2.7", "0", "-3", "true", "null"])
def test_rank_k_is_checked_before_the_model_loads(tmp_path, targets_file, k):
    from uwe_lightning.cli.rank import run

    missing_model = tmp_path / "no-model-here"  # loading it would raise ModelNotFoundError, not ConfigError
    cfg = _rank_cfg(missing_model, tmp_path, "targets=file", f"targets_file={targets_file}", "queries=[nurse]", f"k={k}")
    with pytest.raises(ConfigError, match=r"^k must be a whole number >= 1"):
        run(cfg, tmp_path / "run")


@pytest.mark.parametrize("query", ["\u200b\u200d", "\ufeff", " \u2060 ", "\u3164"])
def test_invisible_queries_are_empty(tmp_path, targets_file, ranker, query):
    from omegaconf import OmegaConf

    from uwe_lightning.cli.rank import collect_queries, run

    with pytest.raises(ConfigError, match=r"queries\[1\] is empty"):
        collect_queries(["nurse", query], None)
    cfg = _rank_cfg(tmp_path / "no-model-here", tmp_path, "targets=file", f"targets_file={targets_file}")
    OmegaConf.update(cfg, "queries", ["nurse", query])
    with pytest.raises(ConfigError, match=r"queries\[1\]"):
        run(cfg, tmp_path / "run")
    space = ranker.index(SKILLS)
    with pytest.raises(ValueError, match=r"queries\[0\] is an empty text"):
        ranker.rank([query], space)
    with pytest.raises(ValueError, match=r"targets\[1\] is an empty text"):
        ranker.index(["python", query])
    assert not is_blank("c++") and not is_blank("\u200bjava")


def test_targets_file_not_utf8_names_file_and_line(tmp_path):
    from uwe_lightning.cli.rank import run
    from uwe_lightning.ranking.targets import load_targets

    bad = tmp_path / "latin1.txt"
    bad.write_bytes("python\r\njava\n\ncaf\u00e9 manager\n".encode("latin-1"))
    with pytest.raises(DataError, match=rf"targets_file {bad}: line 4: not valid UTF-8"):
        load_targets("file", targets_file=bad)
    cfg = _rank_cfg(tmp_path / "no-model-here", tmp_path, "targets=file", f"targets_file={bad}", "queries=[nurse]")
    with pytest.raises(DataError, match="line 4"):
        run(cfg, tmp_path / "run")
    # A BOM is not part of the first text; blank and invisible lines are skipped, ids keep the file's lines.
    good = tmp_path / "good.txt"
    good.write_bytes("\ufeffpython\n\n\u200b\njava\n".encode())
    space = load_targets("file", targets_file=good)
    assert space.texts == ["python", "java"] and space.ids == ["line:1", "line:4"]


def _cli(module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_DIR, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def _one_error_line(proc: subprocess.CompletedProcess, tool: str) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"[{tool}] error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_rank_cli_user_errors_are_one_line_exit_2(tiny_model_dir, tmp_path, targets_file):
    common = [f"model.backbone={tiny_model_dir}", "targets=file", f"hydra.run.dir={tmp_path / 'run'}",
              f"paths.cache_dir={tmp_path / 'cache'}", "queries=[nurse]", "show_progress=false"]
    line = _one_error_line(_cli("uwe_lightning.rank", *common, f"targets_file={targets_file}", "k=abc"), "rank")
    assert "k must be a whole number" in line and "'abc'" in line
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"python\n\xff\xfe\n")
    line = _one_error_line(_cli("uwe_lightning.rank", *common, f"targets_file={bad}"), "rank")
    assert str(bad) in line and "line 2" in line
    assert not (tmp_path / "cache").exists()  # nothing was encoded


# ---------------------------------------------------------------------------------------------------------
# 4. Empty splits and max_queries
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_queries", [0, -1, 2.5, True, "all"])
def test_max_queries_below_one_is_a_config_error(max_queries):
    with pytest.raises(ConfigError, match="max_queries"):
        evaluate(TfidfRankingModel(), ["JobNorm"], "val", MINI_DATA, max_queries=max_queries)


def _evaluate_cfg(tmp_path: Path, *extra: str):
    from hydra import compose, initialize_config_dir

    from uwe_lightning.paths import CONF_DIR

    overrides = ["split=val", f"paths.data_dir={MINI_DATA}", f"paths.output_dir={tmp_path / 'run'}",
                 "show_progress=false", "tasks=[JobNorm,SkillNorm]", *extra]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="evaluate", overrides=overrides)


def test_evaluate_cli_checks_max_queries_before_the_model(tmp_path):
    from uwe_lightning.cli.evaluate import run

    cfg = _evaluate_cfg(tmp_path, "model=minilm", f"paths.model_dir={tmp_path / 'no-models'}", "max_queries=0")
    with pytest.raises(ConfigError, match="max_queries must be a whole number >= 1 or null"):
        run(cfg)


def test_empty_split_is_reported_as_no_queries_and_left_out_of_the_macro(tmp_path):
    data = tmp_path / "data"
    writable_pack(data)
    titles = data / "workbench" / "jobnorm" / "titles.csv"
    titles.write_text(titles.read_text().splitlines()[0] + "\n")  # header only
    results = evaluate(TfidfRankingModel(), ["JobNorm", "SkillNorm"], "val", data)
    assert "JobNorm" not in results["tasks"] and results["no_queries"]["JobNorm"]["n_queries"] == 0
    macro = results["macro"]
    assert macro["covers"] == ["SkillNorm"] and macro["not_covered"] == ["JobNorm"]
    assert macro["map"] == pytest.approx(results["tasks"]["SkillNorm"]["map"])
    json_path, md_path = write_results(results, tmp_path / "run", title="t")
    assert _strict_json(json_path)["no_queries"]["JobNorm"]["reason"] == "the split has no queries"
    text = md_path.read_text()
    assert "| JobNorm | no queries |" in text and "JobNorm: no queries" in text and "nan" not in text.lower()
    only_empty = evaluate(TfidfRankingModel(), ["JobNorm"], "val", data)
    assert only_empty["macro"]["map"] is None and only_empty["tasks"] == {}
    assert _strict_json(write_results(only_empty, tmp_path / "empty", title="t")[0])["macro"]["map"] is None


def test_results_json_is_strict_even_with_non_finite_numbers(tmp_path):
    results = {"model": "m", "split": "val", "max_queries": None, "seconds": {"total": float("inf")},
               "tasks": {"JobNorm": {"map": float("nan"), "rp@10": 0.5, "n_queries": 1, "n_targets": 2,
                                     "seconds": 0.0}},
               "unavailable": {}, "macro": {"map": float("nan"), "rp@10": 0.5, "covers": ["JobNorm"]}}
    loaded = _strict_json(write_results(results, tmp_path, title="t")[0])
    assert loaded["tasks"]["JobNorm"]["map"] is None and loaded["seconds"]["total"] is None


# ---------------------------------------------------------------------------------------------------------
# 5. Results already in place are kept, not overwritten
# ---------------------------------------------------------------------------------------------------------


def test_write_results_keeps_the_previous_files(tmp_path, caplog):
    first = evaluate(TfidfRankingModel(), ["JobNorm"], "val", MINI_DATA)
    json_path, md_path = write_results(first, tmp_path, title="first")
    stamp = dt.datetime(2026, 12, 1, 21, 30, 0).timestamp()
    for path in (json_path, md_path):
        os.utime(path, (stamp, stamp))
    with caplog.at_level(logging.WARNING, logger="uwe_lightning.workbench.report"):
        write_results({**first, "model": "second"}, tmp_path, title="second")
    kept_json, kept_md = tmp_path / "results.20261201T213000.json", tmp_path / "results.20261201T213000.md"
    assert json.loads(kept_json.read_text())["model"] == first["model"] and "### first" in kept_md.read_text()
    assert json.loads(json_path.read_text())["model"] == "second"
    assert "results.20261201T213000.json" in caplog.text and "results.20261201T213000.md" in caplog.text
    os.utime(json_path, (stamp, stamp))
    assert keep_previous(json_path).name == "results.20261201T213000-1.json"  # never over an older copy
    assert keep_previous(tmp_path / "absent.json") is None


def test_evaluate_cli_twice_keeps_results_and_published_files(tmp_path):
    from uwe_lightning.cli.evaluate import run

    cfg = _evaluate_cfg(tmp_path, "model=tfidf", f"publish={tmp_path / 'published'}")
    run(cfg)
    run(cfg)
    for folder, files in ((tmp_path / "run", ("results.json", "results.md", "run_info.json")),
                          (tmp_path / "published", ("results.json", "results.md"))):
        names = sorted(p.name for p in folder.iterdir())
        assert len(names) == 2 * len(files) and set(files) <= set(names), names  # each file and its kept copy
        assert not [n for n in names if n.startswith(".")]


# ---------------------------------------------------------------------------------------------------------
# 6. Left padding
# ---------------------------------------------------------------------------------------------------------


def test_left_padding_gives_the_same_token_embeddings(tiny_model_dir):
    encoder = Encoder.from_pretrained(str(tiny_model_dir))
    texts = ["python", "develop software for the team", "care", "plan a construction safety project now"]
    right = encoder.encode(texts, batch_size=len(texts))
    encoder.tokenizer.padding_side = "left"
    batch = encoder.tokenize(texts)
    assert not bool(batch["attention_mask"][:, 0].all())  # really left-padded
    left = encoder.encode(texts, batch_size=len(texts))
    for a, b in zip(right, left, strict=True):
        assert a.shape == b.shape
        assert_close_to_scale(a, b)
    # trimmed() keeps the real tokens of a left-padded subset (padding in front)
    assert not encoder.training and not encoder.backbone.training  # encode() left it in eval mode
    tokens = encoder(batch["input_ids"], batch["attention_mask"])
    short = tokens[slice(2, 3)].trimmed()  # "care": the batch's widest padding
    assert bool(short.mask.all()) and scaled_mismatch(short.embeddings[0], left[2]) is None


def test_trimmed_drops_padding_at_both_ends():
    mask = torch.tensor([[False, True, True, False], [False, False, True, False]])
    emb = torch.arange(8.0).reshape(2, 4, 1)
    out = TokenEmbeddings(emb, mask).trimmed()
    assert out.mask.tolist() == [[True, True], [False, True]] and out.embeddings[:, :, 0].tolist() == [[1, 2], [5, 6]]


# ---------------------------------------------------------------------------------------------------------
# 7. Models that do not resolve
# ---------------------------------------------------------------------------------------------------------


def test_unknown_model_names_say_what_would_work(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"model 'foo' is not a known backbone.*`mpnet`/`minilm`.*org/name"):
        resolve_backbone("foo")
    missing = tmp_path / "runs" / "x" / "best_model"
    with pytest.raises(ModelNotFoundError, match=rf"model directory '{missing}' does not exist"):
        resolve_backbone(str(missing))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="holds no config.json"):
        resolve_backbone(str(tmp_path / "empty"))
    with pytest.raises(ModelNotFoundError, match=r"backbone 'minilm' is not assembled.*make models") as err:
        resolve_backbone("minilm", tmp_path / "no-models")
    assert "python -m uwe_lightning.model.backbones" in str(err.value)  # what a pip user runs instead
    assert "UWE_MODEL_DIR" in str(err.value) and "model.backbone=" in str(err.value)
    assert "sentence-transformers/all-MiniLM-L6-v2" in str(err.value)
    assert resolve_backbone("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"


def test_hub_id_that_cannot_load_is_model_not_found(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotFoundError, match=r"model 'no-such-org/no-such-model' could not be loaded"):
        Encoder.from_pretrained("no-such-org/no-such-model")
    with pytest.raises(ModelNotFoundError, match="foo"):
        Ranker.from_pretrained("foo")


# ---------------------------------------------------------------------------------------------------------
# 8. File modes
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_written_files_are_0644_whatever_the_umask(ranker, tmp_path, umask):
    from uwe_lightning.cli.evaluate import publish

    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "plain.txt", "x")
        ranker.index(SKILLS, cache_dir=tmp_path / "cache")
        json_path, md_path = write_results(evaluate(TfidfRankingModel(), ["JobNorm"], "val", MINI_DATA),
                                           tmp_path / "run", title="t")
        published = publish(tmp_path / "published", (json_path, md_path))
    finally:
        os.umask(previous)
    files = [tmp_path / "plain.txt", ranker.last_index_path, json_path, md_path, *published]
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o644, path
    for made in (tmp_path / "cache", tmp_path / "run", tmp_path / "published"):  # made by the writers
        assert made.stat().st_mode & 0o777 == 0o755, made
