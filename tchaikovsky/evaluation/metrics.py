"""Objective measures of generated music: per-piece statistics, set-level comparison, and originality.

Three layers, all numpy only:

* **Per piece** (``piece_metrics``): pitch and rhythm statistics of one symusic Score or MIDI file, pitched notes
  only (drum tracks are ignored). The pitch, polyphony, empty-beat and groove measures follow the definitions of
  MusPy (H.-W. Dong, K. Chen, J. McAuley, T. Berg-Kirkpatrick, "MusPy: A Toolkit for Symbolic Music Generation",
  ISMIR 2020, ``muspy.metrics``), computed here directly on note arrays; deviations are stated per function.
  Note density, mean inter-onset interval and the note-length histogram follow the feature set of mgeval
  (L.-C. Yang, A. Lerch, "On the evaluation of generative models in music", Neural Computing and Applications,
  2018). A piece without pitched notes gives NaN for every measure; nothing here raises on an empty piece.
* **Per set** (``compare_sets``, ``intra_inter``): mgeval's relative measure. For each feature, the distances
  between pieces *within* the reference set (intra-set) are compared with the distances *from* each generated piece
  *to* each reference piece (inter-set): when the generated pieces are distributed like the reference, the two
  distance distributions coincide, so their overlapped area (OA) is near 1 and their KL divergence near 0.
  mgeval estimates the two densities with Gaussian KDEs; here both samples are binned on the *same* histogram
  bins (``overlapped_area``, ``kl_divergence``), which needs no bandwidth and no scipy, is exact for
  ``OA(a, a) == 1`` and gives 0 for samples in disjoint bins.
* **Originality** (``NgramIndex``, ``longest_common_run``, ``ngram_overlap``, ``flag_copies``): how much of a
  sample's token sequence appears verbatim in the training data, found with polynomial rolling hashes of n-grams
  (two 31-bit prime moduli: collisions have probability ~1e-9 per query and are ignored).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from tchaikovsky import io

__all__ = [
    "FEATURES", "SCALAR_FEATURES", "DURATION_BINS", "DURATION_LABELS", "piece_metrics", "pitch_range",
    "n_pitch_classes", "pitch_class_entropy", "scale_consistency", "polyphony", "empty_beat_rate",
    "groove_consistency", "measure_resolution", "note_density", "mean_ioi", "duration_histogram",
    "overlapped_area", "kl_divergence", "intra_inter", "compare_sets", "mean_oa", "NgramIndex", "longest_common_run",
    "ngram_overlap", "flag_copies",
]

RESOLUTION = 24  # time steps per quarter note for onset grids (MusPy's default resolution)

# Note-length bins in beats (quarter notes): bin k is centred on 2**k beats, k = -3..3, with edges at 2**(k +- 1/2),
# so 32nd, 16th, 8th, quarter, half, whole and double-whole notes each fall in the middle of their own bin; the
# first and last bins are open (everything shorter / longer).
DURATION_BINS = np.concatenate([[0.0], 2.0 ** (np.arange(-3, 3) + 0.5), [np.inf]])
DURATION_LABELS = ("1/8", "1/4", "1/2", "1", "2", "4", "8")

SCALAR_FEATURES = (
    "pitch_range", "n_pitch_classes", "pitch_class_entropy", "scale_consistency", "polyphony", "empty_beat_rate",
    "groove_consistency", "note_density", "mean_ioi",
)
FEATURES = SCALAR_FEATURES + ("duration_histogram",)  # what compare_sets compares by default

_MAJOR = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], bool)  # C major
_MINOR = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0], bool)  # C natural minor
_SCALES = np.stack([np.roll(m, r) for m in (_MAJOR, _MINOR) for r in range(12)])  # (24, 12)


# ---------------------------------------------------------------------------------------------------- notes


class _Notes:
    """The pitched notes of a piece as flat arrays: ticks (int64), pitches, and onset/offset times in seconds."""

    def __init__(self, score_or_path):
        if isinstance(score_or_path, _Notes):
            self.__dict__.update(score_or_path.__dict__)
            return
        score = io.load_score(score_or_path, "tick")
        self.tpq = int(score.ticks_per_quarter)
        tracks = [t for t in score.tracks if not t.is_drum and len(t.notes) > 0]
        arrays = [t.notes.numpy() for t in tracks]

        def cat(key, dtype):
            return np.concatenate([a[key] for a in arrays]).astype(dtype) if arrays else np.zeros(0, dtype)

        self.time = cat("time", np.int64)
        self.duration = np.maximum(cat("duration", np.int64), 0)
        self.pitch = cat("pitch", np.int64)
        sigs = list(score.time_signatures)
        self.time_signature = (int(sigs[0].numerator), int(sigs[0].denominator)) if sigs else (4, 4)
        self._score = score
        self._seconds = None

    @property
    def n(self) -> int:
        return len(self.pitch)

    @property
    def end(self) -> np.ndarray:
        return self.time + self.duration

    def seconds(self) -> tuple[np.ndarray, np.ndarray]:
        """(onsets, offsets) in seconds through the piece's tempo map, in the same note order as the tick arrays."""
        if self._seconds is None:
            sec = self._score.to("second")
            arrays = [t.notes.numpy() for t in sec.tracks if not t.is_drum and len(t.notes) > 0]
            on = np.concatenate([a["time"] for a in arrays]).astype(np.float64) if arrays else np.zeros(0)
            dur = np.concatenate([a["duration"] for a in arrays]).astype(np.float64) if arrays else np.zeros(0)
            self._seconds = (on, on + np.maximum(dur, 0.0))
        return self._seconds


