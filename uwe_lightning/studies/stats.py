"""Numbers of a sweep over seeds: mean, sample SD, SE and the 95 % confidence interval (t-distribution).

The paper reports Tables 4/5 as mean ± 95 % CI over 5 seeds and Figure 3 as mean ± SE. The CI half width
is ``t_{0.975, n-1} * sd / sqrt(n)``; the t quantile is computed here (regularised incomplete beta and
bisection) so that reporting needs no scipy: importing ``scipy.stats`` costs far more than every report
computation (issue 32), and tests/test_report.py checks this quantile against ``scipy.stats.t.ppf``
to 1e-9. One value has no spread: its SD, SE and CI are ``None``, and the tables say so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

CONFIDENCE = 0.95


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The incomplete beta function's continued fraction (modified Lentz); converges for x < (a+1)/(a+b+2)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        even = m * (b - m) * x / ((qam + m2) * (a + m2))
        odd = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        for numerator in (even, odd):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the CDF of a Beta(a, b) variable at ``x``.

    >>> round(regularized_beta(0.5, 2.0, 2.0), 12)
    0.5
    """
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom.

    >>> round(t_cdf(0.0, 3), 12), round(t_cdf(1.0, 1), 12)   # Cauchy: 1/2 + atan(1)/pi
    (0.5, 0.75)
    """
    tail = 0.5 * regularized_beta(df / (df + t * t), df / 2.0, 0.5)
    return 1.0 - tail if t > 0 else tail


@lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` >= 1 degrees of freedom (bisection on :func:`t_cdf`).

    >>> [round(t_quantile(0.975, df), 3) for df in (1, 2, 4, 9, 29)]
    [12.706, 4.303, 2.776, 2.262, 2.045]
    >>> round(t_quantile(0.975, 10**6), 3)   # the normal limit
    1.96
    """
    if df < 1:
        raise ValueError(f"t_quantile: df must be >= 1, got {df}")
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile: p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Summary:
    """One report cell: its values over seeds, reduced; ``sd``/``se``/``ci95``/``t`` are None for n < 2."""

    n: int
    mean: float | None
    sd: float | None = None
    se: float | None = None
    ci95: float | None = None  # half width: mean ± ci95
    t: float | None = None  # t_{0.975, n-1} used for ci95

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def finite(values: Iterable[Any]) -> list[float]:
    """The values that are real numbers (a task missing from a run, None or NaN, is not a value)."""
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out.append(float(value))
    return out


def summarize(values: Iterable[Any], confidence: float = CONFIDENCE) -> Summary:
    """Mean, sample SD (n - 1), SE and t-based CI half width of the finite ``values``.

    >>> s = summarize([0.30, 0.32, 0.34])
    >>> round(s.mean, 6), round(s.sd, 6), round(s.ci95, 4)   # 0.02 * 4.303 / sqrt(3)
    (0.32, 0.02, 0.0497)
    >>> summarize([0.5])
    Summary(n=1, mean=0.5, sd=None, se=None, ci95=None, t=None)
    """
    xs = finite(values)
    n = len(xs)
    if n == 0:
        return Summary(n=0, mean=None)
    mean = math.fsum(xs) / n
    if n == 1:
        return Summary(n=1, mean=mean)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    se = sd / math.sqrt(n)
    t = t_quantile(0.5 + confidence / 2.0, n - 1)
    return Summary(n=n, mean=mean, sd=sd, se=se, ci95=t * se, t=t)
