"""Two trivial music generators to compare a model with: a token bigram model and uniformly random tokens.

Both work on token ids of the run's tokenizer (numpy only), so their output decodes and is measured exactly like
the model's. The bigram model also scores held-out tokens (bits per note beside the model's).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["BigramModel", "random_tokens"]


class BigramModel:
    """A token bigram model fitted on one flat id array (a whole split: pieces framed ``[BOS ... EOS]`` end to end).

    Witten-Bell interpolation with the unigram distribution, so it needs no tuning: ``p(b | a) = (c(a, b) +
    T(a) u(b)) / (c(a) + T(a))``, where ``c`` counts pairs and predecessors, ``T(a)`` is the number of distinct
    tokens seen after ``a`` and ``u`` the add-one-smoothed unigram distribution (``u`` alone for an ``a`` never seen
    as a predecessor). Every probability is positive, so the same model both samples and scores held-out tokens.
    Counts are stored sparsely (sorted pair codes): memory grows with the pairs seen, not the vocabulary squared.
    """

    def __init__(self, ids: np.ndarray, vocab_size: int):
        ids = np.asarray(ids, dtype=np.int64).ravel()
        self.V = int(vocab_size)
        codes, counts = np.unique(ids[:-1] * self.V + ids[1:], return_counts=True)
        self.codes, self.counts = codes, counts.astype(np.float64)
        self.row_ptr = np.searchsorted(codes // self.V, np.arange(self.V + 1))
        self.cum = np.cumsum(self.counts)  # within row a: cum[s:e] - (cum[s-1] or 0)
        self.row_total = np.diff(np.r_[0.0, self.cum][self.row_ptr])
        self.row_types = np.diff(self.row_ptr).astype(np.float64)  # T(a)
        # weight of the bigram (maximum-likelihood) part in row a: c(a) / (c(a) + T(a)); 0 for unseen rows
        self.weight = np.divide(self.row_total, self.row_total + self.row_types, out=np.zeros(self.V),
                                where=self.row_total > 0)
        unigram = np.bincount(ids, minlength=self.V).astype(np.float64) + 1.0
        self.unigram = unigram / unigram.sum()
        self.unigram_cdf = np.cumsum(self.unigram)

    def prob(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """p(nxt | prev), elementwise over two id arrays."""
        prev, nxt = np.asarray(prev, np.int64), np.asarray(nxt, np.int64)
        code = prev * self.V + nxt
        pos = np.minimum(np.searchsorted(self.codes, code), len(self.codes) - 1)
        pair = np.where(self.codes[pos] == code, self.counts[pos], 0.0) if len(self.codes) else np.zeros(len(code))
        total = self.row_total[prev]
        bigram = np.divide(pair, total, out=np.zeros_like(pair), where=total > 0)
        w = self.weight[prev]
        return w * bigram + (1 - w) * self.unigram[nxt]

    def nll_bits(self, ids: np.ndarray) -> float:
        """Total bits to encode ``ids[1:]`` given each previous token (the targets ``train.evaluate`` scores)."""
        ids = np.asarray(ids, np.int64).ravel()
        return float(-np.log2(self.prob(ids[:-1], ids[1:])).sum()) if len(ids) > 1 else 0.0

    def sample(self, n: int, num_tokens: int, *, bos: int, eos: int, seed: int = 0) -> list[np.ndarray]:
        """``n`` sequences ``[bos, ...]`` of up to ``num_tokens`` new tokens, each ending early at ``eos``."""
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(n):
            seq = [bos]
            for _ in range(num_tokens):
                a = seq[-1]
                s, e = self.row_ptr[a], self.row_ptr[a + 1]
                if e > s and rng.random() < self.weight[a]:
                    base = self.cum[s - 1] if s > 0 else 0.0
                    k = s + int(np.searchsorted(self.cum[s:e] - base, rng.random() * self.row_total[a], "right"))
                    b = int(self.codes[min(k, e - 1)] % self.V)
                else:
                    b = int(min(np.searchsorted(self.unigram_cdf, rng.random(), "right"), self.V - 1))
                seq.append(b)
                if b == eos:
                    break
            out.append(np.asarray(seq, np.int32))
        return out


def random_tokens(n: int, num_tokens: int, vocab_size: int, *, bos: int, exclude: Sequence[int] = (),
                  seed: int = 0) -> list[np.ndarray]:
    """``n`` sequences ``[bos, num_tokens ids drawn uniformly from the vocabulary minus ``exclude``]``."""
    allowed = np.setdiff1d(np.arange(vocab_size), np.asarray(list(exclude), np.int64))
    rng = np.random.default_rng(seed)
    return [np.r_[bos, rng.choice(allowed, size=num_tokens)].astype(np.int32) for _ in range(n)]
