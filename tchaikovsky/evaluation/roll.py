"""The scorer's view of a piece: a beat-quantised roll of its decoded notes, cut into windows, augmented.

One frame per 16th note from time 0 (``frames``): the pitch classes sounding and starting, the lowest and highest
sounding pitch, how many notes sound and start, silence, the mean pitch. It reads pitched notes (drums ignored)
from a symusic Score or MIDI file, never our tokens, so the scorer does not share the generator's view.
``augment`` draws one training window, time-stretched (frames resampled: tempo) and transposed (pitch classes
rolled, heights shifted).
"""

from __future__ import annotations

import functools
import os

import numpy as np

from tchaikovsky.evaluation import features as F

__all__ = ["FRAMES_PER_QUARTER", "N_CHANNELS", "frames", "frames_of", "windows", "augment"]

FRAMES_PER_QUARTER = 4  # one frame per 16th note
N_CHANNELS = 30
HEIGHT_CHANNELS = (24, 25, 29)  # channels that hold a pitch height: transposition shifts them


def frames(score_or_path, max_frames: int = 4096) -> np.ndarray:
    """The roll of a piece's pitched notes, float32 (n_frames, N_CHANNELS), one frame per 16th note from time 0
    (at most ``max_frames``, at least 1): 0-11 the pitch classes sounding (log-scaled counts, 1 for one note),
    12-23 those starting, 24 / 25 the lowest / highest sounding pitch ((p - 60) / 24; 0 in silence), 26 / 27 the
    number of notes sounding / starting (/ 6), 28 silence, 29 the mean sounding pitch. Drums are ignored."""
    notes = F.Notes(score_or_path)
    if notes.n == 0:
        return np.zeros((1, N_CHANNELS), np.float32)
    start = np.rint(notes.time * FRAMES_PER_QUARTER / notes.tpq).astype(np.int64)
    end = np.maximum(np.rint(notes.end * FRAMES_PER_QUARTER / notes.tpq).astype(np.int64), start + 1)
    n = int(min(end.max(), max_frames))
    keep = start < n
    start, end, pitch = start[keep], np.minimum(end[keep], n), notes.pitch[keep]
    roll = np.zeros((n + 1, 128), np.int32)  # difference array: +1 at a note's start, -1 at its end
    np.add.at(roll, (start, pitch), 1)
    np.add.at(roll, (end, pitch), -1)
    sounding = np.cumsum(roll, axis=0)[:n] > 0  # (n, 128)
    onsets = np.zeros((n, 128), bool)
    onsets[start, pitch] = True
    octaves = lambda r: r[:, :120].reshape(n, 10, 12).sum(axis=1) + np.pad(r[:, 120:], ((0, 0), (0, 4)))  # noqa
    count = sounding.sum(axis=1)
    any_on = count > 0
    idx = np.arange(128)
    low = np.where(any_on, np.where(sounding, idx, 999).min(axis=1), 60)
    high = np.where(any_on, np.where(sounding, idx, -1).max(axis=1), 60)
    mean = np.where(any_on, (sounding * idx).sum(axis=1) / np.maximum(count, 1), 60)
    x = np.concatenate([
        np.log1p(octaves(sounding)) / np.log(2.0), np.minimum(octaves(onsets), 1),
        np.stack([(low - 60) / 24, (high - 60) / 24, count / 6, onsets.sum(axis=1) / 6, ~any_on, (mean - 60) / 24],
                 axis=1),
    ], axis=1)
    return x.astype(np.float32)


@functools.lru_cache(maxsize=4096)
def _file_frames(path: str, mtime_ns: int, size: int, max_frames: int) -> np.ndarray:
    return frames(path, max_frames)


def frames_of(piece, max_frames: int = 4096) -> np.ndarray:
    """``frames`` of a Piece, MIDI path or Score; a file's roll is computed once per process (cached by path,
    modification time and size)."""
    src = getattr(piece, "path", piece)
    if isinstance(src, (str, os.PathLike)):
        st = os.stat(src)
        return _file_frames(str(src), st.st_mtime_ns, st.st_size, max_frames)
    return frames(src, max_frames)


def windows(x: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows of a roll, the last padded: (n_windows, window, C) and masks (n_windows, window)."""
    n = -(-len(x) // window)
    out = np.zeros((n * window, x.shape[1]), np.float32)
    out[: len(x)] = x
    mask = np.zeros(n * window, np.float32)
    mask[: len(x)] = 1
    return out.reshape(n, window, -1), mask.reshape(n, window)


def augment(x: np.ndarray, rng: np.random.Generator, window: int, transpose: int = 6,
            tempo: tuple[float, float] = (0.75, 1.33), start: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One crop of ``window`` frames of the roll ``x`` from frame ``start`` (default: random; clipped so the crop
    fits), time-stretched by a factor drawn log-uniformly in ``tempo`` and transposed by -transpose..transpose-1
    semitones: (window, C) and its mask (window,)."""
    f = float(np.exp(rng.uniform(*np.log(tempo))))  # > 1: slower (more frames per note)
    span = max(1, int(round(window / f)))  # source frames the window covers
    last = max(len(x) - span, 0)
    s = int(rng.integers(0, last + 1)) if start is None else int(np.clip(start, 0, last))
    src = s + np.floor(np.arange(window) / f).astype(np.int64)
    valid = src < len(x)
    out = np.where(valid[:, None], x[np.minimum(src, len(x) - 1)], 0.0).astype(np.float32)
    k = int(rng.integers(-transpose, transpose)) if transpose else 0
    out[:, :12], out[:, 12:24] = np.roll(out[:, :12], k, axis=1), np.roll(out[:, 12:24], k, axis=1)
    on = (out[:, 28] < 0.5) & valid  # frames where something sounds: their heights move
    out[:, HEIGHT_CHANNELS] += np.where(on[:, None], k / 24, 0.0)
    return out, valid.astype(np.float32)
