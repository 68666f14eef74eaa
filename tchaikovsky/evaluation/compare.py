"""Set-level comparison: how a set of pieces sits among a reference set, feature by feature (numpy only).

mgeval's relative measure (L.-C. Yang, A. Lerch, "On the evaluation of generative models in music", Neural
Computing and Applications, 2018). For each feature, the distances between pieces *within* the reference set
(intra-set) are compared with the distances *from* each generated piece *to* each reference piece (inter-set):
when the generated pieces are distributed like the reference, the two distance distributions coincide, so their
overlapped area (OA) is near 1 and their KL divergence near 0. mgeval estimates the two densities with Gaussian
KDEs; here both samples are binned on the *same* histogram bins (``overlapped_area``, ``kl_divergence``), which
needs no bandwidth and no scipy, is exact for ``OA(a, a) == 1`` and gives 0 for samples in disjoint bins. Values
are therefore comparable with each other, not numerically with published mgeval figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tchaikovsky.evaluation.features import FEATURES
from tchaikovsky.evaluation.intervals import centred_interval

__all__ = ["overlapped_area", "kl_divergence", "intra_inter", "compare_sets", "mean_oa", "resampled_mean_oa", "ranks",
           "spearman"]


def _finite(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).ravel()
    return x[np.isfinite(x)]


def _bin_count(a: np.ndarray, b: np.ndarray, bins: int | None) -> int:
    """``bins``, or by default the square root of the smaller sample size, clipped to 5..20 (few values cannot
    fill many bins: with too many, two samples of one distribution overlap by chance only)."""
    return int(bins) if bins else int(np.clip(round(math.sqrt(min(len(a), len(b)))), 5, 20))


def _shared_histograms(a, b, bins: int | None) -> tuple[np.ndarray, np.ndarray]:
    a, b = _finite(a), _finite(b)
    bins = _bin_count(a, b, bins)
    edges = np.histogram_bin_edges(np.concatenate([a, b]), bins=bins)
    return np.histogram(a, bins=edges)[0] / len(a), np.histogram(b, bins=edges)[0] / len(b)


def overlapped_area(a, b, *, bins: int | None = None) -> float:
    """Overlapped area of the distributions of two 1-D samples: sum over bins of min(P_a, P_b), where P_a, P_b
    are the samples' normalised histograms on the same equal-width bins spanning both samples (mgeval uses KDEs;
    shared bins need no bandwidth). ``bins`` defaults to sqrt(smaller sample size), clipped to 5..20. 1 for
    identical samples, 0 when no bin holds values of both. Non-finite values are dropped; NaN if either sample is
    then empty."""
    if _finite(a).size == 0 or _finite(b).size == 0:
        return math.nan
    pa, pb = _shared_histograms(a, b, bins)
    return float(np.minimum(pa, pb).sum())


def kl_divergence(a, b, *, bins: int | None = None, eps: float = 1e-3) -> float:
    """KL(P_a || P_b) in nats between the shared-bin histograms of two 1-D samples (as ``overlapped_area``),
    smoothed: ``eps`` is added to every bin probability of both before renormalising, so the divergence stays
    finite (at most about ln(1/eps) ~ 6.9 nats for disjoint samples). 0 for identical samples; NaN if either
    sample has no finite value."""
    if _finite(a).size == 0 or _finite(b).size == 0:
        return math.nan
    pa, pb = _shared_histograms(a, b, bins)
    pa, pb = (pa + eps) / (1 + eps * len(pa)), (pb + eps) / (1 + eps * len(pb))
    return float(max((pa * np.log(pa / pb)).sum(), 0.0))


def _feature_rows(pieces, feature: str) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) values of ``feature`` over a list of metric dicts (or raw values), and which rows hold no NaN."""
    rows = [p[feature] if isinstance(p, dict) else p for p in pieces]
    m = np.array([np.atleast_1d(np.asarray(r, dtype=np.float64)) for r in rows]) if rows else np.zeros((0, 1))
    m = m.reshape(len(rows), -1)
    return m, np.isfinite(m).all(axis=1)


def _feature_matrix(pieces, feature: str) -> np.ndarray:
    """(n_valid, d) values of ``feature`` over a list of metric dicts (or raw values); rows with NaN dropped."""
    m, ok = _feature_rows(pieces, feature)
    return m[ok]


