"""Per-piece musical measures: pure functions of the pitched notes of one piece (numpy only).

``piece_metrics`` gathers them for one symusic Score or MIDI file; drum tracks are ignored throughout. The pitch,
polyphony, empty-beat and groove measures follow the definitions of MusPy (H.-W. Dong, K. Chen, J. McAuley,
T. Berg-Kirkpatrick, "MusPy: A Toolkit for Symbolic Music Generation", ISMIR 2020, ``muspy.metrics``), computed here
directly on note arrays. Five equal MusPy's exactly; ``empty_beat_rate`` and ``groove_consistency`` deliberately
differ where MusPy counts one time unit past the end of the piece, as each function's docstring states. Note
density, mean inter-onset interval and the note-length histogram follow the feature set of mgeval (L.-C. Yang,
A. Lerch, "On the evaluation of generative models in music", Neural Computing and Applications, 2018). The tonal and
melodic measures the judge adds (``estimate_key``: Krumhansl-Schmuckler; pitch-class transitions, interval and
inter-onset histograms of the top line) take the same inputs. A piece without pitched notes gives NaN for every
scalar measure; nothing here raises on an empty piece.
"""

from __future__ import annotations

import math

import numpy as np

from tchaikovsky import io

__all__ = [
    "FEATURES", "SCALAR_FEATURES", "DURATION_BINS", "DURATION_LABELS", "piece_metrics", "pitch_range",
    "n_pitch_classes", "pitch_class_entropy", "scale_consistency", "polyphony", "empty_beat_rate",
    "groove_consistency", "measure_resolution", "note_density", "mean_ioi", "duration_histogram", "estimate_key",
    "top_line", "pitch_class_transitions", "interval_histogram", "ioi_histogram", "Notes",
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


Notes = _Notes  # public name: the judge and other note-level readers build one Notes per piece and reuse it


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
    """Share of beats in which no note sounds (MusPy ``empty_beat_rate``).

    Beats are quarter notes counted from time 0 up to the beat holding the last offset; a note covers the beats its
    half-open interval [onset, offset) touches, a zero-length note the beat of its onset. MusPy differs in two
    ways, both one beat past a note's end: a note also fills the beat it ends exactly on (so a one-beat rest after
    it is not seen), and a piece whose last note ends exactly on a beat gets one more (filled) beat. Thus quarter
    notes on beats 0 and 2 give 1/3 here (beat 1 silent), 0 in MusPy (4 beats, all "filled"). MusPy also counts
    drum notes here."""
    tpq = notes.tpq
    first = notes.time // tpq
    last = np.maximum(notes.end - 1, notes.time) // tpq
    n_beats = int(last.max()) + 1
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

    Onsets and offsets are rounded to ``resolution`` steps per quarter note (half to even, as MusPy's
    ``adjust_resolution``); ``measure_res`` defaults to one bar of the piece's first time signature at that
    resolution (96 for 4/4; the measure assumes a constant time signature). Bars run from time 0 to the bar
    holding the last offset. MusPy counts one more bar, empty, when the piece ends exactly on a bar line, and so
    compares the last bar with silence: four identical bars of four quarter notes give 1 here, 1 - 4 / (96 * 4) in
    MusPy. MusPy also counts drum onsets. NaN with fewer than two bars. Identical bars give 1."""
    mres = measure_res or measure_resolution(notes.time_signature, resolution)
    onsets = np.rint(notes.time * resolution / notes.tpq).astype(np.int64)
    ends = np.rint(notes.end * resolution / notes.tpq).astype(np.int64)
    n_measures = int(np.maximum(ends - 1, onsets).max() // mres + 1)
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


# ---------------------------------------------------------------------------------------------------- tonality

# Krumhansl-Kessler key profiles (C. L. Krumhansl, "Cognitive Foundations of Musical Pitch", 1990), C major / minor.
_KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def estimate_key(score_or_path) -> tuple[int, str, float]:
    """(tonic pitch class 0-11, "major" or "minor", correlation) of the best of the 24 keys by the
    Krumhansl-Schmuckler method: Pearson correlation of the duration-weighted pitch-class histogram with each
    rotated Krumhansl-Kessler profile. (0, "major", nan) without notes or with one pitch class only."""
    notes = _Notes(score_or_path)
    hist = np.bincount(notes.pitch % 12, weights=np.maximum(notes.duration, 1), minlength=12)
    if np.count_nonzero(hist) < 2:
        return 0, "major", math.nan
    profiles = np.stack([np.roll(p, t) for p in (_KK_MAJOR, _KK_MINOR) for t in range(12)])  # (24, 12)
    r = np.array([np.corrcoef(hist, q)[0, 1] for q in profiles])
    best = int(np.argmax(r))
    return best % 12, ("major", "minor")[best // 12], float(r[best])


def top_line(score_or_path) -> np.ndarray:
    """The highest pitch at each distinct onset, in time order (the melody as a listener hears it on top, whatever
    the tracks): int64 pitches, shape (n_onsets,)."""
    notes = _Notes(score_or_path)
    order = np.lexsort((-notes.pitch, notes.time))
    t, p = notes.time[order], notes.pitch[order]
    return p[np.r_[True, t[1:] != t[:-1]]] if len(t) else p


def pitch_class_transitions(score_or_path, tonic: int = 0) -> np.ndarray:
    """(12, 12) share of transitions between consecutive notes of ``top_line`` from pitch class i to j, pitch
    classes counted from ``tonic`` (so a piece in D, given tonic 2, reads as if in C). Sums to 1; zeros with
    fewer than two onsets."""
    pc = (top_line(score_or_path) - tonic) % 12
    m = np.zeros((12, 12))
    np.add.at(m, (pc[:-1], pc[1:]), 1.0)
    return m / m.sum() if m.sum() else m


def interval_histogram(score_or_path, max_interval: int = 12) -> np.ndarray:
    """Share of the melodic intervals of ``top_line`` in semitones -max_interval..max_interval (wider leaps
    count in the end bins), shape (2 * max_interval + 1,). Zeros with fewer than two onsets."""
    steps = np.clip(np.diff(top_line(score_or_path)), -max_interval, max_interval) + max_interval
    h = np.bincount(steps, minlength=2 * max_interval + 1).astype(np.float64)
    return h / h.sum() if h.sum() else h


def ioi_histogram(score_or_path) -> np.ndarray:
    """Share of the intervals between consecutive distinct onsets, in beats, over ``DURATION_BINS`` (7 bins, as
    the note-length histogram). Zeros with fewer than two onsets."""
    notes = _Notes(score_or_path)
    gaps = np.diff(np.unique(notes.time)) / notes.tpq
    h = np.histogram(gaps, bins=DURATION_BINS)[0].astype(np.float64)
    return h / h.sum() if h.sum() else h


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
