"""Issue 29: what the two data controls do to the open protocol's graphs, without training.

    nice -n 15 python experiments/studies/transfer_controls/check_controls.py [--seed 0] > controls.json

Prints, as JSON: for data.alignment=shuffled (seed --seed), per graph whether every skill's and every text's
degree is kept and the share of edges the shuffled graph has in common with the aligned one beside a random
graph's expectation; for data.skill_holdout=0.5 (data.holdout_seed=0), what the split costs (skills, edges,
texts) and the degree quantiles of the two halves. The same functions a training run applies
(``uwe_lightning.data.controls``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # this checkout's package, not another install

from uwe_lightning.data.controls import hold_out_skills, holdout_split, shuffle_graphs, total_degree  # noqa: E402
from uwe_lightning.protocol import build_open_protocol  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="the training seed (seeds the rewiring)")
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--holdout-seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    protocol = build_open_protocol(args.data_dir)
    graphs, n_skills = protocol.graphs, len(protocol.vocab)
    start = time.perf_counter()
    shuffled, report = shuffle_graphs(graphs, args.seed)
    for name, graph in graphs.items():
        report["graphs"][name].update(
            skill_degrees_kept=bool(np.array_equal(shuffled[name].skill_degree, graph.skill_degree)),
            text_degrees_kept=bool(np.array_equal(np.diff(shuffled[name].text_indptr), np.diff(graph.text_indptr))),
            edges=graph.n_edges)
    report["seconds"] = round(time.perf_counter() - start, 1)
    degree = total_degree(graphs, n_skills)
    held = holdout_split(degree, args.fraction, args.holdout_seed)
    _, pool, cost = hold_out_skills(graphs, held, n_skills)
    quantiles = [0.1, 0.25, 0.5, 0.75, 0.9, 0.99]
    cost["degree_quantiles"] = {"q": quantiles, "held_out": np.quantile(degree[held], quantiles).tolist(),
                                "training": np.quantile(degree[pool], quantiles).tolist()}
    cost["edges_held_out_share"] = round(float(degree[held].sum() / degree.sum()), 4)
    print(json.dumps({"command": " ".join(["python", *sys.argv]), "alignment": report,
                      "skill_holdout": {"fraction": args.fraction, "seed": args.holdout_seed, **cost}}, indent=1))


if __name__ == "__main__":
    main()
