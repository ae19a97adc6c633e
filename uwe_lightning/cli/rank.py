"""``python -m uwe_lightning.rank``: rank a target space for queries from the command line (``conf/rank.yaml``).

``python -m uwe_lightning.rank queries='[data scientist,nurse]' targets=esco_skills k=5`` loads the model,
loads the encoded target space from the cache (or encodes and caches it), ranks, prints the top k per query
and writes ``rankings.json`` into the run directory. Which list is the target space is the direction:
``esco_skills`` ranks skills for job titles, ``esco_occupations`` occupations for skills, ``file`` any list.
``out=rankings.jsonl`` (or ``.csv``) writes one row per query x rank (query, rank, id, label, score) and shows a
progress bar instead of printing every query: the batch mode for many queries.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from uwe_lightning.cli.errors import hydra_entry_point, run_reporting_user_errors
from uwe_lightning.io import (
    ConfigError,
    DataError,
    atomic_write_text,
    check_whole_number,
    line_of_byte,
    strict_json,
)
from uwe_lightning.paths import CONF_DIR, resolve_cache_dir
from uwe_lightning.ranking.results import ROW_FIELDS, top_rows
from uwe_lightning.ranking.texts import is_blank

if TYPE_CHECKING:
    from uwe_lightning.ranking.packed import EncodedTexts
    from uwe_lightning.ranking.ranker import Ranker

TARGET_SOURCES = ("esco_skills", "esco_occupations", "file")
DIRECTIONS = {"job2skill": "esco_skills", "skill2job": "esco_occupations"}
#: What ``out=`` may end in: one row per query x rank either way.
OUT_FORMATS = (".jsonl", ".csv")


@dataclass
class TargetSpace:
    """Target texts with an id per text (ESCO URI, or ``file:line``) and where they came from."""

    source: str
    texts: list[str]
    ids: list[str]


def read_numbered_lines(path: str | Path, what: str) -> list[tuple[int, str]]:
    """``(line number, stripped text)`` of the non-blank lines of a UTF-8 text file (a leading BOM is dropped;
    a line of only invisible characters counts as blank). A missing or empty file, or bytes that are not UTF-8,
    are a :class:`DataError` naming the file (and the line)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{what} {path} is not a file")
    data = path.read_bytes()
    data = data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = line_of_byte(data, err.start)
        raise DataError(f"{what} {path}: line {line}: not valid UTF-8 (byte 0x{data[err.start]:02x}); "
                        "save the file as UTF-8") from err
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    numbered = [(i, line.strip()) for i, line in enumerate(lines, start=1) if not is_blank(line)]
    if not numbered:
        raise DataError(f"{what} {path} holds no text (one text a line)")
    return numbered


def read_lines(path: str | Path, what: str) -> list[str]:
    """Non-blank, stripped lines of a text file; see :func:`read_numbered_lines`."""
    return [text for _, text in read_numbered_lines(path, what)]


def load_targets(source: str, data_dir=None, targets_file=None, esco_version: str = "v1.2.0") -> TargetSpace:
    """The target space ``source``: ESCO skill / occupation preferred labels, or the lines of a file."""
    if source == "file":
        if not targets_file:
            raise ValueError("targets=file needs targets_file=<path> (one target text a line)")
        numbered = read_numbered_lines(targets_file, "targets_file")
        return TargetSpace(f"file:{targets_file}", [t for _, t in numbered], [f"line:{n}" for n, _ in numbered])
    from uwe_lightning import esco

    if source == "esco_skills":
        frame = esco.load_skills(data_dir, esco_version)
    elif source == "esco_occupations":
        frame = esco.load_occupations(data_dir, esco_version)
    else:
        raise ValueError(f"targets must be one of {list(TARGET_SOURCES)}, got {source!r}")
    return TargetSpace(f"{source}/{esco_version}", frame["label"].tolist(), frame["uri"].tolist())


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
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    atomic_write_text(path, text)
    return len(rows)


def rank_with_progress(
    ranker: Ranker, queries: list[str], space: EncodedTexts, k: int, chunk: int, show: bool
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
    targets = load_targets(source, cfg.paths.data_dir, cfg.targets_file, cfg.esco_version)
    spec = model_spec(cfg)
    ranker = ranker_from_config(cfg, "rank", spec)
    ranker.display_name = str(spec.backbone)
    t0 = time.perf_counter()
    cache_dir = resolve_cache_dir(cfg.paths.cache_dir) / "targets" if cfg.cache and not cfg.cache_file else None
    space = ranker.index(targets.texts, cache_dir=cache_dir, cache_file=cfg.cache_file,
                         show_progress=cfg.show_progress)
    index_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    out_file = cfg.get("out")
    if out_file:
        scores, index = rank_with_progress(ranker, queries, space, cfg.k, cfg.batch_size, cfg.show_progress)
    else:
        scores, index = ranker.rank(queries, space, k=cfg.k)
    rank_s = time.perf_counter() - t1

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
            "source": targets.source, "n": len(targets.texts), "pooled": space.pooled,
            "cache_file": str(ranker.last_index_path) if ranker.last_index_path else None,
            "cache_hit": ranker.last_index_hit,
        },
        "k": int(scores.shape[1]),
        "seconds": {"target_space": round(index_s, 3), "rank": round(rank_s, 3)},
        "n_queries": len(queries),
        **listed,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "rankings.json", strict_json(report, indent=1, ensure_ascii=False))
    hit = "loaded from cache" if ranker.last_index_hit else "encoded"
    wrote = f"{out_file} ({listed['out']['rows']} rows) and {out / 'rankings.json'}" if out_file else out / "rankings.json"
    print(f"[rank] {len(targets.texts)} targets ({targets.source}) {hit} in {index_s:.1f}s; "
          f"{len(queries)} queries ranked in {rank_s:.2f}s; wrote {wrote}", flush=True)
    return report


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="rank")
def _main(cfg: DictConfig) -> None:
    from uwe_lightning.ranking.cache import CacheError

    def ranked() -> dict:
        try:
            return run(cfg, cfg.paths.output_dir)
        except (ValueError, TypeError, CacheError) as err:  # bad queries, targets, k, cache file
            raise ConfigError(str(err)) from err

    run_reporting_user_errors("rank", ranked)


main = hydra_entry_point(_main)
