"""Choose the final model's soft late-interaction temperature on VALIDATION from the Figure 4 runs.

    python experiments/studies/choose_temperature.py <temperature multirun dir> [--scorer softmax]

Reads each finished job's ``run_info.json`` (the validation macro MAP of the exported model, which for these
fixed-length runs is the last step), averages over seeds per temperature and prints the table and the chosen
tau (``--json`` prints only the choice). Test numbers are never read: the choice is made on validation only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from uwe_lightning.paths import RUN_INFO_FILE


def validation_by_tau(root: Path, scorer: str) -> dict[float, list[float]]:
    """Validation macro MAP of every finished job of ``scorer``, grouped by its temperature."""
    by_tau: dict[float, list[float]] = {}
    for info_file in sorted(root.rglob(RUN_INFO_FILE)):
        info = json.loads(info_file.read_text(encoding="utf-8"))
        summary = info.get("summary") or {}
        value = (summary.get("selection") or {}).get("exported_val")
        cfg = info.get("config") or {}
        run_scorer = (cfg.get("scorer") or {}).get("name")
        tau = (cfg.get("scorer") or {}).get("tau")
        if value is None or run_scorer != scorer or tau is None:
            continue
        by_tau.setdefault(float(tau), []).append(float(value))
    return by_tau


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="the temperature multirun dir")
    parser.add_argument("--scorer", default="softmax", help="the final model's scorer (default: softmax)")
    parser.add_argument("--json", action="store_true", help="print only the chosen tau")
    args = parser.parse_args(argv)
    by_tau = validation_by_tau(args.runs, args.scorer)
    if not by_tau:
        print(f"{args.runs}: no finished {args.scorer} job with a validation score (run_info.json summary)",
              file=sys.stderr)
        return 2
    means = {tau: statistics.fmean(values) for tau, values in by_tau.items()}
    best = max(means, key=lambda tau: (means[tau], -tau))
    if args.json:
        print(json.dumps(best))
        return 0
    print(f"| {args.scorer} tau | val macro MAP | n |\n|---|---|---|")
    for tau in sorted(means, reverse=True):
        print(f"| {tau:g} | {100 * means[tau]:.2f} | {len(by_tau[tau])} |")
    print(f"\nchosen tau (highest validation macro MAP): {best:g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
