"""Real target texts of the data pack for the scale benchmark (``make bench-scale``), and the encoded space.

Order (each text kept once, first occurrence wins): ESCO v1.2.0 skill preferred + alt labels, ESCO v1.2.0
occupation preferred + alt labels, JobNorm vacancy titles (val + test), Job2Skill vacancy titles, O*NET 29.2
alternate + reported titles, O*NET task statements, SkillExtract and SkillSkape vacancy sentences, ESCO skill
descriptions. That is every real text of the pack (:func:`real_texts`); a larger space is augmented *by
combination only* (:func:`scale_texts`): ``"<job title> - <skill label>"`` for seeded random pairs of a real
title and a real skill label, so every augmented text is two real texts joined, never a paraphrase or a copy.

Queries: JobNorm test titles (seeded sample), removed from the target texts so no query finds itself.

``python experiments/bench/scale_texts.py --n 100000 --cache outputs/scale/cache`` encodes the first ``n`` texts
with MiniLM (token level, the cache every scale run reads) and logs the encoding throughput.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _pack(data_dir: str | Path | None) -> Path:
    from uwe_lightning.paths import resolve_data_dir

    return Path(resolve_data_dir(data_dir))


def query_titles(data_dir=None, n: int = 200, seed: int = 0) -> list[str]:
    """``n`` distinct JobNorm test titles, seeded."""
    frame = pd.read_csv(_pack(data_dir) / "workbench/jobnorm/titles.test.csv")
    titles = list(dict.fromkeys(str(t).strip() for t in frame["vacancyTitle"] if str(t).strip()))
    pick = np.random.default_rng(seed).permutation(len(titles))[:n]
    return [titles[i] for i in sorted(pick)]


def _column(path: Path, column: str, sep: str = ",") -> list[str]:
    frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    return [str(t).strip() for t in frame[column]]


def real_texts(data_dir=None) -> dict[str, list[str]]:
    """Every real text of the pack by source, in the order above (not yet deduplicated across sources)."""
    from uwe_lightning import esco

    root = _pack(data_dir)
    skills = esco.load_skills(data_dir, "v1.2.0")
    occupations = esco.load_occupations(data_dir, "v1.2.0")
    onet = root / "extra/onet-29.2"
    parts = {
        "esco_skill_labels": esco.skill_texts_with_alt_labels(data_dir, "v1.2.0"),
        "esco_occupation_labels": list(occupations["label"]) + [a for alts in occupations["alt_labels"] for a in alts],
        "jobnorm_titles": (_column(root / "workbench/jobnorm/titles.csv", "vacancyTitle")
                           + _column(root / "workbench/jobnorm/titles.test.csv", "vacancyTitle")),
        "job2skill_titles": [str(t).strip() for t in
                             pd.read_parquet(root / "workbench/job2skill_val/job_skill_val.parquet").iloc[:, 0]],
        "onet_titles": (_column(onet / "Alternate Titles.txt", "Alternate Title", "\t")
                        + _column(onet / "Sample of Reported Titles.txt", "Reported Job Title", "\t")),
        "onet_tasks": _column(onet / "Task Statements.txt", "Task", "\t"),
        "vacancy_sentences": [s for f in sorted((root / "workbench/skill_extraction").glob("*_annotations.csv"))
                              for s in _column(f, "sentence")]
                             + [s for f in ("train", "dev", "test")
                                for s in _column(root / f"extra/skillskape/{f}.csv", "sentence")],
        "esco_skill_descriptions": [str(d).strip() for d in skills.get("description", [])],
    }
    return parts


def scale_texts(n: int, data_dir=None, seed: int = 0, queries: list[str] | None = None
                ) -> tuple[list[str], dict[str, int]]:
    """The first ``n`` distinct real texts (queries excluded), then combinations; and the count per source."""
    excluded = set(queries or [])
    seen: dict[str, None] = {}
    counts: dict[str, int] = {}
    for source, texts in real_texts(data_dir).items():
        before = len(seen)
        for text in texts:
            if text and len(text) > 1 and text not in excluded and text not in seen:
                seen[text] = None
                if len(seen) == n:
                    break
        counts[source] = len(seen) - before
        if len(seen) == n:
            break
    texts = list(seen)
    if len(texts) < n:
        parts = real_texts(data_dir)
        titles = list(dict.fromkeys(parts["jobnorm_titles"] + parts["onet_titles"] + parts["job2skill_titles"]))
        labels = list(dict.fromkeys(parts["esco_skill_labels"]))
        rng = np.random.default_rng(seed)
        made = 0
        while len(texts) < n:
            want = n - len(texts)
            a = rng.integers(0, len(titles), size=2 * want)
            b = rng.integers(0, len(labels), size=2 * want)
            for i, j in zip(a.tolist(), b.tolist(), strict=True):
                text = f"{titles[i]} - {labels[j]}"
                if text not in seen and text not in excluded:
                    seen[text] = None
                    texts.append(text)
                    made += 1
                    if len(texts) == n:
                        break
        counts["combined_title_skill"] = made
    return texts, counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--cache", default="outputs/scale/cache")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    import torch

    from uwe_lightning.ranking.ranker import Ranker

    torch.set_num_threads(args.threads)
    queries = query_titles()
    texts, counts = scale_texts(args.n, queries=queries)
    ranker = Ranker.from_pretrained(args.model, scorer="maxsim", batch_size=256)
    start = time.perf_counter()
    ranker.index(texts, cache_dir=args.cache, show_progress=True)
    seconds = time.perf_counter() - start
    log = {"n": len(texts), "sources": counts, "hit": ranker.last_index_hit, "seconds": round(seconds, 1),
           "texts_per_s": round(len(texts) / seconds, 1), "file": str(ranker.last_index_path),
           "threads": args.threads, "loadavg": list(np.round(__import__("os").getloadavg(), 2))}
    print(json.dumps(log), flush=True)
    if not ranker.last_index_hit:
        Path(args.cache).mkdir(parents=True, exist_ok=True)
        (Path(args.cache) / f"encode_{len(texts)}.json").write_text(json.dumps(log, indent=1) + "\n")


if __name__ == "__main__":
    main()
