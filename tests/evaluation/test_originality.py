"""Originality: longest runs copied from training (checked against brute force), n-gram overlap, copy flags."""

import math

import numpy as np
import pytest

from tchaikovsky.evaluation import originality as M


def _brute_longest(sample, pieces):
    best = 0
    for piece in pieces:
        for i in range(len(sample)):
            for j in range(len(piece)):
                k = 0
                while i + k < len(sample) and j + k < len(piece) and sample[i + k] == piece[j + k]:
                    k += 1
                best = max(best, k)
    return best


def test_longest_common_run_finds_planted_runs():
    rng = np.random.default_rng(1)
    train = [rng.integers(0, 40, size=int(rng.integers(30, 200))) for _ in range(25)]
    planted = np.r_[rng.integers(100, 140, 7), train[4][11:58], rng.integers(100, 140, 5)]  # 47 tokens copied
    assert M.longest_common_run(planted, train) == 47
    index = M.NgramIndex(train)
    samples = [rng.integers(0, 40, size=50) for _ in range(4)] + [planted, train[7], np.zeros(0, int), [3]]
    runs = index.longest_common_runs(samples)
    assert runs == [_brute_longest(list(s), [list(p) for p in train]) for s in samples]
    # a run across two training pieces is not one run; ids never seen in training match nothing
    across = np.r_[train[0][-5:], train[1][:5]]
    assert index.longest_common_runs([across])[0] == _brute_longest(list(across), [list(p) for p in train])
    assert M.longest_common_run([999, 1000], train) == 0


def test_ngram_overlap_and_copy_flags():
    rng = np.random.default_rng(2)
    train = rng.integers(0, 1000, size=5000)
    copy = train[100:300]
    fresh = rng.integers(1000, 2000, size=200)
    half = np.r_[train[1000:1030], fresh[:30]]
    assert M.ngram_overlap(copy, train, n=8) == 1.0
    assert M.ngram_overlap(fresh, train, n=8) == 0.0
    assert M.ngram_overlap(half, train, n=8) == pytest.approx(23 / 53)
    assert math.isnan(M.ngram_overlap(copy[:5], train, n=8))
    flags = M.flag_copies([copy, fresh, half, train[:10]], train)
    assert [f["copied"] for f in flags] == [True, False, True, False]  # 10 tokens: under min_run
    assert [f["longest_run"] for f in flags] == [200, 0, 30, 10]
