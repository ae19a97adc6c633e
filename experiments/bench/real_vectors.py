"""Real MiniLM token embeddings for the engine benchmarks (engine_choice.py, late_interaction.py): the texts of
``scale_texts(--n)`` in a seeded random order, encoded in chunks of 2,000 that are saved as they finish (fp16
tokens + lengths, ``<out>/chunks/cNNN.npz``), so a run stopped at any point leaves a random sample of the real
space; plus the 200 JobNorm query titles on the query side (``<out>/queries.npz``) and ``<out>/texts.json``.

``python experiments/bench/real_vectors.py --out outputs/scale_vectors`` (stop it whenever: rerunning resumes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from experiments.bench.scale_texts import query_titles, scale_texts  # noqa: E402

CHUNK = 2000


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--out", default="outputs/scale_vectors")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    from uwe_lightning.ranking.ranker import Ranker

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    (out / "chunks").mkdir(parents=True, exist_ok=True)
    queries = query_titles(n=200)
    texts, counts = scale_texts(args.n, queries=queries)
    order = np.random.default_rng(0).permutation(len(texts))
    (out / "texts.json").write_text(json.dumps({"texts": texts, "order": order.tolist(), "queries": queries,
                                                "counts": counts}))
    ranker = Ranker.from_pretrained(args.model, scorer="maxsim", batch_size=256)
    if not (out / "queries.npz").exists():
        q = ranker.embed(queries, side="query")
        np.savez(out / "queries.npz", tokens=torch.cat(q).half().numpy(), lengths=np.array([len(t) for t in q]))
    for start in range(0, len(texts), CHUNK):
        file = out / "chunks" / f"c{start // CHUNK:03d}.npz"
        if file.exists():
            continue
        t0 = time.perf_counter()
        part = [texts[i] for i in order[start : start + CHUNK]]
        emb = ranker.embed(part, side="target")
        tmp = Path(str(file) + ".tmp.npz")
        np.savez(tmp, tokens=torch.cat(emb).half().numpy(), lengths=np.array([len(t) for t in emb]))
        os.replace(tmp, file)
        seconds = time.perf_counter() - t0
        print(json.dumps({"chunk": start // CHUNK, "done": start + len(part), "s": round(seconds, 1),
                          "texts_per_s": round(len(part) / seconds, 1),
                          "loadavg": [round(x, 2) for x in os.getloadavg()]}), flush=True)


if __name__ == "__main__":
    main()
