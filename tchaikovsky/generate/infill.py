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
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from symusic import Note, Score, Track

from tchaikovsky.config import SampleConfig
from tchaikovsky.data import tokenizer as tok_lib
from tchaikovsky.data.fim import Fill, arrange, check_order
from tchaikovsky.generate.bars import PieceBars, bars_label, first_kinds, parse_bars, piece_bars, seconds_at
from tchaikovsky.generate.rerank import candidate_seeds
from tchaikovsky.generate.sampling import generate
from tchaikovsky.model import token_losses

__all__ = ["Infilled", "infill", "infill_bars", "fill_of", "fim_prompt", "middle_budget", "splice", "token_bits",
           "lead_in", "lead_in_bits", "LEAD_BARS"]

LEAD_BARS = 1  # best-of-N infilling ranks a middle by the bits of this many bars after the span, given it


@dataclass(frozen=True)
class Infilled:
    """One regenerated piece. ``score``: the whole piece (the original's ticks); ``original``: the piece as given
    (tick time; shared by the results of one call); ``bars``: the span asked (1-based, inclusive); ``ticks``: its
    bar lines in the original's ticks ``(start, end)``; ``prompt``: the ids the model saw; ``middle``: the ids it
    wrote, without ``Fill_end``; ``ended``: whether the model closed the middle (with ``Fill_end``, or by opening
    one bar more, which ``Fill_end`` replaces) rather than running out of its budget, and then ``n_bars`` (the
    bars the middle holds) is the bars asked; ``notes``: its notes placed in the span; ``dropped``: its notes that
    fell past the span's end (a rest written across a bar line moves later notes out). With best-of-N (``rerank``):
    ``rank``, the kept candidate (0: the plain draw of ``seed``; its seed is ``rerank.candidate_seeds(seed, n)
    [rank]``), and ``lead_bits``, the bits the model gives the bars after the span once this middle is in place
    (``lead_in_bits``; NaN when nothing was ranked)."""

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
    rank: int = 0
    lead_bits: float = math.nan

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


@eqx.filter_jit
def _nll(model, tokens):
    return token_losses(model, tokens, jnp.float32)[0]  # (B, T) nats of each next token


def token_bits(model, seq, pad: int) -> np.ndarray:
    """Bits of each token of ``seq`` after the first, given all before it (teacher forcing): (len(seq) - 1,). One
    compiled shape for every sequence: padded to the model's context + 1, which ``seq`` must fit."""
    C = model.config.context
    if len(seq) > C + 1:
        raise ValueError(f"a sequence of {len(seq)} tokens does not fit the context of {C} + 1")
    window = np.full((1, C + 1), pad, np.int32)
    window[0, : len(seq)] = seq
    return np.asarray(_nll(model, jnp.asarray(window)))[0, : len(seq) - 1] / math.log(2)


def lead_in(pb: PieceBars, bars, lead_bars: int = LEAD_BARS) -> np.ndarray:
    """The ids of the first ``lead_bars`` bars after bars ``bars`` of ``pb`` (to its EOS when fewer follow; the EOS
    alone when the span ends the piece): what a regenerated middle has to lead into."""
    _, j = pb.span(*parse_bars(bars))
    after = _cuts(pb, j, j)[1]
    return pb.ids[j: after[min(lead_bars, len(after)) - 1]] if j < len(pb.ids) - 1 else pb.ids[j:]


