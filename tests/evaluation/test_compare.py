"""Set comparison: overlapped area and KL of shared-bin histograms, mgeval's intra/inter-set distances."""

import math

import numpy as np
import pytest

from tchaikovsky.evaluation import compare as M


def test_overlapped_area_and_kl():
    rng = np.random.default_rng(0)
    a = rng.normal(size=200)
    assert M.overlapped_area(a, a) == pytest.approx(1.0)
    assert M.kl_divergence(a, a) == pytest.approx(0.0, abs=1e-12)
    far = a + 100
    assert M.overlapped_area(a, far) == 0.0
    assert M.kl_divergence(a, far) > 5
    shifted = M.overlapped_area(a, a + 1)
    assert 0.2 < shifted < 0.9
    assert M.overlapped_area([1, 2, np.nan], [1, 2]) == pytest.approx(1.0)  # NaN dropped
    assert math.isnan(M.overlapped_area([], [1.0]))


def test_intra_inter_and_compare_sets():
    rng = np.random.default_rng(0)
    ref = [{"x": v, "h": [v, 1 - v]} for v in rng.uniform(0, 1, 40)]
    alike = [{"x": v, "h": [v, 1 - v]} for v in rng.uniform(0, 1, 20)]
    unlike = [{"x": v, "h": [v, 1 - v]} for v in rng.uniform(5, 6, 20)]
    empty = [{"x": math.nan, "h": [math.nan, math.nan]}] * 3
    r = M.intra_inter(ref, alike, "x")
    assert len(r["intra"]) == 40 * 39 // 2 and len(r["inter"]) == 20 * 40
    assert M.intra_inter(ref, alike, "x")["oa"] > 0.7 > M.intra_inter(ref, unlike, "x")["oa"]
    assert M.intra_inter(ref, empty, "x")["oa"] == 0.0
    assert math.isnan(M.intra_inter(ref[:1], alike, "x")["oa"])
    out = M.compare_sets(alike, ref, features=("x", "h"))
    assert set(out["x"]) >= {"oa", "kl", "gen_mean", "ref_mean"}
    assert out["x"]["gen_mean"] == pytest.approx(np.mean([p["x"] for p in alike]))
    assert out["h"]["ref_mean"] == pytest.approx(np.mean([p["h"] for p in ref], axis=0))
    assert out["x"]["n_gen"] == 20 and out["x"]["n_ref"] == 40
    assert M.mean_oa(out) > M.mean_oa(M.compare_sets(unlike, ref, features=("x", "h")))


def test_spearman_known_values():
    from tchaikovsky.evaluation.compare import ranks, spearman

    np.testing.assert_array_equal(ranks([10, 30, 20, 20]), [1, 4, 2.5, 2.5])  # ties share the mean rank
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [1, 8, 27, 64]) == pytest.approx(1.0)  # monotone, not linear: still 1
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # d = rank differences (0, 1, -1, 0, 0): rho = 1 - 6 * 2 / (5 * 24) = 0.9 (no ties)
    assert spearman([1, 2, 3, 4, 5], [1, 3, 2, 4, 5]) == pytest.approx(0.9)
    # ties: the Pearson correlation of the mean ranks, computed by hand
    ra, rb = np.array([1, 2.5, 2.5, 4]), np.array([1, 2, 3, 4])
    assert spearman([1, 2, 2, 3], [5, 6, 7, 8]) == pytest.approx(np.corrcoef(ra, rb)[0, 1])
    assert spearman([1, 2, float("nan"), 4], [1, 2, 9, 4]) == pytest.approx(1.0)  # NaN pairs dropped
    assert math.isnan(spearman([1], [2])) and math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="paired"):
        spearman([1, 2], [1, 2, 3])


def test_resampled_mean_oa_is_compare_sets_of_the_resampled_sets():
    rng = np.random.default_rng(1)
    ref = [{"x": v, "h": [v, 1 - v, v * v]} for v in rng.uniform(0, 1, 30)]
    near = [{"x": v, "h": [v, 1 - v, v]} for v in rng.uniform(0, 1.2, 12)]
    far = [{"x": v, "h": [v, 1 - v, v]} for v in rng.uniform(0.5, 3, 12)]
    near[2] = far[5] = {"x": math.nan, "h": [math.nan] * 3}  # a piece without notes: left out, as compare_sets does
    draws = np.vstack([np.arange(12), rng.integers(0, 12, (6, 12)), np.full((1, 12), 2)])
    got = M.resampled_mean_oa([near, far], ref, draws, features=("x", "h"))
    assert got.shape == (2, 8)
    for s, pieces in enumerate([near, far]):
        for b, idx in enumerate(draws):
            assert got[s, b] == M.mean_oa(M.compare_sets([pieces[i] for i in idx], ref, features=("x", "h")))
    assert got[0, 0] > got[1, 0] and got[0, -1] == got[1, -1] == 0.0  # only the empty piece, drawn 12 times
    with pytest.raises(ValueError, match="equally long"):
        M.resampled_mean_oa([near, far[:5]], ref, draws[:, :5], features=("x",))
