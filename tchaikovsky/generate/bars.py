"""Where each bar of a piece sits, in its tokens and in its own ticks: the map that regenerating bars cuts by.

    bars = piece_bars(tok, "piece.mid")
    bars.n_bars                         # 16
    bars.span(5, 8)                     # (first token of bar 5, first token of bar 9) in bars.ids
    parse_bars("5-8")                   # (5, 8): 1-based and inclusive, as a DAW numbers bars

Bars are numbered by their bar lines in the score the tokenizer encodes (miditok's ``get_bars_ticks``, from the
time signatures), up to the bar of the last event it encodes. REMI opens a bar with a ``Bar`` token (with BPE, the
first base token of an id: merges never cross a bar line), except where one of its ``Rest`` tokens covers the bar
line: a bar whose rest begins on its line opens with that Rest (a silent bar, common before a chorale's next line);
one whose line a rest runs across has no token to cut the piece at (``starts`` is -1 there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from miditok.utils import compute_ticks_per_bar, get_bars_ticks
from symusic import Score, TimeSignature

from tchaikovsky import io
from tchaikovsky.data import tokenizer as tok_lib
from tchaikovsky.data.tokenizer import base_tokens
from tchaikovsky.generate.grammar import kind

__all__ = ["PieceBars", "piece_bars", "parse_bars", "bars_label", "first_kinds", "seconds_at"]


def first_kinds(tok) -> tuple[np.ndarray, np.ndarray]:
    """Per id of ``tok``: the kind of its first base token ("" for BPE's word-boundary marker), and how many base
    tokens it stands for; (V,) str and (V,) int64."""
    runs = base_tokens(tok)
    return np.array([kind(r[0]) if r else "" for r in runs]), np.array([len(r) for r in runs], np.int64)


def seconds_at(score: Score, ticks) -> np.ndarray:
    """Seconds at ``ticks`` (an array) of a tick-time score, through its tempo map (120 bpm before the first tempo)."""
    changes = sorted((int(t.time), float(t.mspq)) for t in score.tempos)
    if not changes or changes[0][0] > 0:
        changes.insert(0, (0, 500_000.0))
    times, mspq = (np.array(c, np.float64) for c in zip(*changes))
    rate = mspq / 1e6 / score.ticks_per_quarter  # seconds per tick from each change on
    elapsed = np.concatenate([[0.0], np.cumsum(np.diff(times) * rate[:-1])])
    ticks = np.asarray(ticks, np.float64)
    k = np.maximum(np.searchsorted(times, ticks, side="right") - 1, 0)
    return elapsed[k] + (ticks - times[k]) * rate[k]


def bars_label(bars: tuple[int, int]) -> str:
    """``(5, 8)`` -> "bars 5-8", ``(2, 2)`` -> "bar 2"."""
    return f"bar {bars[0]}" if bars[0] == bars[1] else f"bars {bars[0]}-{bars[1]}"


def parse_bars(text) -> tuple[int, int]:
    """``"5-8"`` (or ``"5"``, or a pair ``(5, 8)``) -> ``(5, 8)``: bars 1-based and inclusive. ValueError for other
    text, a bar below 1 or a start after the end."""
    if isinstance(text, (tuple, list)) and len(text) == 2:
        start, end = (int(v) for v in text)
    else:
        m = re.fullmatch(r"\s*(\d+)\s*(?:[-–:]\s*(\d+)\s*)?", str(text))
        if not m:
            raise ValueError(f"bars {text!r}: write the first and last bar to regenerate, e.g. \"5-8\" (or \"5\")")
        start, end = int(m[1]), int(m[2] or m[1])
    if start < 1 or end < start:
        raise ValueError(f"bars {start}-{end}: bars are numbered from 1, and the first may not come after the last")
    return start, end


@dataclass(frozen=True)
class PieceBars:
    """A piece (``score``, tick time, as given) with its tokens and bars.

    ``ids``: ``[BOS, ..., EOS]`` as ``tokenizer.encode_file`` makes them; ``starts`` (n_bars,): index in ``ids`` of
    the token opening each bar, -1 for a bar without one (a rest runs across its line); ``lines`` (n_bars + 1,):
    the bar lines in the score's own ticks, the last one where the last bar ends; ``grid``: the score's ticks per
    tick of the tokenizer's grid (a note's onset is rounded to it on encoding)."""

    score: Score
    ids: np.ndarray
    starts: np.ndarray
    lines: np.ndarray
    grid: float
    name: str = "the piece"

    @property
    def n_bars(self) -> int:
        return len(self.starts)

    def span(self, start: int, end: int) -> tuple[int, int]:
        """``(i, j)``: bars ``start..end`` (1-based, inclusive) are ``ids[i:j]``; ``j`` is the EOS when ``end`` is the
        last bar. ValueError for bars the piece does not have, giving its bar count, or bars that cannot be cut."""
        start, end = parse_bars((start, end))
        if end > self.n_bars:
            raise ValueError(f"bars {start}-{end}: {self.name} has {self.n_bars} bar(s), as the tokenizer counts "
                             f"them: ask for bars within 1-{self.n_bars}")
        for b in (start, end + 1):
            if b <= self.n_bars and self.starts[b - 1] < 0:
                raise ValueError(f"bar {b} of {self.name} begins inside a rest the tokenizer wrote across its bar "
                                 "line (no Bar token to cut at): choose bars that begin and end elsewhere")
        return int(self.starts[start - 1]), int(self.starts[end] if end < self.n_bars else len(self.ids) - 1)

    def bar_of(self, index: int) -> int:
        """The bar (1-based) that token ``index`` of ``ids`` belongs to (0 for BOS and what precedes bar 1)."""
        opened = self.starts[(self.starts >= 0) & (self.starts <= index)]
        return int(np.flatnonzero(self.starts == opened.max())[0] + 1) if opened.size else 0


def _last_line(pre: Score, last: int) -> int:
    """Where the bar starting at tick ``last`` of the preprocessed score ends, by the time signature there."""
    sigs = [ts for ts in pre.time_signatures if ts.time <= last and ts.numerator > 0 and ts.denominator > 0]
    sig = sigs[-1] if sigs else TimeSignature(0, 4, 4)
    return last + compute_ticks_per_bar(sig, pre.ticks_per_quarter)


def piece_bars(tok, piece: str | Path | Score) -> PieceBars:
    """The bars of ``piece`` (a MIDI path or a symusic Score) as ``tok`` encodes it; ValueError when it encodes to
    no bar."""
    score = io.load_score(piece, "tick")
    name = Path(piece).name if isinstance(piece, (str, Path)) else "the piece"
    seq, pre = tok_lib.encode_events(tok, score)
    kinds, lengths = first_kinds(tok)
    ids = np.asarray(seq.ids, np.int64)
    if not ids.size or "Bar" not in kinds[ids]:
        raise ValueError(f"{name} encodes to no bar: nothing to regenerate")
    first_base = np.concatenate([[0], np.cumsum(lengths[ids])[:-1]])  # index in seq.events of each id's first
    lines = np.asarray(get_bars_ticks(pre), np.int64)
    at = {}  # tick -> the id opening a bar there: its Bar, else a Rest beginning on the line
    for k in np.flatnonzero(np.isin(kinds[ids], ["Bar", "Rest"]))[::-1]:
        time = int(seq.events[int(first_base[k])].time)
        if kinds[ids[k]] == "Bar" or time not in at or kinds[ids[at[time]]] != "Bar":
            at[time] = int(k)
    n_bars = int(np.searchsorted(lines, max(e.time for e in seq.events), side="right"))  # to the last event's
    starts = np.array([at.get(int(t), -2) + 1 for t in lines[:n_bars]], np.int64)  # + 1: after BOS (-1: none)
    lines = np.append(lines[:n_bars], lines[n_bars] if len(lines) > n_bars else _last_line(pre, int(lines[-1])))
    grid = score.ticks_per_quarter / pre.ticks_per_quarter
    framed = np.concatenate([[tok_lib.special_ids(tok)["bos"]], ids, [tok_lib.special_ids(tok)["eos"]]])
    return PieceBars(score, framed.astype(np.int32), starts, np.rint(lines * grid).astype(np.int64), grid, name)