def _distances(x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """Euclidean distances (absolute differences for scalars): all pairs i < j within x, or all of x by y."""
    if y is None:
        i, j = np.triu_indices(len(x), k=1)
        return np.linalg.norm(x[i] - x[j], axis=1)
    return np.linalg.norm(x[:, None, :] - y[None, :, :], axis=2).ravel()


def intra_inter(set_a, set_b, feature: str, *, bins: int | None = None) -> dict:
    """mgeval's comparison of two sets on one feature (Yang & Lerch 2018). ``set_a`` is the reference.

    ``intra``: distances between all pairs of pieces within A; ``inter``: distances between every piece of B and
    every piece of A (Euclidean for histogram features, |x - y| for scalars). ``oa`` = overlapped_area(intra,
    inter) and ``kl`` = kl_divergence(intra, inter): how far B's pieces lie from A's compared with how far A's lie
    from each other. Pieces whose feature is NaN are left out (``n_a``, ``n_b`` count the rest). With fewer than
    two valid pieces in A, oa and kl are NaN; with none in B, oa is 0 (nothing overlaps) and kl NaN."""
    a, b = _feature_matrix(set_a, feature), _feature_matrix(set_b, feature)
    intra = _distances(a) if len(a) >= 2 else np.zeros(0)
    inter = _distances(b, a) if len(a) and len(b) else np.zeros(0)
    if len(a) < 2:
        oa = kl = math.nan
    elif len(b) == 0:
        oa, kl = 0.0, math.nan
    else:
        oa, kl = overlapped_area(intra, inter, bins=bins), kl_divergence(intra, inter, bins=bins)
    return {"intra": intra, "inter": inter, "oa": oa, "kl": kl, "n_a": len(a), "n_b": len(b)}


def _summary(m: np.ndarray):
    if len(m) == 0:
        return (math.nan, math.nan) if m.shape[1] == 1 else ([math.nan] * m.shape[1],) * 2
    mean, std = m.mean(axis=0), m.std(axis=0)
    return (float(mean[0]), float(std[0])) if m.shape[1] == 1 else (mean.tolist(), std.tolist())


def compare_sets(generated: Sequence[dict], reference: Sequence[dict], *, features: Sequence[str] = FEATURES,
                 bins: int | None = None) -> dict[str, dict]:
    """Per feature: ``oa`` and ``kl`` of ``intra_inter(reference, generated)`` (higher OA / lower KL = the generated
    pieces sit among the reference pieces like the reference pieces among themselves), the means and standard
    deviations of the feature in both sets (lists for histogram features) and the valid piece counts."""
    out = {}
    for f in features:
        r = intra_inter(reference, generated, f, bins=bins)
        g_mean, g_std = _summary(_feature_matrix(generated, f))
        r_mean, r_std = _summary(_feature_matrix(reference, f))
        out[f] = {"oa": r["oa"], "kl": r["kl"], "gen_mean": g_mean, "ref_mean": r_mean, "gen_std": g_std,
                  "ref_std": r_std, "n_gen": r["n_b"], "n_ref": r["n_a"]}
    return out


def mean_oa(comparison: dict[str, dict]) -> float:
    """Mean overlapped area over the features of a ``compare_sets`` result (NaN features skipped)."""
    vals = _finite([c["oa"] for c in comparison.values()])
    return float(vals.mean()) if vals.size else math.nan


def resampled_mean_oa(sets: Sequence[Sequence[dict]], reference: Sequence[dict], draws, *,
                      features: Sequence[str] = FEATURES, bins: int | None = None) -> np.ndarray:
    """``mean_oa(compare_sets(...))`` of every set in ``sets`` resampled by every row of ``draws``: element [s, b] is
    the mean OA of ``[sets[s][i] for i in draws[b]]`` against ``reference``, exactly, computed without recomputing
    the reference's intra-set distances or any piece's distances to the reference. The sets must be equally long,
    since one row of piece indices (``draws``: (n_draws, k) ints) resamples them all alike: a paired bootstrap, for
    sets whose i-th pieces belong together (the same sampling seed at several temperatures)."""
    draws = np.atleast_2d(np.asarray(draws, np.int64))
    if len({len(s) for s in sets}) > 1:
        raise ValueError(f"resampled_mean_oa needs equally long sets, got {[len(s) for s in sets]}")
    oa = np.full((len(sets), len(draws), len(features)), np.nan)
    for j, f in enumerate(features):
        a = _feature_matrix(reference, f)
        if len(a) < 2:
            continue  # as intra_inter: NaN, skipped by the mean
        intra = _distances(a)
        for s, pieces in enumerate(sets):
            m, ok = _feature_rows(pieces, f)
            dist = np.linalg.norm(m[:, None, :] - a[None, :, :], axis=2)  # (n, n_ref); NaN rows unused
            for b, idx in enumerate(draws):
                rows = idx[ok[idx]]
                oa[s, b, j] = overlapped_area(intra, dist[rows].ravel(), bins=bins) if rows.size else 0.0
    with np.errstate(all="ignore"):
        counts = np.isfinite(oa).sum(axis=2)
        return np.where(counts > 0, np.nansum(oa, axis=2) / np.maximum(counts, 1), np.nan)


def ranks(x) -> np.ndarray:
    """Ranks 1..n of the values of a 1-D sample, ties given the mean of the ranks they span (float64)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    values, inverse = np.unique(x, return_inverse=True)
    sums = np.bincount(inverse, weights=r, minlength=len(values))
    return (sums / np.bincount(inverse, minlength=len(values)))[inverse]


def spearman(a, b) -> float:
    """Spearman's rank correlation of two paired 1-D samples: the Pearson correlation of their ``ranks`` (ties
    averaged), in [-1, 1]. Pairs with a non-finite value on either side are dropped; NaN with fewer than two
    pairs left or when either side is constant. The guard rail of preference tuning: the scorer's and the judge's
    views of the same generated pieces should rank them alike (a correlation near 0 or below means optimising
    the scorer need not please the judge)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"spearman needs paired samples of one length, got {a.shape} and {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 2:
        return math.nan
    ra, rb = ranks(a) - (len(a) + 1) / 2, ranks(b) - (len(a) + 1) / 2
    denom = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else math.nan


def oa_interval(generated: Sequence[dict], reference: Sequence[dict], *, n_boot: int = 300, seed: int = 0) -> dict:
    """Mean OA of ``generated`` against ``reference`` (``piece_metrics`` dicts) with a 95% bootstrap interval over
    the generated pieces (``resampled_mean_oa``, percentiles centred on the figure): ``{"oa", "lo", "hi", "n"}``."""
    n = len(generated)
    if n == 0 or len(reference) < 2:
        return {"oa": math.nan, "lo": math.nan, "hi": math.nan, "n": n}
    draws = np.vstack([np.arange(n)[None], np.random.default_rng(seed).integers(0, n, (n_boot, n))])
    oa = resampled_mean_oa([list(generated)], reference, draws)[0]
    lo, hi = centred_interval(oa)
    return {"oa": float(oa[0]), "lo": lo, "hi": hi, "n": n}
