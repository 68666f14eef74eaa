import math

import numpy as np
import pytest

from tchaikovsky.evaluation.intervals import Difference, Rate, mean_interval, pooled_lift, wilson


def test_wilson_matches_published_values_and_edges():
    # Newcombe (1998), table I: 81/263 -> 0.2553-0.3662; 0/10 -> 0-0.2775; 10/10 -> 0.7225-1
    assert wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-4)
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=5e-4)
    assert wilson(10, 10) == pytest.approx((0.7225, 1.0), abs=5e-4)
    assert all(math.isnan(x) for x in wilson(0, 0))
    with pytest.raises(ValueError):
        wilson(5, 4)


def test_rate_counts_every_trial_and_prints_n():
    r = Rate.of([True, False, False, True, None])  # a failed piece (None) is a miss, not left out
    assert (r.k, r.n) == (2, 5) and r.value == pytest.approx(0.4)
    assert str(r).endswith("(2/5)") and Rate.from_dict(r.to_dict()) == r


def test_newcombe_difference_matches_published_example_and_significance():
    # Newcombe (1998), table II, method 10: 56/70 - 48/80 -> 0.0524 .. 0.3339
    d = Difference(Rate(56, 70), Rate(48, 80))
    assert d.value == pytest.approx(0.2) and d.interval == pytest.approx((0.0524, 0.3339), abs=5e-4)
    assert d.significant and not Difference(Rate(5, 10), Rate(4, 10)).significant


def test_pooled_lift_against_measured_chance():
    cond = [Rate(12, 16), Rate(5, 16)]
    chance = [Rate(0, 16), Rate(3, 16)]
    out = pooled_lift(cond, chance, seed=1)
    assert out["lift"] == pytest.approx(np.mean([12 / 16 - 0, 5 / 16 - 3 / 16]))
    assert out["lo"] < out["lift"] < out["hi"] and out["significant"]
    same = pooled_lift([Rate(4, 16)], [Rate(4, 16)], seed=1)
    assert same["lift"] == 0 and same["lo"] < 0 < same["hi"] and not same["significant"]


def test_mean_interval_covers_the_mean_and_ignores_nan():
    out = mean_interval([0.8, 0.7, 0.9, float("nan"), 0.75], seed=0)
    assert out["n"] == 4 and out["lo"] <= out["mean"] <= out["hi"]
    assert math.isnan(mean_interval([])["mean"])
