"""The enrichment steps as functions of plain arguments: which skills, generate one kind, merge, dry run.

Files each step writes into ``out_dir`` (edge files in the generic format, ``skill`` = the skill's URI):

* ``titles``: ``titles.csv`` (synthetic titles, one row per (skill, title)), ``titles.stats.json``,
  ``titles.failures.jsonl``;
* ``merge``: ``J.csv`` (synthetic titles merged into real titles, the unmatched ones as their own nodes),
  ``merge.stats.json``, ``merge.matches.csv`` (synthetic, real, cosine), ``merge.thresholds.png`` (Figure 5);
* ``paraphrases``: ``A.csv`` + stats / failures; ``sentences``: ``V.csv`` + stats / failures;
* ``dry_run``: ``dry_run.json`` (prompts, cached answers, estimated tokens and cost).

Every file is written atomically; rows are in skill order, then generation order.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uwe_lightning.data.edges import EDGE_COLUMNS
from uwe_lightning.enrichment.cache import ResponseCache, request_key
from uwe_lightning.enrichment.generate import Generator, Settings, SkillResult
from uwe_lightning.enrichment.merge import merge_titles, plot_thresholds
from uwe_lightning.enrichment.prompts import KINDS, Skill
from uwe_lightning.io import (
    ConfigError,
    DataError,
    atomic_write_json,
    atomic_write_text,
    read_table,
    strict_json,
)
from uwe_lightning.protocol.leakage import QueryGuard

if TYPE_CHECKING:
    from uwe_lightning.ranking.ranker import Ranker

Log = Callable[[str], None]
MERGED_TITLES_FILE = "J.csv"


def load_skill_list(spec: str, data_dir: str | os.PathLike | None = None, max_skills: int | None = None) -> list[Skill]:
    """``esco-<version>`` (the data pack's skills, file order) or a table with ``uri``, ``label`` and optionally
    ``description``; the first ``max_skills`` of them."""
    if spec.startswith("esco-"):
        from uwe_lightning.esco import load_skills

        frame = load_skills(data_dir, spec.removeprefix("esco-"))
    else:
        frame = read_table(Path(spec).expanduser())
        missing = [c for c in ("uri", "label") if c not in frame.columns]
        if missing:
            raise DataError(f"{spec}: skill table needs columns 'uri', 'label' (and 'description'); missing {missing}")
    descriptions = frame["description"] if "description" in frame.columns else [""] * len(frame)
    skills = [Skill(str(u).strip(), str(lbl).strip(), "" if d is None else str(d).strip())
              for u, lbl, d in zip(frame["uri"], frame["label"], descriptions, strict=True)]
    return skills[:max_skills] if max_skills is not None else skills


def write_edges(path: str | os.PathLike, rows: Sequence[tuple[str, str]]) -> Path:
    """``rows`` of (skill, text) as a CSV edge file (columns ``skill``, ``text``), atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EDGE_COLUMNS)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
    return Path(path)


