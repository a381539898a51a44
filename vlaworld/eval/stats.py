"""Statistics for success rates of paired policy evaluations, in plain Python and numpy.

Every configuration runs the same episodes (SPEC §8), so comparisons are paired: exact McNemar on the
discordant pairs, Newcombe's paired interval for the difference, and a cluster bootstrap over LIBERO's
init states (episodes reusing one init state are not independent). Choices, fixed here once:

- Wilson score interval for single rates (what LeRobot reports); n = 0 gives the vacuous [0, 1].
- Exact McNemar: two-sided, 2 * P(X <= min(b, c)) for X ~ Bin(b + c, 1/2), capped at 1; no mid-p.
  Computed with exact integer arithmetic, so it is right for thousands of pairs.
- Paired difference interval: Newcombe (1998, Stat Med 17:2635) method 10, Wilson intervals of the
  two marginal rates combined with the phi correlation (numerator ad-bc shrunk by n/2 when positive).
  Closed form, no root finding; Tango's score interval is similar in coverage but needs iteration.
- Holm for the few planned contrasts; Benjamini-Hochberg for the many exploratory per-task tests.
- Bootstrap: clusters resampled within each task (stratified), percentile interval, seeded; the same
  resampling gives intervals for the mean of any per-episode number (world diagnostics).
- Two independent rates (success by Prophet-cosine quartile): Newcombe's method 10 (Wilson square-and-add).

scipy and statsmodels are only the references in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

__all__ = [
    "Paired",
    "wilson_interval",
    "z_value",
    "mcnemar_exact",
    "paired_counts",
    "newcombe_paired_interval",
    "newcombe_unpaired_interval",
    "holm",
    "benjamini_hochberg",
    "cluster_bootstrap_diff",
    "cluster_bootstrap_mean",
    "paired_mde",
]


def z_value(confidence: float = 0.95) -> float:
    """Two-sided standard normal quantile for ``confidence`` (1.959964 for 0.95)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(successes: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``successes`` out of ``n``; [0, 1] when n is 0."""
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return (0.0, 1.0)
    z = z_value(confidence)
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2.0 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    lo = 0.0 if successes == 0 else max(0.0, center - half)
    hi = 1.0 if successes == n else min(1.0, center + half)
    return (lo, hi)


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts b (A only) and c (B only)."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    k = min(b, c)
    term = tail = 1  # exact integers: C(n, i), and P(X <= k) * 2**n
    for i in range(k):
        term = term * (n - i) // (i + 1)
        tail += term
    return min(1.0, 2 * tail / 2**n)


@dataclass(frozen=True, kw_only=True)
class Paired:
    """The 2x2 table of matched outcomes: both succeed, only A, only B, both fail."""

    both: int
    only_a: int
    only_b: int
    neither: int

    @property
    def n(self) -> int:
        return self.both + self.only_a + self.only_b + self.neither

    @property
    def diff(self) -> float:
        """rate(A) - rate(B) on the pairs; 0 when there are none."""
        return (self.only_a - self.only_b) / self.n if self.n else 0.0


def paired_counts(a: Sequence[bool] | np.ndarray, b: Sequence[bool] | np.ndarray) -> Paired:
    """Cross-tabulate two aligned outcome vectors (same episode at the same index)."""
    xa = np.asarray(a, dtype=bool)
    xb = np.asarray(b, dtype=bool)
    if xa.shape != xb.shape or xa.ndim != 1:
        raise ValueError(f"need two aligned 1-d outcome vectors, got shapes {xa.shape} and {xb.shape}")
    return Paired(
        both=int(np.sum(xa & xb)),
        only_a=int(np.sum(xa & ~xb)),
        only_b=int(np.sum(~xa & xb)),
        neither=int(np.sum(~xa & ~xb)),
    )


def newcombe_paired_interval(t: Paired, *, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's method 10 interval for rate(A) - rate(B) on matched pairs.

    Example (Fagerland et al. 2017, Cavo 2012 data): Paired(both=59, only_a=6, only_b=16, neither=80)
    gives -0.0621 in (-0.1186, -0.0046).
    """
    n = t.n
    if n == 0:
        return (-1.0, 1.0)
    r1, r2 = t.both + t.only_a, t.both + t.only_b  # successes of A and of B
    p1, p2 = r1 / n, r2 / n
    l1, u1 = wilson_interval(r1, n, confidence=confidence)
    l2, u2 = wilson_interval(r2, n, confidence=confidence)
    phi = 0.0
    margins = r1 * (n - r1) * r2 * (n - r2)
    if margins > 0:
        num = t.both * t.neither - t.only_a * t.only_b
        num = num - n / 2 if num > n / 2 else (0.0 if num >= 0 else num)
        phi = num / math.sqrt(margins)
    d = p1 - p2
    lo = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    hi = d + math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    return (max(-1.0, lo), min(1.0, hi))


def newcombe_unpaired_interval(s1: int, n1: int, s2: int, n2: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's method 10 interval for s1/n1 - s2/n2 from independent samples (Wilson square-and-add).

    Example (Newcombe 1998, Table II, 56/70 vs 48/80): 0.2 in (0.0524, 0.3339).
    """
    if n1 == 0 or n2 == 0:
        return (-1.0, 1.0)
    p1, p2 = s1 / n1, s2 / n2
    l1, u1 = wilson_interval(s1, n1, confidence=confidence)
    l2, u2 = wilson_interval(s2, n2, confidence=confidence)
    d = p1 - p2
    return (max(-1.0, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)),
            min(1.0, d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in input order (family-wise error control)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values), in input order (false discovery rate)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i], reverse=True)
    adjusted = [0.0] * m
    running = 1.0
    for pos, i in enumerate(order):
        rank = m - pos  # 1-based rank in ascending order
        running = min(running, m / rank * pvalues[i])
        adjusted[i] = min(1.0, running)
    return adjusted


def cluster_bootstrap_diff(
    a: Sequence[bool] | np.ndarray,
    b: Sequence[bool] | np.ndarray,
    *,
    strata: Sequence[object] | np.ndarray,
    clusters: Sequence[object] | np.ndarray,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval for rate(A) - rate(B) over matched pairs, resampling whole clusters.

    ``strata`` is the task of each pair, ``clusters`` its init state: within every task the init
    states are drawn with replacement (as many as the task has) and all their episodes come along,
    so repeats of one init state count as one unit of evidence. Deterministic given ``seed``.
    """
    xa = np.asarray(a, dtype=bool)
    xb = np.asarray(b, dtype=bool)
    if xa.shape != xb.shape or xa.ndim != 1:
        raise ValueError("a, b, strata and clusters must be aligned 1-d sequences")
    if xa.size == 0:
        return (-1.0, 1.0)
    delta = xa.astype(np.int64) - xb.astype(np.int64)  # per pair: +1, 0, -1
    return cluster_bootstrap_mean(delta, strata=strata, clusters=clusters, n_resamples=n_resamples, seed=seed,
                                  confidence=confidence)


def cluster_bootstrap_mean(
    values: Sequence[float] | np.ndarray,
    *,
    strata: Sequence[object] | np.ndarray,
    clusters: Sequence[object] | np.ndarray,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval for the mean of per-episode ``values``, resampling clusters within strata.

    The resampling of ``cluster_bootstrap_diff`` (which is this applied to the per-pair differences):
    init states drawn with replacement within each task, every episode of a drawn state coming along.
    NaN is refused (filter missing values first); no values gives the uninformative (-inf, inf).
    """
    x = np.asarray(values, dtype=np.float64)
    st = np.asarray(strata, dtype=object)
    cl = np.asarray(clusters, dtype=object)
    if not (x.shape == st.shape == cl.shape) or x.ndim != 1:
        raise ValueError("values, strata and clusters must be aligned 1-d sequences")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not np.isfinite(x).all():
        raise ValueError("values must be finite; drop the episodes without a value first")
    if x.size == 0:
        return (-math.inf, math.inf)
    rng = np.random.default_rng(seed)
    total = np.zeros(n_resamples)
    total_n = np.zeros(n_resamples)
    for stratum in sorted(set(st.tolist()), key=repr):  # fixed order keeps the draws reproducible
        in_s = st == stratum
        keys = sorted(set(cl[in_s].tolist()), key=repr)
        index = {k: j for j, k in enumerate(keys)}
        ids = np.fromiter((index[k] for k in cl[in_s]), dtype=np.int64, count=int(in_s.sum()))
        sums = np.bincount(ids, weights=x[in_s], minlength=len(keys))
        sizes = np.bincount(ids, minlength=len(keys)).astype(float)
        draw = rng.integers(0, len(keys), size=(n_resamples, len(keys)))  # (R, clusters)
        total += sums[draw].sum(axis=1)
        total_n += sizes[draw].sum(axis=1)
    means = total / total_n
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return (float(lo), float(hi))


def paired_mde(t: Paired, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Approximate smallest |difference| a paired test detects at this discordance rate.

    Normal approximation (z_{1-alpha/2} + z_power) * sqrt(discordant_rate / n); with no
    discordant pairs one is assumed, so the number never claims a resolution the data cannot give.
    """
    if t.n == 0:
        return 1.0
    discordant = max(1, t.only_a + t.only_b) / t.n
    z = z_value(1.0 - alpha) + NormalDist().inv_cdf(power)
    return min(1.0, z * math.sqrt(discordant / t.n))
