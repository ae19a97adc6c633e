"""``python -m uwe_lightning.rank``: rank a target space for queries from the command line (``conf/rank.yaml``).

``python -m uwe_lightning.rank queries='[data scientist,nurse]' targets=esco_skills k=5`` loads the model,
loads the encoded target space from the cache (or encodes and caches it), ranks, prints the top k per query
and writes ``rankings.json`` into the run directory (one already there is kept as ``rankings.<its mtime>.json``).
Which list is the target space is the direction: ``esco_skills`` ranks skills for job titles,
``esco_occupations`` occupations for skills, ``file`` any list: one target text a line, or a table with id and text
columns (``targets_file=skills.csv``, header ``uri,label`` detected, or ``targets_columns=[id,text]``; CSV, TSV,
parquet, JSONL), whose ids are kept in the output.
``out=rankings.jsonl`` (or ``.csv``) writes one row per query x rank (query, rank, id, label, score) and shows a
progress bar instead of printing every query: the batch mode for many queries.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from uwe_lightning.cli.errors import hydra_entry_point, refuse_added_keys, run_reporting_user_errors
from uwe_lightning.io import (
    ConfigError,
    atomic_write_text,
    check_whole_number,
    make_dirs,
    strict_json,
)
from uwe_lightning.paths import CONF_DIR, resolve_cache_dir
from uwe_lightning.ranking.backends import index_for_space
from uwe_lightning.ranking.index import check_index_settings, describe_index
from uwe_lightning.ranking.results import ROW_FIELDS, top_rows
from uwe_lightning.ranking.targets import (  # noqa: F401  (re-exported: the names rank has always offered)
    DIRECTIONS,
    TARGET_SOURCES,
    TargetSpace,
    load_targets,
    read_lines,
    read_numbered_lines,
)
from uwe_lightning.ranking.texts import is_blank
from uwe_lightning.training.jobrecord import accept_run
from uwe_lightning.workbench.report import keep_previous

if TYPE_CHECKING:
    from uwe_lightning.ranking.index import TargetIndex
    from uwe_lightning.ranking.ranker import Ranker

#: What ``out=`` may end in: one row per query x rank either way.
OUT_FORMATS = (".jsonl", ".csv")
#: The run directory's summary (and the rankings themselves without ``out=``); an earlier one is kept under
#: its modification time (``rankings.<time>.json``).
RANKINGS_FILE = "rankings.json"


def collect_queries(queries, queries_file) -> list[str]:
    """``queries`` (a list or one string) followed by the lines of ``queries_file``; never empty.

    A query of only spaces or invisible characters (zero-width, BOM, ...) is a :class:`ConfigError` naming
    ``queries[i]``; such lines of ``queries_file`` are skipped like blank lines.
    """
    if queries is None:
        queries = []
    elif isinstance(queries, (str, int, float)):
        queries = [queries]
    texts = [str(q).strip() for q in queries]
    blank = [i for i, q in enumerate(texts) if is_blank(q)]
    if blank:
        shown = "" if not texts[blank[0]] else f" (only invisible characters: {texts[blank[0]]!r})"
        raise ConfigError(f"queries[{blank[0]}] is empty{shown}: give a text to rank targets for")
    if queries_file:
        texts += read_lines(queries_file, "queries_file")
    if not texts:
        raise ConfigError("no queries: give queries='[text one,text two]' or queries_file=<path> (one text a line)")
    return texts


def check_config(cfg: DictConfig) -> None:
    """Reject bad settings before the model loads and the target space is encoded (minutes, not seconds)."""
    check_whole_number(cfg.get("k"), "k")
    check_whole_number(cfg.get("batch_size"), "batch_size")
    check_whole_number(cfg.get("max_length"), "max_length", optional=True)
    check_whole_number(cfg.get("threads"), "threads", optional=True)
    if cfg.direction and cfg.direction not in DIRECTIONS:
        raise ConfigError(f"direction must be one of {sorted(DIRECTIONS)} or null, got {cfg.direction!r}")
    source = DIRECTIONS.get(cfg.direction, cfg.targets) if cfg.direction else cfg.targets
    if source not in TARGET_SOURCES:
        raise ConfigError(f"targets must be one of {list(TARGET_SOURCES)}, got {source!r}")
    if source == "file" and not cfg.targets_file:
        raise ConfigError("targets=file needs targets_file=<path> (one target text a line)")
    out = cfg.get("out")
    check_index_settings(cfg.get("index"))
    if out is not None and (not isinstance(out, str) or Path(out).suffix.lower() not in OUT_FORMATS):
        raise ConfigError(f"out must be a file ending in {' or '.join(OUT_FORMATS)} (one row per query x rank), "
                          f"got {out!r}; e.g. out=rankings.jsonl")


def write_rows(path: str | Path, queries: list[str], ranked: list[list[dict]]) -> int:
    """One row per query x rank (``query`` then :data:`ROW_FIELDS`) as JSONL or CSV, written atomically."""
    rows = [{"query": q, **row} for q, top in zip(queries, ranked, strict=True) for row in top]
    if Path(path).suffix.lower() == ".csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["query", *ROW_FIELDS], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    else:
        text = "".join(strict_json(row, ensure_ascii=False) + "\n" for row in rows)
    atomic_write_text(path, text)
    return len(rows)


def rank_with_progress(
    ranker: Ranker, queries: list[str], space: TargetIndex, k: int, chunk: int, show: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`Ranker.rank` over ``queries`` in chunks of ``chunk``, with a progress bar (batch mode)."""
    from tqdm.auto import tqdm

    scores, index = [], []
    with tqdm(total=len(queries), unit="query", desc="rank", disable=not show) as bar:
        for start in range(0, len(queries), chunk):
            part = queries[start : start + chunk]
            s, i = ranker.rank(part, space, k=k)
            scores.append(s)
            index.append(i)
            bar.update(len(part))
    return torch.cat(scores), torch.cat(index)


