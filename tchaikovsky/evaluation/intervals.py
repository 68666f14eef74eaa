"""Rates with their n and a 95% interval, and differences with theirs: the statistics every reported figure carries.

    Rate(5, 16)                       # 0.31 [0.14, 0.56] (5/16): Wilson score interval
    Difference(Rate(12, 16), Rate(3, 16))   # +0.56 [+0.23, +0.76]: Newcombe's interval of p1 - p2
    pooled_lift([cond...], [chance...])     # mean over values of (conditioned - chance), bootstrap interval
    mean_interval([0.8, 0.7, ...])          # a mean (e.g. OA per piece) with a bootstrap interval

A failed piece (no notes, undecodable) is a trial that missed: it stays in ``n``. Wilson's interval behaves at
small n and at 0 or n successes, where the normal approximation does not; Newcombe's hybrid score interval
(method 10 of Newcombe 1998) is built from the two Wilson intervals, so it inherits that.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Z95", "wilson", "Rate", "Difference", "pooled_lift", "mean_interval", "centred_interval", "fmt"]

Z95 = 1.959963984540054  # two-sided 95%


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials; (nan, nan) when n is 0."""
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def fmt(x: float, signed: bool = False) -> str:
    """A figure to two decimals ("–" for NaN), with its sign when ``signed``."""
    if x is None or x != x:
        return "–"
    return f"{x:+.2f}" if signed else f"{x:.2f}"


@dataclass(frozen=True)
class Rate:
    """k of n trials succeeded; ``value`` k/n (NaN when n is 0) and ``interval`` (Wilson, 95%)."""

    k: int
    n: int

    def __post_init__(self):
        if not 0 <= self.k <= self.n:
            raise ValueError(f"a rate needs 0 <= k <= n, got {self.k}/{self.n}")

    @classmethod
    def of(cls, hits: Sequence[bool]) -> "Rate":
        """The rate of a sequence of outcomes (every element one trial)."""
        return cls(int(sum(bool(h) for h in hits)), len(hits))

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else math.nan

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.k, self.n)

    def to_dict(self) -> dict:
        lo, hi = self.interval
        return {"rate": self.value, "lo": lo, "hi": hi, "k": self.k, "n": self.n}

    @classmethod
    def from_dict(cls, d: dict) -> "Rate":
        return cls(int(d["k"]), int(d["n"]))

    def __str__(self) -> str:
        lo, hi = self.interval
        return f"{fmt(self.value)} [{fmt(lo)}, {fmt(hi)}] ({self.k}/{self.n})"


@dataclass(frozen=True)
class Difference:
    """``a - b`` of two independent rates, with Newcombe's hybrid score interval; ``significant`` when the
    interval excludes 0."""

    a: Rate
    b: Rate

    @property
    def value(self) -> float:
        return self.a.value - self.b.value

    @property
    def interval(self) -> tuple[float, float]:
        if not (self.a.n and self.b.n):
            return math.nan, math.nan
        (l1, u1), (l2, u2) = self.a.interval, self.b.interval
        p1, p2, d = self.a.value, self.b.value, self.value
        return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)

    @property
    def significant(self) -> bool:
        lo, hi = self.interval
        return bool(lo > 0 or hi < 0)

    def to_dict(self) -> dict:
        lo, hi = self.interval
        return {"diff": self.value, "lo": lo, "hi": hi, "significant": self.significant}

    def __str__(self) -> str:
        lo, hi = self.interval
        return f"{fmt(self.value, True)} [{fmt(lo, True)}, {fmt(hi, True)}]"


def _bootstrap(draw: Callable[[np.random.Generator], float], n_boot: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    stats = np.array([draw(rng) for _ in range(n_boot)], np.float64)
    stats = stats[np.isfinite(stats)]
    if not stats.size:
        return math.nan, math.nan
    return float(np.quantile(stats, 0.025)), float(np.quantile(stats, 0.975))


def pooled_lift(conditioned: Sequence[Rate], chance: Sequence[Rate], *, n_boot: int = 4000,
                seed: int = 0) -> dict:
    """The mean over values of (conditioned rate - measured chance rate), each value weighted alike, with a 95%
    percentile-bootstrap interval (every rate redrawn from its own k/n, independently). Also the pooled rates
    themselves (k and n summed) and the mean chance. Values with n = 0 on either side are left out."""
    pairs = [(c, u) for c, u in zip(conditioned, chance) if c.n and u.n]
    if not pairs:
        return {"lift": math.nan, "lo": math.nan, "hi": math.nan, "values": 0, "significant": False,
                "conditioned": None, "chance_mean": math.nan}
    cn = np.array([[c.k, c.n] for c, _ in pairs], np.float64)
    un = np.array([[u.k, u.n] for _, u in pairs], np.float64)
    lift = float(np.mean(cn[:, 0] / cn[:, 1] - un[:, 0] / un[:, 1]))

    def draw(rng):
        pc = rng.binomial(cn[:, 1].astype(int), cn[:, 0] / cn[:, 1]) / cn[:, 1]
        pu = rng.binomial(un[:, 1].astype(int), un[:, 0] / un[:, 1]) / un[:, 1]
        return float(np.mean(pc - pu))

    lo, hi = _bootstrap(draw, n_boot, seed)
    return {"lift": lift, "lo": lo, "hi": hi, "values": len(pairs), "significant": bool(lo > 0 or hi < 0),
            "conditioned": Rate(int(cn[:, 0].sum()), int(cn[:, 1].sum())).to_dict(),
            "chance_mean": float(np.mean(un[:, 0] / un[:, 1]))}


def mean_interval(values: Sequence[float], *, n_boot: int = 4000, seed: int = 0) -> dict:
    """The mean of finite ``values`` (e.g. one OA per piece) with a 95% percentile-bootstrap interval and n."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
    if not x.size:
        return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n": 0}
    lo, hi = _bootstrap(lambda rng: float(x[rng.integers(0, x.size, x.size)].mean()), n_boot, seed)
    return {"mean": float(x.mean()), "lo": lo, "hi": hi, "n": int(x.size)}


def centred_interval(oa: np.ndarray, lo: float = 0.0, hi: float = 1.0) -> tuple[float, float]:
    """The 95% interval of row 0 (the point estimate) from the bootstrap rows (the rest): their 2.5 and 97.5%
    percentiles moved by (point - their mean), so it is centred as the point is (a resample repeats pieces, so a
    set figure such as mean OA runs low on resamples; ``evaluation.temperature`` says more), clipped to
    [lo, hi]."""
    d = oa[1:][np.isfinite(oa[1:])]
    if not d.size or not math.isfinite(oa[0]):
        return math.nan, math.nan
    shift = oa[0] - d.mean()
    return (max(lo, float(np.quantile(d, 0.025) + shift)), min(hi, float(np.quantile(d, 0.975) + shift)))
