"""Regenerate bars of a piece: fill-in-the-middle sampling with a FIM-trained model, spliced into the score.

    out = infill(model, tok, "piece.mid", (5, 8), SampleConfig(top_p=0.95), seeds=[0, 1], temperatures=0.9)
    out[0].score.dump_midi("new.mid")        # the whole piece; only bars 5-8 are new
    out[0].ended, out[0].n_bars              # True, 4: the model closed the middle itself, after exactly 4 bars

The model sees ``[conditions] <Fill_prefix> prefix <Fill_suffix> suffix <Fill_middle>`` (``data.fim``), or with
``order="spm"`` (a model trained with ``fim_spm``: ``data.fim.order_of`` its checkpoint's metadata)
``[conditions] <Fill_suffix> suffix <Fill_prefix> prefix <Fill_middle>``: the prefix is the piece's tokens before bar
``start`` (from BOS), the suffix those from bar ``end + 1`` (to EOS). It writes the
middle with the compiled sampler (``sampling.generate``, so every ``SampleConfig`` control applies, guidance
included): ``Fill_end`` ends it instead of EOS, the other sentinels, BOS, EOS and PAD are banned, and ``Fill_end`` is
held back until the middle holds ``end - start + 1`` bars and replaces any token that would open one more
(``exact_bars``): the middle cannot overrun, and when the model ends it, it holds exactly the bars asked.

The splice is done on the score, never by re-decoding the piece: every note of the original that starts outside the
span is kept as it was (tick, duration, velocity, track); a note that starts before the span and sounds into it is
kept whole, as the model saw it in the prefix (it wrote the middle against it). The notes of the encoded tracks that
start inside the span are replaced by the middle's notes, decoded by miditok and moved to the original's ticks, each
kept whole even where it rings past the span (a tie, as in the data), in a track of their own per program. A note's
onset counts as inside when the tokenizer's grid rounds it into the span (the span begins half a grid step before
its bar line). Tempos, time signatures, pedals and the rest of the score are the original's.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from symusic import Note, Score, Track

from tchaikovsky.config import SampleConfig
from tchaikovsky.data import tokenizer as tok_lib
from tchaikovsky.data.fim import Fill, arrange, check_order
from tchaikovsky.generate.bars import PieceBars, bars_label, first_kinds, parse_bars, piece_bars, seconds_at
from tchaikovsky.generate.sampling import generate

__all__ = ["Infilled", "infill", "infill_bars", "fill_of", "fim_prompt", "middle_budget", "splice"]


@dataclass(frozen=True)
class Infilled:
    """One regenerated piece. ``score``: the whole piece (the original's ticks); ``original``: the piece as given
    (tick time; shared by the results of one call); ``bars``: the span asked (1-based, inclusive); ``ticks``: its
    bar lines in the original's ticks ``(start, end)``; ``prompt``: the ids the model saw; ``middle``: the ids it
    wrote, without ``Fill_end``; ``ended``: whether the model closed the middle (with ``Fill_end``, or by opening
    one bar more, which ``Fill_end`` replaces) rather than running out of its budget, and then ``n_bars`` (the
    bars the middle holds) is the bars asked; ``notes``: its notes placed in the span; ``dropped``: its notes that
    fell past the span's end (a rest written across a bar line moves later notes out)."""

    seed: int
    temperature: float
    score: Score
    original: Score
    bars: tuple[int, int]
    ticks: tuple[int, int]
    prompt: np.ndarray
    middle: np.ndarray
    ended: bool
    n_bars: int
    notes: int
    dropped: int

    def seconds(self) -> tuple[float, float]:
        """The span in seconds of the piece, through its tempo map."""
        start, end = seconds_at(self.score, self.ticks)
        return float(start), float(end)


def fill_of(model, tok, conditions=None) -> Fill:
    """The sentinels of ``model``; ValueError for a model trained without fill-in-the-middle."""
    fill = Fill.of_model(model.config.vocab_size, len(tok), conditions)
    if fill is None:
        raise ValueError("this model was trained without fim_rate, so it has no fill-in-the-middle sentinels and "
                         "cannot regenerate bars: retrain it, or fine-tune it (notebook 03's init_from), with 03's "
                         "fim_rate > 0")
    return fill


def middle_budget(context: int, num_tokens: int) -> int:
    """New tokens the middle may take: ``num_tokens``, but at most half the model's ``context`` (the prefix and the
    suffix keep the rest: the whole FIM window must fit, since sliding it would lose them)."""
    return max(1, min(int(num_tokens), context - context // 2))


def _cuts(pb: PieceBars, i: int, j: int) -> tuple[list[int], list[int]]:
    """Where the prefix may start (nearest first, BOS last) and the suffix end (nearest first, EOS last): at bars."""
    opens = pb.starts[pb.starts >= 0]
    before = [int(p) for p in opens[opens < i][::-1] if p > 1] + [0]  # bar 1's opener follows BOS: BOS instead
    after = [int(q) for q in opens[opens > j]] + [len(pb.ids)]
    return before, after


def fim_prompt(pb: PieceBars, bars: tuple[int, int], fill: Fill, room: int, front=(), *,
               order: str = "psm") -> tuple[np.ndarray, str]:
    """``[front] <Fill_prefix> prefix <Fill_suffix> suffix <Fill_middle>`` (``order="spm"``: ``[front] <Fill_suffix>
    suffix <Fill_prefix> prefix <Fill_middle>``) in at most ``room`` ids, and "" or what it left out. Whole bars
    nearest the span go first, one from each side in turn (the prefix may open with BOS, the suffix end with EOS),
    until the next bar on either side does not fit."""
    check_order(order)
    i, j = pb.span(*bars)
    left = room - len(front) - 3
    if left < 0:
        raise ValueError(f"no room for the prompt: {room} ids for {len(front)} condition tokens and 3 sentinels")
    before, after = (iter(c) for c in _cuts(pb, i, j))
    p, q = i, j  # the prefix is ids[p:i], the suffix ids[j:q]: both empty to begin with
    nb, na = next(before), next(after)
    while True:
        grew = False
        if nb is not None and (i - nb) + (q - j) <= left:
            p, nb, grew = nb, next(before, None), True
        if na is not None and (i - p) + (na - j) <= left:
            q, na, grew = na, next(after, None), True
        if not grew:
            break
    note = ""
    if p > 0 or q < len(pb.ids):
        kept_before = bars_label((pb.bar_of(p) if p else 1, bars[0] - 1)) if p < i and bars[0] > 1 else "no bar"
        kept_after = bars_label((bars[1] + 1, pb.bar_of(q - 1))) if q > j and bars[1] < pb.n_bars else "no bar"
        note = (f"the prompt keeps {kept_before} before the span and {kept_after} after it (of {pb.name}'s "
                f"{pb.n_bars})")
    return arrange(front, pb.ids[p:i], pb.ids[j:q], fill, order).astype(np.int32), note


def splice(pb: PieceBars, tok, bars: tuple[int, int], middle) -> tuple[Score, int, int]:
    """The original score with the notes of bars ``bars`` replaced by those of the middle's ids (see the module's
    docstring); also how many middle notes were placed and how many fell past the span."""
    start, end = pb.lines[bars[0] - 1], pb.lines[bars[1]]
    lo, hi = start - pb.grid / 2, end - pb.grid / 2  # onsets as the tokenizer's grid rounds them
    out = pb.score.copy()
    encoded = tok.config.use_programs
    for track in out.tracks:
        if encoded or not track.is_drum:  # without programs the tokenizer never saw drums: they stay
            a = track.notes.numpy()  # (through numpy: symusic 0.5's in-place filter leaves the notes as they were)
            keep = ~((a["time"] >= lo) & (a["time"] < hi))
            track.notes = Note.from_numpy(a["time"][keep], a["duration"][keep], a["pitch"][keep], a["velocity"][keep])
    gen = tok_lib.decode_ids(tok, middle)  # its first Bar is its tick 0
    scale = pb.score.ticks_per_quarter / gen.ticks_per_quarter
    program = next((t.program for t in pb.score.tracks if not t.is_drum), 0)
    placed = dropped = 0
    for track in gen.tracks:
        a = track.notes.numpy()
        time = start + np.rint(a["time"] * scale).astype(np.int64)
        keep = time < hi
        placed, dropped = placed + int(keep.sum()), dropped + int((~keep).sum())
        if keep.any():
            dur = np.maximum(np.rint(a["duration"][keep] * scale), 1).astype(np.int64)
            new = Track(f"{bars_label(bars)} regenerated", track.program if encoded else program,
                        track.is_drum)
            new.notes = Note.from_numpy(time[keep], dur, a["pitch"][keep], a["velocity"][keep])
            out.tracks.append(new)
    return out, placed, dropped


def infill(model, tok, piece: str | Path | Score, bars, config: SampleConfig, *, seeds=0, temperatures=1.0,
           conditions=None, asked: dict | None = None, order: str = "psm") -> list[Infilled]:
    """Regenerate bars ``bars`` (``(start, end)`` or ``"5-8"``, 1-based and inclusive) of ``piece`` (a MIDI path or
    a symusic Score), once per (seed, temperature) of the numpy broadcast of ``seeds`` and ``temperatures``, in one
    batched ``generate`` call (see the module's docstring).

    ``config``: every control applies (``guidance`` too) but ``min_tokens`` and ``max_bars`` (the bars decide where
    the middle ends); ``num_tokens`` is the middle's budget, at most half the context (``middle_budget``).
    ``conditions``, ``asked``: the run's condition vocabulary and the values asked (``period``, ``composer``,
    ``instrumentation``; missing or "": any), put in front of the prompt. ``order``: the prompt's, "psm" or "spm"
    (``data.fim.order_of`` the model's checkpoint metadata says which it was trained with). Warns when the prompt had to leave bars
    out, and when a middle ran out of tokens before its last bar (it is cut there). Raises ValueError for bars the
    piece does not have (giving its bar count) and for a model without the sentinels."""
    fill_of(model, tok, conditions)
    front = conditions.prefix(**(asked or {})) if conditions is not None else []
    return infill_bars(model, tok, piece_bars(tok, piece), bars, config, seeds=seeds, temperatures=temperatures,
                       conditions=conditions, front=front, order=order)


def infill_bars(model, tok, pb: PieceBars, bars, config: SampleConfig, *, seeds=0, temperatures=1.0,
                conditions=None, front=(), order: str = "psm") -> list[Infilled]:
    """``infill`` of a piece already mapped (``generate.bars.piece_bars``), with the condition ids ``front`` in
    front of the prompt (``conditions.prefix(...)``, or a held-out piece's own)."""
    fill = fill_of(model, tok, conditions)
    bars = parse_bars(bars)
    C = model.config.context
    budget = middle_budget(C, config.num_tokens)
    prompt, note = fim_prompt(pb, bars, fill, C - budget, front, order=order)
    if note:
        warnings.warn(f"{bars_label(bars)}: {note}: the rest does not fit the model's context of {C} tokens "
                      f"beside the {budget} kept for the middle", stacklevel=3)
    sp = tok_lib.special_ids(tok)
    ban = np.zeros(model.config.vocab_size, bool)
    ban[[sp["bos"], sp["eos"], sp["pad"]]] = True
    kinds = np.append(first_kinds(tok)[0], [""] * (model.config.vocab_size - len(tok)))  # merges never cross a bar
    cfg = dataclasses.replace(config, num_tokens=budget, min_tokens=0, max_bars=None)
    seeds, temps = np.broadcast_arrays(np.atleast_1d(seeds), np.atleast_1d(np.asarray(temperatures, np.float32)))
    seqs = generate(model, prompt, cfg, seeds=seeds.ravel(), temperatures=temps.ravel(), tok=tok,
                    conditions=conditions, end=fill.end, ban=ban, exact_bars=bars[1] - bars[0] + 1)
    ticks = (int(pb.lines[bars[0] - 1]), int(pb.lines[bars[1]]))
    out, short = [], []
    for s, t, seq in zip(seeds.ravel(), temps.ravel(), seqs):
        new = np.asarray(seq[len(prompt):], np.int32)
        ended = bool(new.size) and int(new[-1]) == fill.end
        middle = new[:-1] if ended else new
        score, placed, dropped = splice(pb, tok, bars, middle)
        n_bars = int((kinds[middle] == "Bar").sum())
        if not ended:
            short.append(f"seed {int(s)}, temperature {float(t):g}: in bar {bars[0] + max(n_bars, 1) - 1}")
        out.append(Infilled(int(s), float(t), score, pb.score, bars, ticks, prompt, middle, ended, n_bars, placed,
                            dropped))
    if short:
        warnings.warn(f"{bars_label(bars)}: the middle ran out of its {budget}-token budget before the model "
                      f"ended it ({'; '.join(short)}); it is cut there, and the bars after stay silent: raise "
                      "num_tokens (the middle may take up to half the model's context)", stacklevel=3)
    return out
