"""``export st``: a saved UWE model as a standalone sentence-transformers model directory, checked.

A saved model (a run's ``best_model/``) already carries the sentence-transformers files
(:mod:`~uwe_lightning.model.st_format`); this export copies it into a directory of its own (to publish, to hand to a
team that uses sentence-transformers only) and checks that ``SentenceTransformer(<out>)`` embeds a few texts as our
:class:`~uwe_lightning.model.encoder.Encoder` does (mean pooling + normalize at our token limit), within a
tolerance scaled to the embedding norm. The copy is staged in a temporary directory beside ``out`` (files 0644,
directories 0755) and renamed into place only once written and checked, so a reader never sees half a model.

sentence-transformers gives one mean-pooled vector per text and compares them by cosine: that is this model's
ranking only for the ``mean`` scorer. A model trained with a token-level scorer (``softmax``, ``maxsim``,
``softmax_ymean``) is refused unless ``pooled=True`` asks for its mean-pooled embedding knowingly; what keeps its
own scorer is the ONNX export (``Ranker.from_pretrained(dir, query_backend="onnx")``) or, for ``maxsim``, the PyLate
format.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from uwe_lightning.io import (
    ConfigError,
    DataError,
    MissingDependencyError,
    make_dirs,
    publish_tree,
    require,
    strict_json,
)
from uwe_lightning.model.pretrained import UWE_CONFIG_FILE, UWEModel, read_uwe_config
from uwe_lightning.model.st_format import DENSE_DIR, MODULES_FILE

#: Texts embedded by both libraries at export time: titles, a skill, a one-character text, one past the token limit.
CHECK_TEXTS = ("data engineer", "registered nurse in an intensive care unit", "manage a team of software developers",
               "x", "Python", "operate forklifts and pallet jacks safely in a busy warehouse " * 40)
#: Largest abs difference allowed, as a fraction of the largest embedding norm (1 after normalize): float32
#: reordering between two implementations of the same forward pass is ~1e-6 of it.
DEFAULT_TOLERANCE = 1e-4
EXPORT_INFO_FILE = "export_info.json"
#: Scorers whose ranking sentence-transformers reproduces (one pooled vector per side, cosine).
POOLED_SCORERS = ("mean",)


def refusal(model_dir: Path, scorer: str | None) -> str | None:
    """Why ``model_dir`` cannot be exported as is (one line), or None."""
    if scorer in POOLED_SCORERS:
        return None
    instead = ("`python -m uwe_lightning.export onnx <dir>` (Ranker.from_pretrained(dir, query_backend='onnx') keeps "
               f"the {scorer} scorer)")
    if scorer == "maxsim":
        instead += (" or the PyLate format (UWEModel.from_pretrained(dir).save_pretrained(out, format='pylate'), "
                    "README 'PyLate')")
    return (f"{model_dir}: scorer {scorer!r} compares token embeddings, which sentence-transformers cannot "
            f"reproduce (it gives one mean-pooled vector per text): use {instead}; --pooled exports the mean-pooled "
            "embedding anyway (the mean scorer's ranking, not this model's)")


def check_source(model_dir: Path, pooled: bool) -> dict[str, Any]:
    """``uwe.json`` of a saved UWE model directory that sentence-transformers can load; one line otherwise."""
    if not model_dir.is_dir():
        raise ConfigError(f"export st: {model_dir} is not a directory; give a saved UWE model (a run's best_model/)")
    if not (model_dir / UWE_CONFIG_FILE).is_file():
        raise ConfigError(f"export st: {model_dir} has no {UWE_CONFIG_FILE}, so it is not a saved UWE model (a run's "
                          "best_model/); a backbone directory such as models/all-MiniLM-L6-v2 is a "
                          "sentence-transformers model already")
    uwe = read_uwe_config(model_dir)
    if (model_dir / DENSE_DIR).is_dir():
        raise ConfigError(f"export st: {model_dir} is in the PyLate format ({DENSE_DIR}/): load it with "
                          "pylate.models.ColBERT, or export the run's best_model/ instead")
    if not (model_dir / MODULES_FILE).is_file():
        raise ConfigError(f"export st: {model_dir} has no {MODULES_FILE}: re-save it with "
                          "UWEModel.from_pretrained(dir).save_pretrained(dir), which writes the sentence-transformers files")
    why = refusal(model_dir, uwe.get("scorer"))
    if why and not pooled:
        raise ConfigError(f"export st: {why}")
    return uwe


def our_embeddings(model_dir: Path, texts: tuple[str, ...]) -> torch.Tensor:
    """What sentence-transformers must give: our Encoder's token embeddings at our token limit, mean-pooled
    over the text's tokens and normalised (the ``mean`` scorer's vector). Loading checks the files' sha256."""
    model = UWEModel.from_pretrained(model_dir, scorer="mean")
    return torch.stack([F.normalize(tokens.mean(0), dim=-1) for tokens in model.embed(texts)])