def _nan_if_empty(fn):
    def wrapped(score_or_path, *args, **kwargs):
        notes = _Notes(score_or_path)
        return math.nan if notes.n == 0 else fn(notes, *args, **kwargs)

    wrapped.__name__, wrapped.__doc__, wrapped.__wrapped__ = fn.__name__, fn.__doc__, fn
    return wrapped


def _pitch_class_counts(notes: _Notes) -> np.ndarray:
    return np.bincount(notes.pitch % 12, minlength=12).astype(np.float64)


def _union_length(start: np.ndarray, end: np.ndarray) -> int:
    """Total length covered by the union of the intervals [start, end) (empty intervals ignored)."""
    keep = end > start
    start, end = start[keep], end[keep]
    if start.size == 0:
        return 0
    order = np.argsort(start, kind="stable")
    start, end = start[order], end[order]
    reach = np.maximum.accumulate(end)
    new = np.r_[True, start[1:] > reach[:-1]]  # an interval starting after everything so far ends opens a segment
    first = np.flatnonzero(new)
    last = np.r_[first[1:] - 1, len(start) - 1]
    return int((reach[last] - start[first]).sum())


# ---------------------------------------------------------------------------------------------------- per piece


@_nan_if_empty
def pitch_range(notes) -> float:
    """Highest minus lowest pitch, in semitones (MusPy ``pitch_range``; NaN, not 0, without notes)."""
    return float(notes.pitch.max() - notes.pitch.min())


@_nan_if_empty
def n_pitch_classes(notes) -> float:
    """Number of distinct pitch classes (0-11) used (MusPy ``n_pitch_classes_used``)."""
    return float(np.count_nonzero(_pitch_class_counts(notes)))


@_nan_if_empty
def pitch_class_entropy(notes) -> float:
    """Shannon entropy in bits of the normalised 12-bin pitch-class histogram of the notes (MusPy
    ``pitch_class_entropy``, after Wu & Yang 2020): 0 for one pitch class, log2(12) for all twelve equally often."""
    p = _pitch_class_counts(notes)
    p = p[p > 0] / p.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0: no "-0.0"


@_nan_if_empty
def scale_consistency(notes) -> float:
    """Largest share of notes inside one scale, over the 24 major and natural-minor scales (MusPy
    ``scale_consistency``, after Mogren 2016): 1 for a piece that stays in one diatonic scale."""
    counts = _pitch_class_counts(notes)
    return float((_SCALES.astype(np.float64) @ counts).max() / counts.sum())


@_nan_if_empty
def polyphony(notes) -> float:
    """Mean number of distinct pitches sounding, over the time where at least one pitch sounds (MusPy
    ``polyphony``: piano-roll cells on / time steps with any cell on). Computed exactly in ticks from note
    intervals instead of on a piano roll: sum over pitches of the time that pitch sounds, divided by the time any
    pitch sounds. A block chord of three notes gives 3; a melody 1. NaN when every note has zero length."""
    start, end = notes.time, notes.end
    offset = int(end.max()) + 1  # shift each pitch onto its own stretch of time: one union = per-pitch unions
    per_pitch = _union_length(start + notes.pitch * offset, end + notes.pitch * offset)
    any_pitch = _union_length(start, end)
    return per_pitch / any_pitch if any_pitch > 0 else math.nan


