"""PyLate parity of a ``maxsim`` model exported with ``save_pretrained(dir, format="pylate")``.

PyLate pins its own sentence-transformers / transformers, so it runs in a separate environment
(``make pylate-check`` builds ``.venv-pylate`` and runs both halves):

    .venv/bin/python experiments/checks/pylate_parity.py export <model or backbone> <out dir>   # our env: export + our scores
    .venv-pylate/bin/python experiments/checks/pylate_parity.py check <out dir>                # PyLate's env: compare

``export`` writes the PyLate directory and ``expected.json`` (our ``maxsim`` scores of fixed queries x targets);
``check`` loads the directory with ``pylate.models.ColBERT``, scores the same pairs with its MaxSim, divides by
each query's token count and prints the largest difference (exit 1 above the tolerance).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

QUERIES = ["senior data engineer", "nurse in an intensive care unit", "truck driver",
           "we are looking for a motivated sales assistant to join our team in the city centre"]
TARGETS = ["Python (computer programming)", "provide nursing care", "drive heavy trucks", "sell products",
           "manage a team", "SQL"]
TOLERANCE = 1e-4


def export(model: str, out: Path) -> None:
    from uwe_lightning.model.pretrained import UWEModel

    uwe = UWEModel.from_pretrained(model, scorer="maxsim")
    uwe.save_pretrained(out, format="pylate")
    scores = uwe.score(QUERIES, TARGETS)
    from uwe_lightning.io import strict_json

    (out / "expected.json").write_text(strict_json({"queries": QUERIES, "targets": TARGETS,
                                                     "maxsim": scores.tolist()}, indent=2))
    print(f"exported {model} to {out} (PyLate format) with our maxsim scores in expected.json")


def check(out: Path) -> int:
    import torch

    from uwe_lightning.io import require

    models = require("pylate.models", "the PyLate parity check (make pylate-check)")

    expected = json.loads((out / "expected.json").read_text())
    model = models.ColBERT(str(out), device="cpu")
    q = [torch.as_tensor(x) for x in model.encode(expected["queries"], is_query=True)]
    d = [torch.as_tensor(x) for x in model.encode(expected["targets"], is_query=False)]
    # ColBERT's MaxSim on PyLate's (normalised) token embeddings, per query token count.
    got = [[float((qi @ dj.T).max(dim=1).values.sum()) / len(qi) for dj in d] for qi in q]
    diff = (torch.tensor(got) - torch.tensor(expected["maxsim"])).abs().max().item()
    import pylate
    import sentence_transformers

    print(f"pylate {pylate.__version__}, sentence-transformers {sentence_transformers.__version__}: "
          f"max |PyLate MaxSim / query length - our maxsim| = {diff:.2e} over "
          f"{len(expected['queries'])} x {len(expected['targets'])} pairs (tolerance {TOLERANCE:g})")
    return 0 if diff <= TOLERANCE else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export")
    e.add_argument("model")
    e.add_argument("out", type=Path)
    c = sub.add_parser("check")
    c.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "export":
        export(args.model, args.out)
        return 0
    return check(args.out)


if __name__ == "__main__":
    sys.exit(main())