def lead_in_bits(model, pb: PieceBars, bars, middles, pad: int, front=(), *, lead_bars: int = LEAD_BARS,
                 rows: int = 8) -> np.ndarray:
    """(len(middles),): for each middle (ids, without ``Fill_end``) put in place of bars ``bars``, the bits the
    model gives the ``lead_in`` bars after them, left to right, given ``front`` and as much of the piece before the
    span and the middle as fits the context: how well the middle leads into what follows. Teacher forcing in batches
    of ``rows`` (one compiled shape)."""
    i, _ = pb.span(*parse_bars(bars))
    C = model.config.context
    head = lead_in(pb, bars, lead_bars)[: C // 2]
    room = C + 1 - len(front) - len(head)
    seqs = [np.concatenate([np.asarray(front, np.int32), np.concatenate([pb.ids[:i], m]).astype(np.int32)[-room:],
                            head]) for m in middles]
    out = np.zeros(len(seqs))
    for k in range(0, len(seqs), rows):
        window = np.full((rows, C + 1), pad, np.int32)
        for r, seq in enumerate(seqs[k: k + rows]):
            window[r, : len(seq)] = seq
        nll = np.asarray(_nll(model, jnp.asarray(window)))
        for r, seq in enumerate(seqs[k: k + rows]):
            out[k + r] = nll[r, len(seq) - 1 - len(head): len(seq) - 1].sum() / math.log(2)
    return out


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
           conditions=None, asked: dict | None = None, order: str = "psm", rerank: int = 1) -> list[Infilled]:
    """Regenerate bars ``bars`` (``(start, end)`` or ``"5-8"``, 1-based and inclusive) of ``piece`` (a MIDI path or
    a symusic Score), once per (seed, temperature) of the numpy broadcast of ``seeds`` and ``temperatures``, in one
    batched ``generate`` call (see the module's docstring).

    ``config``: every control applies (``guidance`` too) but ``min_tokens`` and ``max_bars`` (the bars decide where
    the middle ends); ``num_tokens`` is the middle's budget, at most half the context (``middle_budget``).
    ``conditions``, ``asked``: the run's condition vocabulary and the values asked (``period``, ``composer``,
    ``instrumentation``; missing or "": any), put in front of the prompt. ``order``: the prompt's, "psm" or "spm"
    (``data.fim.order_of`` the model's checkpoint metadata says which it was trained with). ``rerank``: best of N;
    each requested piece draws N middles (``rerank.candidate_seeds``: the first is the plain draw) in the same batched
    call, and keeps the closed one that leads best into the bars after the span (the fewest ``lead_in_bits``: the
    suffix read left to right, as the model reads music best), N times the sampling cost. Warns when the prompt had
    to leave bars out, and when a kept middle ran out of tokens before its last bar (it is cut there). Raises
    ValueError for bars the piece does not have (giving its bar count) and for a model without the sentinels."""
    fill_of(model, tok, conditions)
    front = conditions.prefix(**(asked or {})) if conditions is not None else []
    return infill_bars(model, tok, piece_bars(tok, piece), bars, config, seeds=seeds, temperatures=temperatures,
                       conditions=conditions, front=front, order=order, rerank=rerank)


def _keep(model, pb, bars, middles, ended, front, pad: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per requested piece (``n`` candidates each, in order): the kept candidate's index and every candidate's
    ``lead_in_bits`` (inf: not closed, never kept unless none is; NaN for all with ``n = 1``)."""
    if n == 1:
        return np.zeros(len(middles), int), np.full(len(middles), math.nan)
    bits = np.where(ended, lead_in_bits(model, pb, bars, middles, pad, front), math.inf)
    return np.argmin(bits.reshape(-1, n), axis=1), bits  # ties, and none closed: the lower rank, the plain draw


def infill_bars(model, tok, pb: PieceBars, bars, config: SampleConfig, *, seeds=0, temperatures=1.0,
                conditions=None, front=(), order: str = "psm", rerank: int = 1) -> list[Infilled]:
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
    seeds, temps = seeds.ravel(), temps.ravel()
    cands = np.asarray([candidate_seeds(s, rerank) for s in seeds] if rerank != 1 else seeds[:, None]).ravel()
    seqs = generate(model, prompt, cfg, seeds=cands, temperatures=np.repeat(temps, rerank), tok=tok,
                    conditions=conditions, end=fill.end, ban=ban, exact_bars=bars[1] - bars[0] + 1)
    new = [np.asarray(seq[len(prompt):], np.int32) for seq in seqs]
    ended = np.asarray([bool(x.size) and int(x[-1]) == fill.end for x in new])
    middles = [x[:-1] if e else x for x, e in zip(new, ended)]
    kept, bits = _keep(model, pb, bars, middles, ended, front, sp["pad"], rerank)
    ticks = (int(pb.lines[bars[0] - 1]), int(pb.lines[bars[1]]))
    out, short = [], []
    for r, (s, t, k) in enumerate(zip(seeds, temps, kept)):
        c = r * rerank + int(k)
        middle = middles[c]
        score, placed, dropped = splice(pb, tok, bars, middle)
        n_bars = int((kinds[middle] == "Bar").sum())
        if not ended[c]:
            short.append(f"seed {int(s)}, temperature {float(t):g}: in bar {bars[0] + max(n_bars, 1) - 1}")
        out.append(Infilled(int(s), float(t), score, pb.score, bars, ticks, prompt, middle, bool(ended[c]), n_bars,
                            placed, dropped, int(k), float(bits[c])))
    if short:
        warnings.warn(f"{bars_label(bars)}: the middle ran out of its {budget}-token budget before the model "
                      f"ended it ({'; '.join(short)}); it is cut there, and the bars after stay silent: raise "
                      "num_tokens (the middle may take up to half the model's context)", stacklevel=3)
    return out