@_nan_if_empty
def empty_beat_rate(notes) -> float:
    """Share of beats (quarter notes, counted from time 0 to the end of the last note) in which no note sounds
    (MusPy ``empty_beat_rate``). A note covers the beats its half-open interval [onset, offset) touches (MusPy
    also counts the beat a note ends exactly on); a zero-length note covers the beat of its onset."""
    tpq = notes.tpq
    first = notes.time // tpq
    last = np.maximum(notes.end - 1, notes.time) // tpq
    n_beats = int(max(last.max() + 1, -(-int(notes.end.max()) // tpq)))
    cover = np.zeros(n_beats + 1, np.int64)
    np.add.at(cover, first, 1)
    np.add.at(cover, last + 1, -1)
    return float(1.0 - np.count_nonzero(np.cumsum(cover)[:n_beats]) / n_beats)


def measure_resolution(time_signature: tuple[int, int] = (4, 4), resolution: int = RESOLUTION) -> int:
    """Time steps per bar at ``resolution`` steps per quarter note: 96 for 4/4, 72 for 3/4, 72 for 6/8."""
    num, den = time_signature
    return max(1, int(round(resolution * num * 4 / den)))


@_nan_if_empty
def groove_consistency(notes, measure_res: int | None = None, resolution: int = RESOLUTION) -> float:
    """1 - mean Hamming distance between the onset patterns of consecutive bars, each a binary vector of
    ``measure_res`` time steps, divided by ``measure_res`` (MusPy ``groove_consistency``, after Wu & Yang 2020).

    Onsets are quantised to ``resolution`` steps per quarter note; ``measure_res`` defaults to one bar of the
    piece's first time signature at that resolution (96 for 4/4; the measure assumes a constant time signature).
    Bars are counted up to the last bar any note reaches (MusPy adds one more bar when the piece ends exactly on a
    bar line). NaN with fewer than two bars. Identical bars give 1."""
    mres = measure_res or measure_resolution(notes.time_signature, resolution)
    onsets = np.rint(notes.time * resolution / notes.tpq).astype(np.int64)
    ends = np.ceil(notes.end * resolution / notes.tpq).astype(np.int64)
    n_measures = int(max(onsets.max() // mres + 1, -(-int(ends.max()) // mres)))
    if n_measures < 2:
        return math.nan
    cells = np.unique(onsets)  # (bar, position) cells with an onset, as bar * mres + position
    bars = cells // mres
    # sum_m |G_m xor G_m+1| = sum_m (|G_m| + |G_m+1|) - 2 sum_m |G_m and G_m+1|, without building the bar matrix
    total = 2 * len(cells) - np.count_nonzero(bars == 0) - np.count_nonzero(bars == n_measures - 1)
    shared = np.count_nonzero(np.isin(cells + mres, cells))
    hamming = total - 2 * shared
    return float(1.0 - hamming / (mres * (n_measures - 1)))


@_nan_if_empty
def note_density(notes) -> float:
    """Notes per second between the first onset and the last offset (mgeval's note count, per unit time).
    NaN when that span is zero."""
    on, off = notes.seconds()
    span = float(off.max() - on.min())
    return notes.n / span if span > 0 else math.nan


@_nan_if_empty
def mean_ioi(notes) -> float:
    """Mean inter-onset interval in seconds between consecutive *distinct* onsets (mgeval ``avg_IOI``; notes of a
    chord share one onset here, where mgeval would count zero intervals). NaN with fewer than two onsets."""
    on, _ = notes.seconds()
    _, first = np.unique(notes.time, return_index=True)
    times = np.sort(on[first])
    return float(np.diff(times).mean()) if len(times) >= 2 else math.nan


def duration_histogram(score_or_path) -> list[float]:
    """Normalised histogram of note lengths in beats over the fixed ``DURATION_BINS`` (mgeval's note-length
    histogram, on 7 power-of-two bins ``DURATION_LABELS`` = 1/8 ... 8 beats). All NaN without notes."""
    notes = _Notes(score_or_path)
    if notes.n == 0:
        return [math.nan] * (len(DURATION_BINS) - 1)
    counts, _ = np.histogram(notes.duration / notes.tpq, bins=DURATION_BINS)
    return (counts / counts.sum()).tolist()


def piece_metrics(score_or_path, *, resolution: int = RESOLUTION) -> dict:
    """Every per-piece measure of one piece (a symusic Score of any time unit, or a MIDI path), plus ``n_notes``
    and ``duration_s`` (seconds from 0 to the last offset). Pitched notes only. Scalars are floats (NaN when
    undefined: always for a piece without notes); ``duration_histogram`` is a list of 7 floats."""
    notes = _Notes(score_or_path)
    out = {"n_notes": notes.n, "duration_s": float(notes.seconds()[1].max()) if notes.n else 0.0}
    for name in SCALAR_FEATURES:
        fn = globals()[name]
        out[name] = fn(notes, resolution=resolution) if name == "groove_consistency" else fn(notes)
    out["duration_histogram"] = duration_histogram(notes)
    return out


# ---------------------------------------------------------------------------------------------------- per set


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


def _feature_matrix(pieces, feature: str) -> np.ndarray:
    """(n_valid, d) values of ``feature`` over a list of metric dicts (or raw values); rows with NaN dropped."""
    rows = [p[feature] if isinstance(p, dict) else p for p in pieces]
    m = np.array([np.atleast_1d(np.asarray(r, dtype=np.float64)) for r in rows]) if rows else np.zeros((0, 1))
    m = m.reshape(len(rows), -1)
    return m[np.isfinite(m).all(axis=1)]


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


# ---------------------------------------------------------------------------------------------------- originality

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
    no query holds, so no n-gram spans two pieces. Memory: about 40 bytes per training token; building the index
    for 1e7 tokens takes a few seconds, and so does a full pass over them.
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