def format_ranking(query: str, scores: list[float], texts: list[str]) -> str:
    lines = [f"query: {query}"]
    lines += [f"  {rank:>3}. {score:.4f}  {text}" for rank, (score, text) in enumerate(zip(scores, texts, strict=True), 1)]
    return "\n".join(lines)


def run(cfg: DictConfig, out_dir: str | Path) -> dict:
    """Everything the CLI does, given a composed config and a run directory; returns what it writes."""
    from uwe_lightning.cli.loading import model_spec, ranker_from_config

    check_config(cfg)
    queries = collect_queries(
        OmegaConf.to_container(cfg.queries) if isinstance(cfg.queries, ListConfig) else cfg.queries,
        cfg.queries_file,
    )
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    source = DIRECTIONS.get(cfg.direction, cfg.targets) if cfg.direction else cfg.targets
    targets = load_targets(source, cfg.paths.data_dir, cfg.targets_file, cfg.esco_version,
                           cfg.get("targets_columns"))
    spec = model_spec(cfg)
    ranker = ranker_from_config(cfg, "rank", spec)
    ranker.display_name = str(spec.backbone)
    t0 = time.perf_counter()
    cache_dir = resolve_cache_dir(cfg.paths.cache_dir) / "targets" if cfg.cache and not cfg.cache_file else None
    space = index_for_space(ranker, targets.ids, targets.texts, targets.source, cfg.get("index"),
                            cache_dir=cache_dir, cache_file=cfg.cache_file, show_progress=cfg.show_progress)
    index_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    out_file = cfg.get("out")
    if out_file:
        scores, index = rank_with_progress(ranker, queries, space, cfg.k, cfg.batch_size, cfg.show_progress)
    else:
        scores, index = ranker.rank(queries, space, k=cfg.k)
    rank_s = time.perf_counter() - t1

    accept_run(cfg)  # the run is accepted: Hydra's record and the log go into the run directory from here on
    if out_file:  # batch mode: the rows go to the file, rankings.json keeps the summary
        written = write_rows(out_file, queries, top_rows(scores, index, targets.ids, targets.texts))
        listed: dict = {"out": {"path": str(out_file), "rows": written}}
    else:
        results = []
        for query, row_scores, row_index in zip(queries, scores.tolist(), index.tolist(), strict=True):
            texts = [targets.texts[i] for i in row_index]
            print(format_ranking(query, row_scores, texts), flush=True)
            results.append({
                "query": query,
                "top": [{"rank": r, "index": i, "id": targets.ids[i], "text": targets.texts[i], "score": s}
                        for r, (i, s) in enumerate(zip(row_index, row_scores, strict=True), 1)],
            })
        listed = {"results": results}
    report = {
        "model": ranker.model_id,
        "scorer": ranker.spec.name,
        "tau": ranker.spec.tau,
        "max_length": ranker.effective_max_length(),
        "device": str(ranker.device),
        "targets": {
            "source": targets.source, "n": len(targets.texts), "pooled": ranker.pooled("target"),
            "index": describe_index(space),
            "cache_file": str(ranker.last_index_path) if ranker.last_index_path else None,
            "cache_hit": ranker.last_index_hit,
        },
        "k": int(scores.shape[1]),
        "seconds": {"target_space": round(index_s, 3), "rank": round(rank_s, 3)},
        "n_queries": len(queries),
        **listed,
    }
    out = Path(out_dir)
    make_dirs(out)
    text = strict_json(report, indent=1, ensure_ascii=False)
    keep_previous(out / RANKINGS_FILE)  # an earlier rank into this directory keeps its rankings, as evaluate does
    atomic_write_text(out / RANKINGS_FILE, text)
    hit = "loaded from cache" if ranker.last_index_hit else "encoded"
    if space.backend != "exact":
        hit = f"in {space.backend} index {space.where}"
    wrote = f"{out_file} ({listed['out']['rows']} rows) and {out / RANKINGS_FILE}" if out_file else out / RANKINGS_FILE
    print(f"[rank] {len(targets.texts)} targets ({targets.source}) {hit} in {index_s:.1f}s; "
          f"{len(queries)} queries ranked in {rank_s:.2f}s; wrote {wrote}", flush=True)
    return report


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="rank")
def _main(cfg: DictConfig) -> None:
    from uwe_lightning.ranking.cache import CacheError

    def ranked() -> dict:
        refuse_added_keys("rank")
        try:
            return run(cfg, cfg.paths.output_dir)
        except (ValueError, TypeError, CacheError) as err:  # bad queries, targets, k, cache file
            raise ConfigError(str(err)) from err

    run_reporting_user_errors("rank", ranked)


main = hydra_entry_point(_main)
