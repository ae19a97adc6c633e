"""Which target index a target space gets (``index.*`` of ``rank`` / ``serve``): the in-memory exact index, or
the LanceDB engine when the exact index would hold more than ``index.engine_above_gib`` GiB. Above both backends,
so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from uwe_lightning.io import ConfigError
from uwe_lightning.ranking.engine import PROBE_FRACTION, TOKEN_PROBE_FRACTION, LanceIndex
from uwe_lightning.ranking.index import (
    ENGINE_ABOVE_GIB,
    ExactIndex,
    TargetIndex,
    choose_backend,
    exact_space_bytes,
)

#: Texts tokenized to estimate a token-level space's size before encoding it.
TOKEN_SAMPLE = 1000


def default_table(source: str, ranker) -> str:
    """A table name per target space, scorer and model: another model never meets this one's table."""
    import hashlib
    import re

    model = hashlib.sha256(str(ranker.checkpoint_id(allow_state_hash=True)).encode()).hexdigest()[:10]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", source).strip("_")[-60:] or "targets"
    return f"{slug}-{ranker.spec.name}-{model}"



def estimated_space_bytes(ranker, texts: Sequence[str]) -> int:
    """The exact index's memory for ``texts`` before encoding them: one vector per target for a pooled scorer,
    else the mean token count of an evenly spaced sample of at most :data:`TOKEN_SAMPLE` texts per target."""
    tokens = 1.0
    if not ranker.pooled("target") and len(texts):
        step = max(1, len(texts) // TOKEN_SAMPLE)
        sample = [str(t) for t in texts[::step][:TOKEN_SAMPLE]]
        tokenizer = getattr(ranker.encoder, "tokenizer", None) or getattr(getattr(ranker.encoder, "model", None),
                                                                          "tokenizer", None)
        if tokenizer is None:  # an encoder without a Hugging Face tokenizer: ~1.3 word pieces per word + 2 specials
            tokens = sum(1.3 * len(t.split()) + 2 for t in sample) / len(sample)
        else:
            lengths = tokenizer(sample, truncation=True, max_length=ranker.effective_max_length())["input_ids"]
            tokens = sum(len(ids) for ids in lengths) / len(sample)
    per_value = 2 + (2 if ranker.target_precision == "fp16" else 4)  # the packed fp16 space + its prepared copy
    return exact_space_bytes(len(texts), tokens, ranker._hidden_size(), per_value)


def index_for_space(ranker, ids: Sequence[str], texts: Sequence[str], source: str, settings=None,
                    cache_dir: str | Path | None = None, cache_file: str | Path | None = None,
                    show_progress: bool = False) -> TargetIndex:
    """The target index ``rank`` and ``serve`` search: ``settings`` (``index.*`` of the config) choose the
    backend (:func:`choose_backend`); the exact one reads / fills the target cache under ``cache_dir``, the
    engine one syncs its table with ``ids`` / ``texts`` (encodes only what it does not hold yet)."""
    settings = dict(settings or {})
    backend, engine_above = settings.get("backend", "auto"), settings.get("engine_above")
    by_memory = backend == "auto" and engine_above is None
    backend = choose_backend(backend, len(texts), None if engine_above is None else int(engine_above),
                             estimated_space_bytes(ranker, texts) if by_memory else None,
                             float(settings.get("engine_above_gib") or ENGINE_ABOVE_GIB))
    if backend == "exact":
        return ExactIndex.from_texts(ranker, ids, texts, cache_dir=cache_dir, cache_file=cache_file,
                                     show_progress=show_progress)
    uri = settings.get("uri") or (Path(cache_dir).parent / "lancedb" if cache_dir else None)
    if uri is None:
        raise ConfigError("index.backend=lancedb needs index.uri (a directory, s3://..., or db://...) "
                          "when the cache is off")
    engine = LanceIndex(
        ranker, uri, table=settings.get("table") or default_table(source, ranker),
        candidates=int(settings.get("candidates") or 200),
        candidates_from=str(settings.get("candidates_from") or "auto"),
        nprobes=None if settings.get("nprobes") is None else int(settings["nprobes"]),
        probe_fraction=float(settings.get("probe_fraction") or PROBE_FRACTION),
        token_probe_fraction=float(settings.get("token_probe_fraction") or TOKEN_PROBE_FRACTION),
        build_batch=int(settings.get("build_batch") or 4096), read_only=settings.get("read_only"),
    )
    if engine.read_only:
        engine.attach(ids, texts)
        missing = len(texts) - engine.count()
        if missing:
            print(f"[index] warning: {engine.where} is read-only and holds {engine.count()} of {len(texts)} "
                  "targets; searching what it holds", flush=True)
    else:
        engine.build(ids, texts, show_progress=show_progress)
    return engine
