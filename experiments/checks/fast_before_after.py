"""``fast.score`` of one checkout on a synthetic 99k-target space: the before/after check of issue 34's split of
``ranking/fast.py`` into ``ranking/fast/`` (same public API in both). Prints one JSON line: per scorer the median
of 3 timed calls after a warm-up, and a sha256 prefix of the scores (equal hashes = bit-identical scores).

Space: 99,000 targets of 2-12 tokens (ESCO-label-like lengths) x 384 dims, Gaussian tokens of norm ~4, seeded;
``mean`` on pooled targets with 256 queries, ``softmax`` (tau 2) on tokens with 8 queries; fp32. Alternate the two
checkouts in one run, so that both meet the same load (compare ratios of neighbouring runs)::

    git worktree add --detach /tmp/before 440a529^
    for i in 1 2 3; do for r in /tmp/before "$PWD"; do
      echo "load $(cut -d' ' -f1-3 /proc/loadavg)"; OMP_NUM_THREADS=2 python experiments/checks/fast_before_after.py $r
    done; done
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
import time

sys.path.insert(0, sys.argv[1])  # the checkout under test, ahead of the installed package

import torch  # noqa: E402

from uwe_lightning.ranking import fast  # noqa: E402
from uwe_lightning.ranking.packed import EncodedTexts  # noqa: E402

HIDDEN, N_TARGETS = 384, 99_000
QUERIES = {"mean": 256, "softmax": 8}


def main() -> None:
    torch.manual_seed(0)
    target_lengths = torch.randint(2, 13, (N_TARGETS,))
    query_lengths = torch.randint(3, 21, (256,))
    scale = 4 / HIDDEN**0.5
    targets = [torch.randn(int(n), HIDDEN) * scale for n in target_lengths]
    queries = [torch.randn(int(n), HIDDEN) * scale for n in query_lengths]
    out: dict[str, object] = {"repo": sys.argv[1]}
    for scorer in ("mean", "softmax"):
        pooled, n_queries = scorer == "mean", QUERIES[scorer]
        tau = 2.0 if scorer == "softmax" else None
        space = fast.prepared_of(EncodedTexts.from_token_list(targets, pooled=pooled), "fp32")
        groups = fast.query_groups(EncodedTexts.from_token_list(queries[:n_queries], pooled=pooled,
                                                                dtype=torch.float32))
        scores = fast.score(space, groups, n_queries, scorer, tau=tau)  # warm-up
        times = []
        for _ in range(3):
            start = time.perf_counter()
            scores = fast.score(space, groups, n_queries, scorer, tau=tau)
            times.append(time.perf_counter() - start)
        out[scorer] = {"median_ms": 1000 * statistics.median(times),
                       "sha": hashlib.sha256(scores.numpy().tobytes()).hexdigest()[:16]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