def read_edge_rows(path: str | os.PathLike, what: str) -> list[tuple[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist: {what}")
    frame = read_table(path)
    return list(zip(frame["skill"].astype(str), frame["text"].astype(str), strict=True))


def _write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    atomic_write_text(path, "".join(strict_json(r, ensure_ascii=False) + "\n" for r in rows))


def summarize(results: Sequence[SkillResult], n: int) -> dict[str, Any]:
    """Counts over skills: items per skill, rounds, requests, cache hits, drops by reason and leaks by split."""
    counts: Counter = Counter()
    leaked: Counter = Counter()
    usage: Counter = Counter()
    for r in results:
        counts.update(r.counts)
        leaked.update(r.leaked)
        usage.update(r.usage)
    per_skill = [len(r.items) for r in results]
    return {
        "skills": len(results),
        "items": sum(per_skill),
        "items_per_skill": {"min": min(per_skill, default=0), "mean": round(sum(per_skill) / max(len(results), 1), 2),
                            "max": max(per_skill, default=0)},
        "skills_with_n_items": sum(k >= n for k in per_skill),
        "skills_without_items": sum(k == 0 for k in per_skill),
        "counts": dict(sorted(counts.items())),
        "dropped_leakage_by_split": dict(sorted(leaked.items())),
        "usage_new_requests": dict(sorted(usage.items())),
        "failures": sum(len(r.failures) for r in results),
    }


def check_examples(examples: Sequence[Sequence[str]], guard: QueryGuard | None) -> list[dict[str, Any]]:
    """The fixed prompt examples that equal an evaluation query, with the splits that hold them."""
    if guard is None:
        return []
    return [{"text": t, "splits": guard.hits(t)} for pair in examples for t in pair if guard.hits(t)]


def generate_kind(name: str, skills: Sequence[Skill], generator: Generator, out_dir: Path, concurrency: int,
                  show_progress: bool, log: Log, info: Mapping[str, Any]) -> dict[str, Any]:
    """Run one kind over ``skills``; write its edge file, stats and failure log; return the stats."""
    from tqdm.auto import tqdm

    kind = KINDS[name]
    start = time.perf_counter()
    bar = tqdm(total=len(skills), desc=f"[enrich] {name}", disable=not show_progress, unit="skill")
    try:
        results = generator.run(skills, concurrency=concurrency, progress=lambda: bar.update(1))
    finally:
        bar.close()
    rows = [(r.skill.uri, item) for r in results for item in r.items]
    write_edges(out_dir / kind.edge_file, rows)
    failures = [f for r in results for f in r.failures]
    _write_jsonl(out_dir / f"{name}.failures.jsonl", failures)
    stats = {"command": name, "graph": kind.graph, **info, **summarize(results, generator.settings.n),
             "http": dict(sorted(generator.client.counts.items())) if generator.client else {},
             "seconds": round(time.perf_counter() - start, 2), "edge_file": kind.edge_file}
    if name == "paraphrases":
        stats["prompt_examples_equal_to_queries"] = check_examples(generator.settings.examples, generator.guard)
        for hit in stats["prompt_examples_equal_to_queries"]:
            log(f"warning: prompt example {hit['text']!r} is a query of {', '.join(hit['splits'])} "
                "(the model sees it in every prompt; generated copies of it are dropped)")
    atomic_write_json(out_dir / f"{name}.stats.json", stats)
    c = stats["counts"]
    log(f"{name}: {stats['items']:,} items for {stats['skills']:,} skills ({stats['skills_with_n_items']:,} with "
        f"{generator.settings.n}); {c.get('new_requests', 0):,} new requests, {c.get('cache_hits', 0):,} cached; "
        f"{c.get('dropped_leakage', 0):,} dropped as evaluation queries; {stats['failures']:,} failures "
        f"-> {out_dir / kind.edge_file}")
    return stats


def run_merge(out_dir: Path, ranker: Ranker, real_titles: Sequence[str], threshold: float,
              thresholds: Sequence[float], max_matches: int | None, existing: set[tuple[str, str]] | None,
              log: Log, info: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``titles.csv`` into ``real_titles``; write ``J.csv``, the stats, the matches and the Figure 5 plot."""
    start = time.perf_counter()
    synthetic = read_edge_rows(out_dir / KINDS["titles"].edge_file, "run `python -m uwe_lightning.enrich titles` first")
    if not synthetic:
        raise DataError(f"{out_dir / KINDS['titles'].edge_file} holds no title to merge")
    result = merge_titles(synthetic, real_titles, ranker, threshold, thresholds, max_matches, existing)
    write_edges(out_dir / MERGED_TITLES_FILE, result.edges)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["synthetic", "real", "cosine"])
    writer.writerows(result.matches)
    atomic_write_text(out_dir / "merge.matches.csv", buffer.getvalue())
    stats = {"command": "merge", **info, **result.stats, "seconds": round(time.perf_counter() - start, 2)}
    atomic_write_json(out_dir / "merge.stats.json", stats)
    plot_thresholds(stats, out_dir / "merge.thresholds.png")
    log(f"merge: {stats['matched_titles']:,} of {stats['synthetic_titles']:,} synthetic titles match a real title "
        f"at >= {threshold} ({stats['matches']:,} matches, {stats['real_titles_enriched']:,} real titles enriched); "
        f"{stats['unmatched_titles']:,} kept as their own nodes -> {out_dir / MERGED_TITLES_FILE}")
    return stats


def dry_run(generators: Mapping[str, Generator], skills: Sequence[Skill], chars_per_token: float,
            output_tokens_per_item: Mapping[str, float], prices: Mapping[str, Any] | None) -> dict[str, Any]:
    """Prompts of the first round per kind, how many are cached (the rest are the requests to send), their
    estimated tokens and, with ``prices`` (:func:`~.prices.price_of`), the cost.

    Input tokens = characters of the messages / ``chars_per_token`` + 4 per message; output tokens =
    ``n * output_tokens_per_item[kind] + 10``. Retries (rounds after the first) come on top. ``est_*`` count
    every prompt; ``*_to_send`` only those not answered in the cache yet (what the run would pay for).
    """
    report: dict[str, Any] = {"skills": len(skills), "chars_per_token": chars_per_token, "kinds": {}}
    totals = Counter()
    for name, gen in generators.items():
        kind = Counter()
        for skill in skills:
            request = gen.request(skill, gen.settings.n, (), 0)
            chars = sum(len(m["content"]) for m in request["messages"])
            n_in = math.ceil(chars / chars_per_token) + 4 * len(request["messages"])
            n_out = math.ceil(gen.settings.n * output_tokens_per_item[name]) + 10
            cached = request_key(request) in gen.cache
            kind.update(est_input_tokens=n_in, est_output_tokens=n_out, cached=int(cached))
            if not cached:
                kind.update(input_tokens_to_send=n_in, output_tokens_to_send=n_out)
        report["kinds"][name] = {"prompts": len(skills), "cached": kind["cached"],
                                 "requests_to_send": len(skills) - kind["cached"], "n_per_skill": gen.settings.n,
                                 "max_rounds": gen.settings.max_rounds, "est_input_tokens": kind["est_input_tokens"],
                                 "est_output_tokens": kind["est_output_tokens"],
                                 "output_tokens_per_item": output_tokens_per_item[name]}
        totals.update(kind)
    report["prompts"] = sum(k["prompts"] for k in report["kinds"].values())
    report["requests_to_send"] = sum(k["requests_to_send"] for k in report["kinds"].values())
    report["est_input_tokens"] = totals["est_input_tokens"]
    report["est_output_tokens"] = totals["est_output_tokens"]
    report["input_tokens_to_send"] = totals["input_tokens_to_send"]
    report["output_tokens_to_send"] = totals["output_tokens_to_send"]
    if prices and prices.get("input_per_million") is not None and prices.get("output_per_million") is not None:
        def cost(n_in: int, n_out: int) -> float:
            return round(n_in / 1e6 * prices["input_per_million"] + n_out / 1e6 * prices["output_per_million"], 2)

        report["est_cost"] = cost(totals["est_input_tokens"], totals["est_output_tokens"])
        report["est_cost_to_send"] = cost(totals["input_tokens_to_send"], totals["output_tokens_to_send"])
        report["prices_per_million"] = dict(prices)
    return report


def new_cache(out_dir: Path, cache_dir: str | os.PathLike | None) -> ResponseCache:
    return ResponseCache(Path(cache_dir) if cache_dir else out_dir / "cache")


def default_settings(name: str, cfg: Mapping[str, Any]) -> Settings:
    """A step's :class:`Settings` from its config section (``n``, ``max_rounds``, ``min_words``, ``examples``)."""
    pairs = list(cfg.get("examples") or ())
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise ConfigError(f"{name}.examples[{i}] must be a pair [skill, paraphrase], got {pair!r}")
    examples = tuple(tuple(pair) for pair in pairs) or Settings().examples
    return Settings(n=int(cfg["n"]), max_rounds=int(cfg["max_rounds"]), min_words=int(cfg.get("min_words", 1)),
                    examples=examples)  # type: ignore[arg-type]

