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

import codecs
import csv
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from uwe_lightning.cli.errors import hydra_entry_point, refuse_added_keys, run_reporting_user_errors
from uwe_lightning.io import (
    ConfigError,
    DataError,
    atomic_write_text,
    check_whole_number,
    line_of_byte,
    make_dirs,
    strict_json,
)
from uwe_lightning.paths import CONF_DIR, resolve_cache_dir
from uwe_lightning.ranking.results import ROW_FIELDS, top_rows
from uwe_lightning.ranking.texts import is_blank
from uwe_lightning.training.jobrecord import accept_run
from uwe_lightning.workbench.report import keep_previous

if TYPE_CHECKING:
    from uwe_lightning.ranking.packed import EncodedTexts
    from uwe_lightning.ranking.ranker import Ranker

TARGET_SOURCES = ("esco_skills", "esco_occupations", "file")
DIRECTIONS = {"job2skill": "esco_skills", "skill2job": "esco_occupations"}
#: What ``out=`` may end in: one row per query x rank either way.
OUT_FORMATS = (".jsonl", ".csv")
#: The run directory's summary (and the rankings themselves without ``out=``); an earlier one is kept under
#: its modification time (``rankings.<time>.json``).
RANKINGS_FILE = "rankings.json"


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


#: Header names recognised in a ``targets_file`` table (case-insensitive): its id column and its text column.
ID_COLUMNS = ("uri", "id", "skill_id", "concepturi", "code")
TEXT_COLUMNS = ("label", "text", "preferredlabel", "name", "title")
TABLE_SUFFIXES = (".csv", ".tsv", ".tab")


def table_columns(path: Path, columns) -> tuple[str, str] | None:
    """The (id, text) columns of ``targets_file`` when it is a table: named by ``targets_columns``, or a header
    with a known id and text name (:data:`ID_COLUMNS`, :data:`TEXT_COLUMNS`); parquet / JSONL are always tables.
    None: a plain file, one target text a line (a comma is then part of the text)."""
    if columns:
        names = [str(c) for c in columns]
        if len(names) != 2:
            raise ConfigError(f"targets_columns must name two columns [id, text], got {names}")
        return names[0], names[1]
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES and path.is_file():
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            first = next((line for line in fh if line.strip()), "")
        header = next(csv.reader([first], delimiter="," if suffix == ".csv" else "\t"), [])
        by_name = {h.strip().casefold(): h.strip() for h in header}
        found_id = next((by_name[c] for c in ID_COLUMNS if c in by_name), None)
        found_text = next((by_name[c] for c in TEXT_COLUMNS if c in by_name), None)
        return (found_id, found_text) if found_id and found_text and len(header) >= 2 else None
    if suffix in (".parquet", ".jsonl", ".ndjson"):
        raise ConfigError(f"targets_file {path} is a {suffix[1:]} table: name its columns, e.g. "
                          "targets_columns=[uri,label] (id column, text column)")
    return None


def read_target_table(path: Path, id_column: str, text_column: str) -> TargetSpace:
    """Ids and texts of a target table (CSV/TSV/parquet/JSONL); an empty cell is an error naming its row."""
    from uwe_lightning.io import read_table

    frame = read_table(path)
    missing = [c for c in (id_column, text_column) if c not in frame.columns]
    if missing:
        raise DataError(f"targets_file {path}: no column(s) {missing} (found {list(frame.columns)}); "
                        "name the id and text columns with targets_columns=[<id>,<text>]")
    ids, texts = [], []
    for row, (ident, text) in enumerate(zip(frame[id_column], frame[text_column], strict=True), start=1):
        ident, text = ("" if v is None else str(v).strip() for v in (ident, text))
        if not ident or is_blank(text):
            raise DataError(f"targets_file {path}: row {row}: empty {id_column if not ident else text_column!r}")
        ids.append(ident)
        texts.append(text)
    if not texts:
        raise DataError(f"targets_file {path} holds no rows")
    return TargetSpace(f"file:{path}", texts, ids)


def load_targets(source: str, data_dir=None, targets_file=None, esco_version: str = "v1.2.0",
                 columns=None) -> TargetSpace:
    """The target space ``source``: ESCO skill / occupation preferred labels, or a file: a table with id and text
    columns (:func:`table_columns`; the ids are kept) or plain lines (ids ``line:<n>``)."""
    if source == "file":
        if not targets_file:
            raise ValueError("targets=file needs targets_file=<path> (one target text a line)")
        found = table_columns(Path(targets_file).expanduser(), columns)
        if found is not None:
            return read_target_table(Path(targets_file).expanduser(), *found)
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
        text = "".join(strict_json(row, ensure_ascii=False) + "\n" for row in rows)
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
    targets = load_targets(source, cfg.paths.data_dir, cfg.targets_file, cfg.esco_version,
                           cfg.get("targets_columns"))
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
    make_dirs(out)
    text = strict_json(report, indent=1, ensure_ascii=False)
    keep_previous(out / RANKINGS_FILE)  # an earlier rank into this directory keeps its rankings, as evaluate does
    atomic_write_text(out / RANKINGS_FILE, text)
    hit = "loaded from cache" if ranker.last_index_hit else "encoded"
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
