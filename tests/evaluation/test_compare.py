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
