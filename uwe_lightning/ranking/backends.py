"""Which target index a target space gets (``index.*`` of ``rank`` / ``serve``): the in-memory exact index, or
the LanceDB engine above ``index.engine_above`` targets. Above both backends, so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from uwe_lightning.io import ConfigError
from uwe_lightning.ranking.engine import PROBE_FRACTION, LanceIndex
from uwe_lightning.ranking.index import ENGINE_ABOVE, ExactIndex, TargetIndex, choose_backend


def default_table(source: str, ranker) -> str:
    """A table name per target space, scorer and model: another model never meets this one's table."""
    import hashlib
    import re

    model = hashlib.sha256(str(ranker.checkpoint_id(allow_state_hash=True)).encode()).hexdigest()[:10]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", source).strip("_")[-60:] or "targets"
    return f"{slug}-{ranker.spec.name}-{model}"



def index_for_space(ranker, ids: Sequence[str], texts: Sequence[str], source: str, settings=None,
                    cache_dir: str | Path | None = None, cache_file: str | Path | None = None,
                    show_progress: bool = False) -> TargetIndex:
    """The target index ``rank`` and ``serve`` search: ``settings`` (``index.*`` of the config) choose the
    backend (:func:`choose_backend`); the exact one reads / fills the target cache under ``cache_dir``, the
    engine one syncs its table with ``ids`` / ``texts`` (encodes only what it does not hold yet)."""
    settings = dict(settings or {})
    backend = choose_backend(settings.get("backend", "auto"), len(texts),
                             int(settings.get("engine_above") or ENGINE_ABOVE))
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
        nprobes=None if settings.get("nprobes") is None else int(settings["nprobes"]),
        probe_fraction=float(settings.get("probe_fraction") or PROBE_FRACTION),
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