def check_with_sentence_transformers(model_dir: Path, tolerance: float = DEFAULT_TOLERANCE,
                                     texts: tuple[str, ...] = CHECK_TEXTS) -> dict[str, Any]:
    """Load ``model_dir`` with ``SentenceTransformer`` and compare its embeddings of ``texts`` with ours.

    Returns the check record; raises :class:`MissingDependencyError` (the pip extra) when the package is missing,
    and :class:`DataError` when an embedding differs by more than ``tolerance`` x the largest embedding norm.
    """
    st = require("sentence_transformers", "export st's check (SentenceTransformer(<out>) vs our encoder)")
    want = our_embeddings(model_dir, texts)
    model = st.SentenceTransformer(str(model_dir), device="cpu")
    got = torch.as_tensor(model.encode(list(texts), batch_size=4, convert_to_numpy=True)).float()
    if got.shape != want.shape:
        raise DataError(f"export st: SentenceTransformer({model_dir}) gives embeddings of shape {tuple(got.shape)}, "
                         f"our encoder {tuple(want.shape)}")
    scale = float(want.norm(dim=-1).max())
    diff = float((got - want).abs().max())
    allowed = tolerance * scale
    record = {"sentence_transformers": getattr(st, "__version__", None), "texts": len(texts),
              "max_abs_diff": diff, "embedding_norm": scale, "tolerance": tolerance, "allowed": allowed,
              "max_seq_length": int(model.max_seq_length), "passed": diff <= allowed}
    if not record["passed"]:
        raise DataError(f"export st: SentenceTransformer({model_dir}) differs from our encoder by {diff:.3g} "
                         f"(allowed {allowed:.3g} = {tolerance:g} x embedding norm {scale:.3g}); the model directory "
                         "is not what sentence-transformers loads, nothing was published")
    return record


def _copy_model(source: Path, staging: Path) -> None:
    """The model's files into ``staging`` (links followed; its ``onnx/`` export and hidden files left out)."""
    for entry in sorted(source.iterdir()):
        if entry.name.startswith(".") or entry.name in ("onnx", EXPORT_INFO_FILE):
            continue
        if entry.is_dir():
            shutil.copytree(entry, staging / entry.name, symlinks=False)
        else:
            shutil.copyfile(entry, staging / entry.name)


def export_sentence_transformers(model_dir: str | Path, out: str | Path, pooled: bool = False,
                                 overwrite: bool = False, tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """Copy the saved model ``model_dir`` into ``out`` as a sentence-transformers model and check it.

    ``out`` must not exist unless ``overwrite`` (then it is replaced once the new copy is checked). Returns what
    ``<out>/export_info.json`` records: source, scorer, ``pooled``, and the check (``check.skipped`` with the pip
    command when sentence-transformers is not installed).
    """
    source, target = Path(model_dir), Path(out)
    uwe = check_source(source, pooled)
    if not tolerance > 0:
        raise ConfigError(f"export st: --tolerance {tolerance}: give a number > 0 (default {DEFAULT_TOLERANCE:g})")
    if target.resolve() == source.resolve() or source.resolve() in target.resolve().parents:
        raise ConfigError(f"export st: --out {target} is (inside) the model directory; give a directory of its own")
    if target.exists() and not overwrite:
        raise ConfigError(f"export st: {target} exists; give another --out or --overwrite to replace it")
    make_dirs(target.parent)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    try:
        _copy_model(source, staging)
        info: dict[str, Any] = {"source": str(source.resolve()), "scorer": uwe.get("scorer"), "tau": uwe.get("tau"),
                                "pooled": bool(pooled) and uwe.get("scorer") not in POOLED_SCORERS}
        try:
            info["check"] = check_with_sentence_transformers(staging, tolerance)
        except MissingDependencyError as err:
            info["check"] = {"skipped": str(err)}
        (staging / EXPORT_INFO_FILE).write_text(strict_json(info, indent=2) + "\n", encoding="utf-8")
        publish_tree(staging)
        _replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {**info, "path": str(target)}


def _replace_dir(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``; an existing ``target`` is moved aside first and removed after."""
    if not target.exists():
        staging.rename(target)
        return
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
    old.rmdir()
    target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
