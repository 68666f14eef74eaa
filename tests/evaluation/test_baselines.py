"""The two baselines on the real chorale fixture: a bigram model that samples and scores, and random tokens."""

import math

import numpy as np
import pytest

from tchaikovsky.data.tokenizer import special_ids
from tchaikovsky.evaluation import baselines as E


def test_bigram_model_and_random_tokens(bach):
    sp = special_ids(bach.tok)
    V = len(bach.tok)
    train = np.concatenate([bach.shards.piece_ids("train", i) for i in range(len(bach.shards.pieces("train")))])
    model = E.BigramModel(train, V)
    for prev in (sp["bos"], int(train[5]), sp["pad"]):  # seen, seen, never a predecessor
        assert model.prob(np.full(V, prev), np.arange(V)).sum() == pytest.approx(1.0)
    seqs = model.sample(5, 200, bos=sp["bos"], eos=sp["eos"], seed=3)
    assert all(s[0] == sp["bos"] and len(s) <= 201 for s in seqs)
    assert all(sp["eos"] not in s[:-1] for s in seqs)
    assert [len(s) for s in seqs] == [len(s) for s in model.sample(5, 200, bos=sp["bos"], eos=sp["eos"], seed=3)]
    # its held-out bits per token lie between a perfect model and the uniform distribution
    val = bach.shards.piece_ids("val", 0)
    assert 0 < model.nll_bits(val) / (len(val) - 1) < math.log2(V)
    rand = E.random_tokens(3, 50, V, bos=sp["bos"], exclude=sp.values(), seed=0)
    assert all(len(r) == 51 and r[0] == sp["bos"] and not np.isin(r[1:], list(sp.values())).any() for r in rand)
