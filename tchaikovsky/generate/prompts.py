"""Prompts: the one place token prompts are made, from nothing, a MIDI file, a score or chord symbols.

A prompt is ``[BOS, tokens of the music]`` without the EOS that ``tokenizer.encode_file`` puts at the end, so the
model continues the music instead of ending it::

    tok = tokenizer.load_tokenizer(run_dir)
    ids = make_prompt(tok)                                   # [BOS]: unconditional
    ids = make_prompt(tok, midi="piece.mid", bars=4)         # the opening four bars of a piece
    ids = make_prompt(tok, chords="Dm7 G7 Cmaj7", tokens=64)
    ids = make_prompt(tok, midi=scores.motif(["E4", "D4", "C4"], 1))
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from symusic import Score

from tchaikovsky import io
from tchaikovsky.data import tokenizer as tok_lib
from tchaikovsky.generate import scores


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def _tick_at_seconds(score: Score, seconds: float) -> int:
    """The tick reached after ``seconds`` of playback, following the tempo map (120 bpm before the first tempo)."""
    tpq = score.ticks_per_quarter
    changes = sorted((t.time, t.mspq) for t in score.tempos)
    if not changes or changes[0][0] > 0:
        changes.insert(0, (0, 500_000))
    elapsed = 0.0
    for (time, mspq), nxt in zip(changes, [*changes[1:], None]):
        sec_per_tick = mspq / 1e6 / tpq
        span = None if nxt is None else (nxt[0] - time) * sec_per_tick
        if span is None or elapsed + span >= seconds:
            return int(math.ceil(time + (seconds - elapsed) / sec_per_tick - 1e-6))
        elapsed += span
    raise AssertionError("unreachable")


def bar_lines(score: Score) -> np.ndarray:
    """Ticks (int64) of the bar lines of a tick-time score up to its end, from its time signatures (4/4 until the
    first, and when it has none): what ``symusic.Score.get_downbeats`` gives, on every admitted symusic version."""
    tpq, end = score.ticks_per_quarter, max(int(score.end()), 1)
    sigs = sorted(((int(t.time), t.numerator, t.denominator) for t in score.time_signatures), key=lambda s: s[0])
    if not sigs or sigs[0][0] > 0:
        sigs.insert(0, (0, 4, 4))
    lines = []
    for (start, num, den), nxt in zip(sigs, [s[0] for s in sigs[1:]] + [end]):
        bar = max(1, round(tpq * 4 * num / den))
        lines.extend(range(start, min(nxt, end), bar))
    return np.asarray(lines, np.int64)


def cut_score(score: Score, *, bars: int | None = None, seconds: float | None = None) -> Score:
    """The first ``bars`` bars (bar lines from the score's time signatures; 4/4 if it has none) or the first
    ``seconds`` seconds of a tick-time score. Notes sounding across the cut are shortened to end at it."""
    _check(bars is None or seconds is None, "give bars or seconds, not both")
    if bars is not None:
        _check(isinstance(bars, int) and not isinstance(bars, bool) and bars >= 1,
               f"bars={bars!r} must be an integer >= 1")
        downbeats = bar_lines(score)
        if bars >= len(downbeats):
            return score.copy()
        end = int(downbeats[bars])
    elif seconds is not None:
        _check(isinstance(seconds, (int, float)) and seconds > 0, f"seconds={seconds!r} must be > 0")
        end = _tick_at_seconds(score, float(seconds))
    else:
        return score.copy()
    return score.clip(0, end, clip_end=True)


def make_prompt(tok, *, midi: str | Path | Score | None = None, chords: str = "", tokens: int | None = None,
                bars: int | None = None, seconds: float | None = None) -> np.ndarray:
    """A prompt, int32 ids: ``[BOS]`` alone (unconditional), or ``[BOS, tokens of the music]`` without the EOS that
    ``tokenizer.encode_file`` ends a piece with, so the model continues the music instead of ending it.

    Arguments:
        tok: the tokenizer.
        midi: a MIDI file (or a ``symusic.Score``) whose opening to continue; None or "" for none.
        chords: a chord progression to continue instead, e.g. "Dm7 G7 Cmaj7" (``chord_progression``'s defaults).
        bars, seconds: cut the music first, at a bar line of its time signature or after that much playback.
        tokens: then keep at most that many tokens after BOS.

    With no music, ``[BOS]`` (bars, seconds and tokens are ignored). Raises FileNotFoundError for a missing file,
    ValueError for both ``midi`` and ``chords``, an unreadable file, bad chords, or music without encodable notes.
    """
    no_midi = midi is None or (isinstance(midi, str) and not midi)
    _check(no_midi or not chords, "give midi or chords, not both")
    _check(tokens is None or (isinstance(tokens, int) and tokens >= 0), f"tokens={tokens!r} must be an integer >= 0")
    _check(bars is None or seconds is None, "give bars or seconds, not both")
    if no_midi and not chords:
        return np.array([tok_lib.special_ids(tok)["bos"]], np.int32)
    score = scores.chord_progression(chords) if chords else io.load_score(midi)
    label = f"chords {chords!r}" if chords else "the score" if isinstance(midi, Score) else str(midi)
    what = f"the first {bars} bar(s) of " if bars else f"the first {seconds:g} s of " if seconds else ""
    cut = cut_score(score, bars=bars, seconds=seconds)
    ids, n_notes = tok_lib.encode_with_notes(tok, cut)
    if n_notes == 0:
        lo, hi = tok.config.pitch_range
        raise ValueError(f"no notes in {what}{label} that the tokenizer can encode (pitches {lo}..{hi - 1})")
    ids = ids[:-1]  # drop EOS
    return ids if tokens is None else ids[: 1 + tokens]
