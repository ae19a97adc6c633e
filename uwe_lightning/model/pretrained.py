"""What a UWE model is: a shared encoder plus the scorer it ranks with, saved and loaded as one directory.

The saved directory is the one model format of this project: the backbone's ``save_pretrained`` output, its
tokenizer, and ``uwe.json``::

    {"uwe_format": 1, "scorer": "softmax", "tau": 0.1, "max_length": null, "train_max_length": 64,
     "provenance": {"backbone": "minilm", "step": 600, "val_metric": {...}, "source_checkpoint": "..."}}

``max_length`` is the inference token limit (``null``: the model's own limit, as in the paper). A plain Hugging
Face directory (no ``uwe.json``), ``mpnet`` / ``minilm`` (assembled by ``make models``) or, where a hub is
reachable, a hub id load as zero-shot models with the ``mean`` scorer. Exports written before the format was
versioned (flat ``backbone`` / ``step`` keys) still load. The training export, :class:`~uwe_lightning.ranking.
ranker.Ranker`, ``evaluate`` and ``bench`` all load through :meth:`UWEModel.from_pretrained`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from uwe_lightning.integrity import file_records
from uwe_lightning.io import atomic_write_text, publish_tree, strict_json
from uwe_lightning.model.backbones import backbone_identity, resolve_backbone
from uwe_lightning.model.card import CARD_FILE, render_card
from uwe_lightning.model.encoder import SAVED_CONFIG_FILE, Encoder, TokenEmbeddings
from uwe_lightning.model.scoring import ScorerSpec, get_scorer
from uwe_lightning.model.st_format import DENSE_DIR, FORMATS, write_sentence_transformers_files

UWE_CONFIG_FILE = SAVED_CONFIG_FILE
FORMAT_VERSION = 1
#: Keys of a pre-versioned ``uwe.json`` that are provenance, not settings.
_LEGACY_PROVENANCE = ("backbone", "step", "val_metric", "source_checkpoint")


MODEL_KINDS = ("encoder", "lexical", "sentence_transformers", "popularity")
#: Kinds without an encoder: the runner scores them itself (TF-IDF, the popularity prior of training edges).
NO_ENCODER_KINDS = ("lexical", "popularity")


@dataclass(frozen=True)
class ModelSpec:
    """What the ``model`` config group names: a neural encoder (``backbone``: a name of
    :mod:`~uwe_lightning.model.backbones`, a saved model or HF directory, a hub id), any sentence-transformers
    model (``kind: sentence_transformers``, ``backbone``: its directory or hub id; ``query_prompt`` /
    ``target_prompt`` replace its own prompts) or the lexical TF-IDF floor."""

    name: str
    kind: str = "encoder"
    backbone: str | None = None
    query_prompt: str | None = None
    target_prompt: str | None = None
    edges: Any = None  # kind popularity: the training edge file(s) whose skill frequencies rank the targets
    skill_vocab: str | None = None  # kind popularity: the vocabulary those edges name skills of

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"model.kind must be one of {MODEL_KINDS}, got {self.kind!r}")
        if self.kind not in NO_ENCODER_KINDS and not self.backbone:
            raise ValueError(f"model={self.name} needs model.backbone (a backbone name or a model directory)")


def load_model(spec: ModelSpec, scorer: str | None = None, tau: float | None = None,
               max_length: int | None = None, model_dir: str | Path | None = None) -> UWEModel:
    """The :class:`UWEModel` a ``model`` config names, for evaluate, rank and bench.

    ``scorer=None``: a saved UWE model's own scorer (``uwe.json``), else ``mean``. A sentence-transformers model
    gives one vector per text, so it ranks with ``mean`` (its own cosine) only.
    """
    if spec.kind in NO_ENCODER_KINDS:
        raise ValueError(f"model={spec.name} ({spec.kind}) has no encoder to load")
    if spec.kind == "sentence_transformers":
        if scorer not in (None, "mean"):
            raise ValueError(f"scorer={scorer}: model={spec.name} (sentence-transformers) gives one vector per "
                             "text; use scorer=mean (the model's own cosine similarity)")
        from uwe_lightning.model.st_encoder import load_sentence_transformer

        encoder = load_sentence_transformer(str(spec.backbone), spec.query_prompt, spec.target_prompt)
        model = UWEModel(encoder, "mean", max_length=max_length)  # type: ignore[arg-type]
        model.source_dir = Path(spec.backbone) if Path(str(spec.backbone)).is_dir() else None
        return model
    return UWEModel.from_pretrained(str(spec.backbone), scorer=scorer, tau=tau, max_length=max_length,
                                    model_dir=model_dir)


def read_uwe_config(model_dir: str | Path) -> dict[str, Any]:
    """``uwe.json`` of a saved model (``{}`` when absent); a malformed file is an error naming it."""
    path = Path(model_dir) / UWE_CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with scorer/tau/max_length, got {type(data).__name__}")
    version = data.get("uwe_format", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{path}: uwe_format {version!r} is newer than this uwe_lightning reads ({FORMAT_VERSION})")
    if "provenance" not in data:  # pre-versioned export: provenance keys at the top level
        data = {**data, "provenance": {k: data[k] for k in _LEGACY_PROVENANCE if k in data}}
    return data


class UWEModel(nn.Module):
    """A shared :class:`Encoder` and the :class:`ScorerSpec` it ranks with.

    Args:
        encoder: backbone + tokenizer (token embeddings with masks).
        scorer: a scorer name (``mean``, ``maxsim``, ``softmax``, ``softmax_ymean``) or a ScorerSpec.
        tau: the scorer's temperature when ``scorer`` is a name (``None``: its default).
        max_length: inference token limit (``None``: the model's own limit).
        train_max_length: the token cap it was trained with (recorded, not applied at inference).
        provenance: where it came from (backbone, step, validation metric, checkpoint); saved in ``uwe.json``.

    Example:
        >>> model = UWEModel.from_pretrained("minilm", scorer="softmax")      # doctest: +SKIP
        >>> model.score(["data engineer"], ["Python", "nursing"])              # doctest: +SKIP
        >>> model.save_pretrained("my-model")                                  # doctest: +SKIP
    """

    def __init__(
        self,
        encoder: Encoder,
        scorer: str | ScorerSpec = "mean",
        tau: float | None = None,
        max_length: int | None = None,
        train_max_length: int | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be >= 1 or None, got {max_length}")
        self.encoder = encoder
        self.scorer: ScorerSpec = scorer if isinstance(scorer, ScorerSpec) else get_scorer(scorer, tau)
        self.max_length = max_length
        self.train_max_length = train_max_length
        self.provenance: dict[str, Any] = dict(provenance or {})
        self.source_dir: Path | None = None  # the directory it was loaded from, when it was

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        scorer: str | None = None,
        tau: float | None = None,
        max_length: int | None = None,
        model_dir: str | Path | None = None,
    ) -> UWEModel:
        """Load a saved UWE model, a backbone name (``mpnet``, ``minilm``), a HF directory or a hub id.

        A saved model's ``uwe.json`` gives the defaults (scorer, tau, max_length); arguments override them (a
        tau saved for another scorer is not carried over). Anything else defaults to ``mean``.
        """
        path = resolve_backbone(str(name_or_path), model_dir)
        saved = read_uwe_config(path) if Path(path).is_dir() else {}
        if scorer is None:
            scorer = saved.get("scorer") or "mean"
            tau = saved.get("tau") if tau is None else tau
        elif tau is None and scorer == saved.get("scorer"):
            tau = saved.get("tau")
        if max_length is None and saved.get("max_length") is not None:
            max_length = int(saved["max_length"])
        provenance = saved.get("provenance")
        if not saved:  # a bare backbone (a zero-shot save): the card names its hub id and license, no local path
            identity = backbone_identity(str(name_or_path))
            named = str(name_or_path) if not Path(str(name_or_path)).expanduser().is_dir() else identity["name"]
            provenance = {"backbone": named, "base_model": identity["base_model"], "license": identity["license"]}
        model = cls(
            Encoder.from_pretrained(path),
            scorer=scorer,
            tau=tau,
            max_length=max_length,
            train_max_length=saved.get("train_max_length"),
            provenance=provenance,
        )
        if Path(path).is_dir():
            model.source_dir = Path(path)
        return model

    def config(self) -> dict[str, Any]:
        """The content of ``uwe.json``."""
        return {
            "uwe_format": FORMAT_VERSION,
            "scorer": self.scorer.name,
            "tau": self.scorer.tau,
            "max_length": self.max_length,
            "train_max_length": self.train_max_length,
            "provenance": self.provenance,
        }

    def save_pretrained(self, out_dir: str | Path, format: str = "sentence-transformers", **provenance: Any) -> Path:
        """Write weights, tokenizer, ``uwe.json``, the sentence-transformers files and a model card to
        ``out_dir``, replacing it atomically. ``uwe.json`` records the size and sha256 of the weights and
        tokenizer files; :meth:`Encoder.from_pretrained` checks them on every load.

        ``provenance`` entries are merged into the saved provenance. The directory is staged beside
        ``out_dir`` and renamed into place, so a reader never sees half a model. ``SentenceTransformer(out_dir)``
        then loads it without guessing (mean pooling + normalize at our inference token limit; see
        :mod:`~uwe_lightning.model.st_format`); ``format="pylate"`` writes the PyLate (ColBERT) variant of a
        ``maxsim`` model instead. Either way the directory loads here with :meth:`from_pretrained`.
        """
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
        if format == "pylate" and self.scorer.name != "maxsim":
            raise ValueError(f"format='pylate' scores with MaxSim, but this model's scorer is {self.scorer.name!r}: "
                             "load it with scorer='maxsim' first if that approximation is what you want")
        self.provenance.update(provenance)
        out = Path(out_dir)
        staging = out.with_name(f".{out.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        self.encoder.backbone.save_pretrained(staging)
        self.encoder.tokenizer.save_pretrained(staging)
        config = {**self.config(), "files": file_records(staging)}  # weights + tokenizer, checked when loaded
        (staging / UWE_CONFIG_FILE).write_text(strict_json(config, indent=2) + "\n")
        write_sentence_transformers_files(staging, self.encoder.hidden_size, self.effective_max_length(), config,
                                          format=format)
        atomic_write_text(staging / CARD_FILE, render_card(config, pylate=format == "pylate"))
        publish_tree(staging)  # 0755/0644 whatever the umask (transformers writes model.safetensors 0600)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            staging.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(out)
        return out

    def effective_max_length(self) -> int:
        return int(self.max_length or self.encoder.model_max_length())

    def embed(self, texts: Sequence[str], batch_size: int = 128, show_progress: bool = False,
              side: str = "target") -> list[torch.Tensor]:
        """Token embeddings ``[n_tokens, H]`` per text (fp32, CPU), at the inference token limit; ``side``
        (query / target) matters only for encoders with side prompts (sentence-transformers models)."""
        return self.encoder.encode(
            list(texts), batch_size=batch_size, max_length=self.effective_max_length(), show_progress=show_progress,
            side=side,
        )

    @torch.inference_mode()
    def score(self, queries: Sequence[str], targets: Sequence[str]) -> torch.Tensor:
        """All-pairs scores ``[len(queries), len(targets)]`` (small inputs; rank big target spaces with a Ranker)."""
        q = TokenEmbeddings.pad_cat([_one(t) for t in self.embed(queries, side="query")])
        y = TokenEmbeddings.pad_cat([_one(t) for t in self.embed(targets, side="target")])
        return self.scorer.fn(q, y).float()

    def __repr__(self) -> str:
        return (f"UWEModel(backbone={self.encoder.name!r}, scorer={self.scorer.name!r}, tau={self.scorer.tau}, "
                f"max_length={self.max_length})")


def write_model_card(model_dir: str | Path, test_markdown: str | None = None,
                     evaluations: list[dict[str, Any]] | None = None) -> Path:
    """(Re)write the model card of a saved model from its ``uwe.json``, with its test table and the same numbers
    as ``model-index`` rows (:func:`~uwe_lightning.workbench.report.model_index_rows`) when given."""
    path = Path(model_dir) / CARD_FILE
    pylate = (Path(model_dir) / DENSE_DIR).is_dir()
    atomic_write_text(path, render_card(read_uwe_config(model_dir), test_markdown, pylate=pylate,
                                        evaluations=evaluations))
    return path


def _one(tokens: torch.Tensor) -> TokenEmbeddings:
    return TokenEmbeddings(tokens.unsqueeze(0), torch.ones(1, tokens.shape[0], dtype=torch.bool))
