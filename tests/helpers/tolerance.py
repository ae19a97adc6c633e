"""Float comparisons that hold on any x86-64 CPU: the tolerance follows the size of the quantity compared.

Why not a fixed ``atol``: a value that went through a matmul, a reduction or autograd is a float32 sum whose
terms are added in an order that depends on the kernel (``ATEN_CPU_CAPABILITY``: default / avx2 / avx512, AMX),
on the thread count and on how the work was split (data-parallel shards, GradCache chunks). Reordering a sum
of ``n`` float32 terms moves it by at most about ``n * eps * sum|terms|`` (eps = 2**-23 ~ 1.2e-7), in practice
``sqrt(n) * eps * sum|terms|``. An element that is a near-cancelling sum (a bias or embedding gradient summed
over every token) has a tiny value of its own but an error on the scale of its *terms*, which are of the order
of the largest elements of the same tensor. So each comparison here allows

    |got - want| <= rtol * |want| + scale_tol * max|want|

elementwise, with ``max|want|`` taken over the whole tensor (never over one machine's observed rounding). The
default ``scale_tol`` is 10x the largest reordering error measured on the suite's gradients (9.4e-6 of the
scale: AMD EPYC, ATEN_CPU_CAPABILITY default / avx2 / avx512, 1 and 2 threads, ``python -m
tests.helpers.margins``) and 100x below what a real defect does (a dropped loss term, a missing all-reduce, a
wrong shard split or a missing x world factor each still fail at ``100 * scale_tol``:
``tests/test_distributed.py::test_the_gradient_check_catches_real_defects``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

FP32_RTOL = 1e-5  # ~80 eps: elementwise, for elements that are not cancelling sums
FP32_SCALE_TOL = 1e-4  # of the tensor's largest magnitude: the reordering error of its cancelling elements
NOISE_FLOOR = 1e-6  # of the largest magnitude among related tensors: below it a tensor is noise of an exact zero


def scaled_mismatch(got: torch.Tensor, want: torch.Tensor, rtol: float = FP32_RTOL,
                    scale_tol: float = FP32_SCALE_TOL, scale: float | None = None) -> str | None:
    """Why ``got`` is not ``want`` within the scaled tolerance, or ``None`` where it is.

    ``scale`` defaults to ``max|want|``; pass a larger one where ``want`` is float noise of an exact zero.

    Examples:
        >>> want = torch.tensor([1.0, 1e-6, -2.0])
        >>> scaled_mismatch(want + 1e-5, want) is None  # 1e-5 is 5e-6 of the scale 2.0
        True
        >>> scaled_mismatch(want * 1.01, want) is None  # a 1 % error is a defect
        False
    """
    if got.shape != want.shape:
        return f"shape {tuple(got.shape)} != {tuple(want.shape)}"
    got, want = got.detach().double(), want.detach().double()
    if not bool(torch.isfinite(got).all()) or not bool(torch.isfinite(want).all()):
        same = torch.equal(got.isnan(), want.isnan()) and torch.equal(got.nan_to_num(0.0), want.nan_to_num(0.0))
        return None if same else "non-finite values differ"
    scale = max(float(want.abs().max()) if want.numel() else 0.0, scale or 0.0)
    bound = rtol * want.abs() + scale_tol * scale
    excess = (got - want).abs() - bound
    if want.numel() == 0 or float(excess.max()) <= 0:
        return None
    worst = int(excess.argmax())
    diff = float((got - want).abs().flatten()[worst])
    return (f"max |got - want| = {diff:.3g} exceeds its bound {float(bound.flatten()[worst]):.3g} at flat index "
            f"{worst} (scale max|want| = {scale:.3g})")


def assert_close_to_scale(got: torch.Tensor, want: torch.Tensor, rtol: float = FP32_RTOL,
                          scale_tol: float = FP32_SCALE_TOL, name: str = "") -> None:
    """Assert :func:`scaled_mismatch` finds nothing."""
    why = scaled_mismatch(got, want, rtol, scale_tol)
    assert why is None, f"{name}: {why}" if name else why


def mismatched_tensors(got: Mapping[str, torch.Tensor | None], want: Mapping[str, torch.Tensor | None],
                       rtol: float = FP32_RTOL, scale_tol: float = FP32_SCALE_TOL,
                       noise_floor: float = NOISE_FLOOR) -> dict[str, str]:
    """Per name, why ``got[name]`` is not ``want[name]`` (a gradient dict); empty where all match.

    Each tensor is compared on its own scale, but never on less than ``noise_floor`` times the largest
    magnitude in the whole dict: a gradient that is zero in exact arithmetic (an attention key bias: softmax
    ignores a shift common to all keys) holds only the float noise of its terms, whose size is the model's.
    """
    floor = noise_floor * max((float(t.abs().max()) for t in want.values() if t is not None and t.numel()),
                              default=0.0)
    out = {}
    for name in sorted(set(got) | set(want)):
        a, b = got.get(name), want.get(name)
        if a is None or b is None:
            if (a is None) != (b is None):
                out[name] = f"missing on one side (got {a is None and 'None' or 'tensor'})"
            continue
        why = scaled_mismatch(a, b, rtol, scale_tol, scale=floor)
        if why:
            out[name] = why
    return out


def loss_tolerance(value: float, terms: int = 1) -> float:
    """Absolute tolerance of a float32 loss built from ``terms`` reordered summands: ``sqrt(terms) * 64 eps``
    of its magnitude, at least 64 eps of 1 (a loss near 0 still has summands of order 1)."""
    eps = torch.finfo(torch.float32).eps
    return 64 * eps * max(abs(value), 1.0) * max(terms, 1) ** 0.5
