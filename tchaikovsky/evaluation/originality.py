"""Originality: how much of a sample's token sequence appears verbatim in the training data (numpy only).

``NgramIndex`` holds the training token sequences so that n-gram membership is one vectorised pass, found with
polynomial rolling hashes of n-grams (two 31-bit prime moduli: a collision has probability ~1e-9 per query and is
ignored). On it: ``longest_common_run`` (the longest contiguous run of a sample found in one training piece),
``ngram_overlap`` (share of a sample's n-grams found in training) and ``flag_copies`` (samples whose longest run
is long enough to call a copy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["NgramIndex", "longest_common_run", "ngram_overlap", "flag_copies"]

_PRIMES = (2_147_483_647, 2_147_483_629)  # two primes below 2**31: products of residues fit in uint64
_SEPARATOR, _UNKNOWN = 1, 0  # hash values of a piece boundary (training only) and an unseen id (samples only)


def _powers(base: int, n: int, p: int) -> np.ndarray:
    """[base**0, ..., base**(n-1)] mod p as uint64, in O(sqrt(n)) Python steps plus one vectorised product."""
    block = max(1, math.isqrt(max(n, 1)) + 1)
    small = np.empty(block, np.uint64)
    x = 1
    for i in range(block):
        small[i], x = x, x * base % p
    big = np.empty(-(-n // block) or 1, np.uint64)
    y, step = 1, x  # x == base**block
    for j in range(len(big)):
        big[j], y = y, y * step % p
    return ((big[:, None] * small[None, :]) % np.uint64(p)).ravel()[:n]


class NgramIndex:
    """Training token sequences, prepared so that "does this n-gram occur in training?" costs one vectorised pass
    over the training tokens, for any n and for many query n-grams at once.

    Each token id maps to a random residue; for each of two primes p, with a random base B, the prefix sums
    ``P[i] = sum_{k<i} v[k] B^k (mod p)`` give the hash of the window [i, i+n) as ``(P[i+n] - P[i]) B^-i``,
    independent of its position. The two 31-bit hashes form a 62-bit key. Pieces are joined with a separator value
    no query holds, so no n-gram spans two pieces. Memory: about 40 bytes per training token.
    """

    def __init__(self, pieces: np.ndarray | Sequence[np.ndarray], *, seed: int = 0):
        pieces = [np.asarray(pieces)] if isinstance(pieces, np.ndarray) and np.asarray(pieces).ndim == 1 else pieces
        pieces = [np.asarray(p, dtype=np.int64).ravel() for p in pieces]
        rng = np.random.default_rng(seed)
        self.vocab = int(max((p.max() for p in pieces if p.size), default=-1)) + 1
        tokens = np.concatenate([np.r_[p, -1] for p in pieces]) if pieces else np.zeros(0, np.int64)
        self.n_tokens = int(sum(p.size for p in pieces))
        self._tables, self._bases, self._prefix, self._inverse = [], [], [], []
        for p in _PRIMES:
            table = rng.integers(2, p, size=self.vocab, dtype=np.int64).astype(np.uint64)
            base = int(rng.integers(1 << 20, p - 1))
            self._tables.append(table)
            self._bases.append(base)
            values = self._values(tokens, table, training=True)
            self._prefix.append(self._prefix_sums(values, base, p))
            self._inverse.append(_powers(pow(base, p - 2, p), len(tokens) + 1, p))
        self._len = len(tokens)

    @staticmethod
    def _values(tokens: np.ndarray, table: np.ndarray, *, training: bool) -> np.ndarray:
        out = np.full(len(tokens), _SEPARATOR if training else _UNKNOWN, np.uint64)
        ok = (tokens >= 0) & (tokens < len(table))
        out[ok] = table[tokens[ok]]
        return out

    @staticmethod
    def _prefix_sums(values: np.ndarray, base: int, p: int) -> np.ndarray:
        terms = values * _powers(base, len(values), p) % np.uint64(p)  # < 2**62
        prefix = np.zeros(len(values) + 1, np.uint64)
        np.cumsum(terms, out=prefix[1:])  # < n * 2**31: no overflow below 2**33 tokens
        return prefix % np.uint64(p)

    @staticmethod
    def _window_keys(prefix: list[np.ndarray], inverse: list[np.ndarray], n: int, at: np.ndarray | None = None):
        """62-bit keys of the windows [j, j+n) for every start j (``at=None``) or for the starts in ``at``."""
        count = len(prefix[0]) - n
        key = np.zeros(count if at is None else len(at), np.uint64)
        for h, (p, pre, inv) in enumerate(zip(_PRIMES, prefix, inverse)):
            up = np.uint64(p)
            if at is None:
                w = (pre[n:] + up - pre[:count]) % up * inv[:count] % up
            else:
                w = (pre[at + n] + up - pre[at]) % up * inv[at] % up
            key |= w << np.uint64(31 * h)
        return key

    def query_keys(self, ids, n: int) -> np.ndarray:
        """Keys of every n-gram of ``ids`` (in order; empty if shorter than n)."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if n < 1 or len(ids) < n:
            return np.zeros(0, np.uint64)
        prefix, inverse = [], []
        for table, base, p in zip(self._tables, self._bases, _PRIMES):
            prefix.append(self._prefix_sums(self._values(ids, table, training=False), base, p))
            inverse.append(_powers(pow(base, p - 2, p), len(ids) + 1, p))
        return self._window_keys(prefix, inverse, n)

    def _matches(self, keys: np.ndarray, n: int, at: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(for each query key: found in training?, training start positions whose n-gram is a query key)."""
        keys = np.asarray(keys, np.uint64)
        if at is not None:
            at = at[at <= self._len - n]
        if len(keys) == 0 or n < 1 or self._len - n < 0 or (at is not None and len(at) == 0):
            return np.zeros(len(keys), bool), np.zeros(0, np.int64)
        wanted = np.unique(keys)
        train = self._window_keys(self._prefix, self._inverse, n, at)
        pos = np.searchsorted(wanted, train)
        hit = pos < len(wanted)
        hit[hit] = wanted[pos[hit]] == train[hit]
        present = np.zeros(len(wanted), bool)
        present[pos[hit]] = True
        starts = np.flatnonzero(hit) if at is None else at[hit]
        return present[np.searchsorted(wanted, keys)], starts

    def contains(self, keys: np.ndarray, n: int) -> np.ndarray:
        """For each query key (n-gram keys from ``query_keys(.., n)``): does that n-gram occur in training?"""
        return self._matches(keys, n)[0]

    def longest_common_runs(self, samples: Sequence) -> list[int]:
        """For each sample, the length of its longest contiguous token run that also occurs in one training piece.

        All samples are searched together, by galloping (n = 1, 2, 4, ...) then bisection on n, one pass per n
        tested. A pass at n also records the training positions where any sample's n-gram starts: a longer match
        can only start at one of those, so later passes at larger n look only there, and after the first few
        passes each costs far less than a scan of the training set."""
        samples = [np.asarray(s, dtype=np.int64).ravel() for s in samples]
        lo = [0] * len(samples)  # longest run known to occur
        hi = [len(s) + 1 for s in samples]  # shortest run known not to occur
        galloping = [True] * len(samples)
        candidates: dict[int, np.ndarray] = {}  # n -> training starts matching some sample's n-gram
        while True:
            open_ = [i for i in range(len(samples)) if hi[i] - lo[i] > 1]
            if not open_:
                return lo
            n = min(min(max(1, 2 * lo[i]), hi[i] - 1) if galloping[i] else (lo[i] + hi[i]) // 2 for i in open_)
            keys = [self.query_keys(s, n) for s in samples]  # all samples: the recorded starts serve every one
            below = [m for m in candidates if m <= n]
            found, candidates[n] = self._matches(np.concatenate(keys), n, candidates[max(below)] if below else None)
            start = 0
            for i, k in enumerate(keys):
                hit = bool(found[start : start + len(k)].any())
                start += len(k)
                if not lo[i] < n < hi[i]:
                    continue
                if hit:
                    lo[i] = n
                else:
                    hi[i], galloping[i] = n, False

    def ngram_overlap(self, ids, n: int = 8) -> float:
        """Share of the n-grams of ``ids`` that occur in training (NaN if ``ids`` is shorter than n)."""
        keys = self.query_keys(ids, n)
        return float(self.contains(keys, n).mean()) if len(keys) else math.nan


def _index(train) -> NgramIndex:
    return train if isinstance(train, NgramIndex) else NgramIndex(train)


def longest_common_run(sample_ids, train_ids) -> int:
    """Length of the longest contiguous run of ``sample_ids`` that occurs verbatim in the training data
    (``train_ids``: one id array, a list of per-piece arrays, or a prebuilt ``NgramIndex``; runs never span two
    pieces). Exact up to hash collisions (~1e-9); O(N log L) for N training tokens and a sample of length L."""
    return _index(train_ids).longest_common_runs([sample_ids])[0]


def ngram_overlap(sample_ids, train_ngrams, n: int = 8) -> float:
    """Share of the sample's n-grams found in the training data (``train_ngrams``: an ``NgramIndex`` or
    training ids as for ``longest_common_run``)."""
    return _index(train_ngrams).ngram_overlap(sample_ids, n)


def flag_copies(samples: Sequence, train, *, max_run: int = 64, max_fraction: float = 0.5,
                min_run: int = 16) -> list[dict]:
    """Per sample: ``longest_run`` (as ``longest_common_run``), ``length`` and ``copied``, true when the run
    reaches ``max_run`` tokens or ``max_fraction`` of the sample, whichever is shorter, but never for runs under
    ``min_run`` tokens (so a 10-token sample is not a "copy" for sharing 5 tokens)."""
    samples = [np.asarray(s, dtype=np.int64).ravel() for s in samples]
    runs = _index(train).longest_common_runs(samples)
    out = []
    for s, r in zip(samples, runs):
        threshold = max(min_run, min(max_run, max_fraction * len(s)))
        out.append({"longest_run": int(r), "length": int(len(s)), "copied": bool(r >= threshold and r > 0)})
    return out
