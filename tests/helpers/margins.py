"""How close the data-parallel gradients come to one process's, in units of each tensor's scale.

Run it under each kernel choice to size :mod:`tests.helpers.tolerance` from measurements, not from one machine::

    for cap in default avx2 avx512; do
        ATEN_CPU_CAPABILITY=$cap .venv/bin/python -m tests.helpers.margins
    done

Prints, per case of ``tests/test_distributed.py``, the worst ``|got - want| / max|want|`` over all parameter
gradients (the quantity :data:`~tests.helpers.tolerance.FP32_SCALE_TOL` bounds) and the worst elementwise
relative error where ``|want|`` is at least 1e-2 of the scale.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from tests.helpers.distributed import run_cases, step_result
from tests.helpers.models import build_tiny_model
from tests.helpers.tolerance import NOISE_FLOOR


def scale_errors(got: dict, want: dict) -> tuple[float, float]:
    """(worst |diff| / scale, worst |diff| / |want| where |want| >= 1e-2 scale) over all tensors; a tensor's
    scale is its max|want|, at least :data:`~tests.helpers.tolerance.NOISE_FLOOR` of the largest of all."""
    top = max(float(b.abs().max()) for b in want.values() if b is not None)
    worst_scale = worst_rel = 0.0
    for name, b in want.items():
        a = got[name]
        if b is None:
            continue
        a, b = a.double(), b.double()
        scale = max(float(b.abs().max()), NOISE_FLOOR * top)
        diff = (a - b).abs()
        worst_scale = max(worst_scale, float(diff.max()) / scale)
        big = b.abs() >= 1e-2 * scale
        if bool(big.any()):
            worst_rel = max(worst_rel, float((diff[big] / b[big].abs()).max()))
    return worst_scale, worst_rel


def main() -> None:
    from tests.test_distributed import CASES, case_id

    torch.set_num_threads(int(os.environ.get("UWE_TEST_THREADS", "1")))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_tiny_model(tmp / "tiny")
        sparse = tmp / "A.csv"
        sparse.write_text("skill,text\npython,py\n")
        ranks = run_cases(model, sparse, CASES, tmp / "results")
        cap = os.environ.get("ATEN_CPU_CAPABILITY", "(torch's choice)")
        print(f"ATEN_CPU_CAPABILITY={cap} threads={torch.get_num_threads()}")
        for case, rank0 in zip(CASES, ranks[0], strict=True):
            from tests.helpers.distributed import Case

            plain = Case(case.loss, case.scorer, case.step, sparse_a=case.sparse_a)
            want = step_result(model, plain, (0, 1), sparse, ddp=False)
            by_scale, rel = scale_errors(rank0["grads"], want["grads"])
            print(f"  {case_id(case):40s} |diff|/scale {by_scale:.2e}   rel (|want| >= 1e-2 scale) {rel:.2e}")


if __name__ == "__main__":
    main()
