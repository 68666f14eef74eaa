"""How well a fill-in-the-middle model regenerates bars, on held-out pieces: likelihood, set overlap and seams.

    result = measure_infilling("runs/fim", role="test", bars=(5, 8), of_bars=16, n_pieces=32, seeds=2)
    print(infilling_table(result))

Each of the role's held-out pieces (``protocol``: test works and test seeds, or validation ones for choices) with at
least ``of_bars`` bars is cut to its first ``of_bars`` bars (decoded from its tokens, so on the tokenizer's grid),
and bars ``bars`` are taken out. Pieces whose bars cannot be cut (a rest across a bar line) or whose middle alone
does not fit the model's context are counted out, by reason. Then:

* **bits per note** of the real middle by teacher forcing: given the prefix and the suffix in FIM order
  (``[conditions] <Fill_prefix> prefix <Fill_suffix> suffix <Fill_middle> middle``), and given the same prefix
  alone, left to right (``[conditions] prefix middle``); the prefix and suffix are whole bars, as many as fit the
  context beside the middle (``generate.infill.fim_prompt``). A control puts another held-out piece's bars (as many
  ids) in place of the suffix: a model that reads the suffix finds the real middle less likely then. Summed over
  the middle's tokens, divided by its notes; per piece, with the paired difference. Also the probability the model
  gives ``Fill_end`` right after the real middle, where training put it: whether it knows where the bars end
  (sampling forces the end there anyway);
* **OA** (``compare.oa_interval``) of the regenerated bars against the real ones: each span cut out of its piece
  and measured as a piece of its own (``features.piece_metrics``); ``seeds`` regenerations per piece at
  ``temperature`` (``generate.infill.infill_bars``), with the piece's own condition tokens;
* **seams**: at the span's first and last bar line, the jump of the top line's pitch (semitones) between the last
  onset before the line and the first after it, and the gap between those onsets (beats), for the regenerated
  pieces and, at the same lines, for the real ones: the regenerated seams should sound like real ones.

Every figure comes with its n and a 95% interval (``intervals.mean_interval``, bootstrap over pieces or
regenerations; paired differences per piece). The middles closed before their token budget ran out are a
``Rate``.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from tchaikovsky import progress
from tchaikovsky.config import SampleConfig
from tchaikovsky.data.conditions import load_conditions
from tchaikovsky.data.fim import ORDERS, arrange, check_order, order_of
from tchaikovsky.data.tokenizer import decode_ids, special_ids
from tchaikovsky.evaluation.compare import compare_sets, oa_interval
from tchaikovsky.evaluation.features import FEATURES, Notes, piece_metrics
from tchaikovsky.evaluation.intervals import Rate, fmt, mean_interval
from tchaikovsky.evaluation.protocol import require_split, role as get_role
from tchaikovsky.evaluation.report import load_run
from tchaikovsky.generate.bars import bars_label, parse_bars, piece_bars
from tchaikovsky.generate.infill import fill_of, fim_prompt, infill_bars, middle_budget, token_bits
from tchaikovsky.generate.prompts import cut_score

__all__ = ["SEED_OFFSET", "seam", "held_out_cuts", "span_of", "measure_infilling", "infilling_table",
           "suffix_sweep", "suffix_table", "choose_order", "order_table"]

SEED_OFFSET = 500_000  # the role's seeds for infilling start here: apart from its other uses (judge, samples)


def seam(score, tick: int) -> tuple[float, float]:
    """At ``tick`` of a tick-time score: (|pitch jump| in semitones of the top line, the highest pitch at each onset,
    from the last onset before ``tick`` to the first at or after it; the gap between those onsets in beats). NaN
    where either side has no note."""
    notes = Notes(score)
    order = np.lexsort((-notes.pitch, notes.time))
    t, p = notes.time[order], notes.pitch[order]
    first = np.r_[True, t[1:] != t[:-1]] if len(t) else np.zeros(0, bool)
    t, p = t[first], p[first]
    before, after = np.flatnonzero(t < tick), np.flatnonzero(t >= tick)
    if not before.size or not after.size:
        return math.nan, math.nan
    a, b = before[-1], after[0]
    return float(abs(p[b] - p[a])), float((t[b] - t[a]) / notes.tpq)


def span_of(score, lo: int, hi: int):
    """The notes of ``score`` starting in ticks [lo, hi), cut at hi, moved to start at 0: a piece of its own."""
    return score.clip(lo, hi, clip_end=True).shift_time(-lo)


def held_out_cuts(run, split: str, bars, of_bars: int, n: int) -> tuple[list, dict]:
    """Up to ``n`` held-out pieces cut to their first ``of_bars`` bars, as (PieceBars, the piece's condition ids,
    the span's (i, j) in its ids), and how many were left out, by reason."""
    out, skipped = [], {}
    for k, entry in enumerate(run.shards.pieces(split)):
        if len(out) == n:
            break
        front = [int(c) for c in entry.get("conditions", [])]
        score = decode_ids(run.tok, run.shards.piece_ids(split, k)[len(front):])
        try:
            pb = piece_bars(run.tok, cut_score(score, bars=of_bars))
            if pb.n_bars < of_bars:
                raise ValueError(f"fewer than {of_bars} bars")
            out.append((pb, front, pb.span(*bars)))
        except ValueError as e:
            reason = str(e) if "fewer" in str(e) else "a rest across a bar line of the span"
            skipped[reason] = skipped.get(reason, 0) + 1
    return out, skipped


def _teacher_forced(run, pb, front, span, bars, fill):
    """A held-out cut's pieces for teacher forcing, or None when its middle alone does not fit the context, holds no
    note, or has nothing before it left to right: (prefix, suffix, middle, the middle's notes), the prefix and
    suffix as many bars as ``fim_prompt`` keeps beside the middle."""
    C, (i, j) = run.model.config.context, span
    middle = pb.ids[i:j]
    notes = decode_ids(run.tok, middle).note_num()
    if len(middle) + len(front) + 4 > C or not notes:
        return None
    prompt, _ = fim_prompt(pb, bars, fill, C - len(middle), front)
    at = list(prompt).index(fill.suffix)
    prefix, suffix = prompt[len(front) + 1: at], prompt[at + 1: -1]
    return None if not len(front) + len(prefix) else (prefix, suffix, middle, notes)


def _bits(run, pieces, bars, fill, pad: int, order: str) -> dict:
    """Per piece: bits per note of the real middle given both sides (FIM), given the prefix (left to right), and
    given the prefix with another piece's suffix (the next piece's bars after its span, as many ids): the control
    that shows whether the model reads the suffix at all."""
    rows = []
    for n, (pb, front, span) in enumerate(pieces):
        cut = _teacher_forced(run, pb, front, span, bars, fill)
        if cut is None:
            continue
        prefix, suffix, middle, notes = cut
        prompt = arrange(front, prefix, suffix, fill, order)
        both = token_bits(run.model, np.concatenate([prompt, middle, [fill.end]]), pad)  # bits[t]: of token t + 1
        left = token_bits(run.model, np.concatenate([np.asarray(front, np.int32), prefix, middle]), pad)
        other = math.nan
        if len(pieces) > 1:  # one piece has no other to borrow from
            other_pb, _, (_, other_j) = pieces[(n + 1) % len(pieces)]
            wrong = arrange(front, prefix, other_pb.ids[other_j: other_j + len(suffix)], fill, order)
            other = token_bits(run.model, np.concatenate([wrong, middle]), pad)[-len(middle):].sum() / notes
        rows.append((both[len(prompt) - 1: -1].sum() / notes, left[-len(middle):].sum() / notes, 2.0 ** -both[-1],
                     other))
    both, left, end, other = ([r[k] for r in rows] for k in range(4))
    control = [(o, b) for o, b in zip(other, both) if not math.isnan(o)]
    return {"fim": mean_interval(both), "left_to_right": mean_interval(left),
            "difference": mean_interval([b - a for b, a in zip(both, left)]), "p_end": mean_interval(end),
            "other_suffix": mean_interval([o for o, _ in control]),
            "suffix_read": mean_interval([o - b for o, b in control])}


def _seams(pieces, results) -> dict:
    """Pitch jumps and onset gaps at the span's two bar lines: regenerated, real, and their paired difference."""
    out = {}
    for name, side in (("start", 0), ("end", 1)):
        real, gen, diff = [], [], []
        for (pb, _, _), rs in zip(pieces, results):
            truth = seam(pb.score, rs[0].ticks[side])
            real.append(truth)
            for x in rs:
                gen.append(seam(x.score, x.ticks[side]))
                diff.append(tuple(g - t for g, t in zip(gen[-1], truth)))
        out[name] = {measure: {"regenerated": mean_interval([g[k] for g in gen]),
                               "real": mean_interval([v[k] for v in real]),
                               "difference": mean_interval([d[k] for d in diff]),
                               "per_regeneration": [g[k] for g in gen]}
                     for k, measure in enumerate(("pitch_jump", "onset_gap"))}
    return out


def measure_infilling(run_dir: str | Path, *, role: str = "test", bars=(5, 8), of_bars: int = 16,
                      n_pieces: int = 32, seeds: int = 2, temperature: float = 0.9, top_p: float = 0.95,
                      num_tokens: int | None = None, order: str | None = None, rerank: int = 1) -> dict:
    """Measure a FIM-capable run's infilling on the role's held-out pieces (see the module's docstring).

    ``bars``: the span taken out of each piece's first ``of_bars`` bars; ``n_pieces``: pieces to use (the first that
    qualify, in the split's order); ``seeds``: regenerations per piece (the role's seeds from ``SEED_OFFSET``);
    ``num_tokens``: the middle's budget (default: half the context, ``generate.infill.middle_budget``); ``order``:
    the prompts' ("psm" or "spm"; None: the run's, ``data.fim.order_of``); ``rerank``: each regeneration the best
    of N by how it leads into the bars after the span (``generate.infill``; 1: plain sampling).

    Returns ``settings``, ``n_pieces`` and ``skipped`` (pieces left out, by reason), ``bits_per_note`` (``fim``,
    ``left_to_right``, ``difference``, ``p_end``: the probability of ``Fill_end`` after the real middle,
    ``other_suffix``: given another piece's suffix, and ``suffix_read``: that minus ``fim``), ``oa`` (``oa``,
    ``lo``, ``hi``, ``n``, and ``features``: per-feature OA), ``seams`` (``start``/``end`` ->
    ``pitch_jump``/``onset_gap`` -> ``regenerated``/``real``/``difference``, each a ``mean_interval``, and
    ``per_regeneration``, the values behind ``regenerated``, piece by piece and seed by seed, for paired
    comparisons of runs on the same pieces and seeds) and ``ended`` (a ``Rate`` dict, with its
    ``per_regeneration`` flags). ValueError for a run without the sentinels or the split."""
    r = get_role(role)
    run = load_run(run_dir)
    cond = load_conditions(run_dir, run.tok)
    fill, order = fill_of(run.model, run.tok, cond), check_order(order or order_of(run.meta))
    require_split(run.shards, r)
    bars = parse_bars(bars)
    pieces, skipped = held_out_cuts(run, r.split, bars, of_bars, n_pieces)
    pad = special_ids(run.tok)["pad"]
    budget = middle_budget(run.model.config.context, num_tokens or run.model.config.context)
    config = SampleConfig(num_tokens=budget, top_p=top_p)
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a prompt cut to fit, a middle out of tokens: both counted below
        for pb, front, _ in progress.bar(pieces, desc="infilling"):
            results.append(infill_bars(run.model, run.tok, pb, bars, config, seeds=r.seeds(seeds, SEED_OFFSET),
                                       temperatures=temperature, conditions=cond, front=front, order=order,
                                       rerank=rerank))
    spans = [(span_of(pb.score, *rs[0].ticks), [span_of(x.score, *x.ticks) for x in rs])
             for (pb, _, _), rs in zip(pieces, results)]
    real = [piece_metrics(s) for s, _ in spans]
    gen = [piece_metrics(g) for _, gs in spans for g in gs]
    comparison = compare_sets(gen, real, features=FEATURES) if gen else {}
    return {
        "settings": {"role": r.name, "bars": list(bars), "of_bars": of_bars, "n_pieces": n_pieces, "seeds": seeds,
                     "temperature": temperature, "top_p": top_p, "num_tokens": budget, "order": order,
                     "rerank": rerank, "run_dir": str(run_dir)},
        "n_pieces": len(pieces), "skipped": skipped,
        "bits_per_note": _bits(run, pieces, bars, fill, pad, order),
        "oa": {**oa_interval(gen, real), "features": {f: c["oa"] for f, c in comparison.items()}},
        "seams": _seams(pieces, results),
        "ended": {**Rate.of([x.ended for rs in results for x in rs]).to_dict(),
                  "per_regeneration": [bool(x.ended) for rs in results for x in rs]},
    }


def suffix_sweep(run_dir: str | Path, *, role: str = "test", bars=(5, 8), of_bars: int = 16, n_pieces: int = 32,
                 keep=(0, 1, 2, 4, 6, None), order: str | None = None) -> dict:
    """How much of the suffix helps: bits per note of the real middle (teacher forcing, as ``measure_infilling``)
    given the same prefix and only the first ``k`` bars of the suffix, for each ``k`` of ``keep`` (None: all that
    ``fim_prompt`` keeps), each against the prefix alone, left to right (per piece, paired); ``order``: the FIM
    prompts' (None: the run's, ``data.fim.order_of``). Returns ``settings``,
    ``n_pieces``, ``left_to_right`` and ``rows``: [{``bars``, ``fim``, ``difference``}], each a ``mean_interval``,
    ``per_piece`` (the bits per note behind ``fim``, for paired comparisons) and ``by_bar``: per bar of the span,
    the bits of its tokens (summed) minus the same left to right, a ``mean_interval`` over pieces: where the suffix
    helps or hurts."""
    r = get_role(role)
    run = load_run(run_dir)
    cond = load_conditions(run_dir, run.tok)
    fill, pad = fill_of(run.model, run.tok, cond), special_ids(run.tok)["pad"]
    order = check_order(order or order_of(run.meta))
    require_split(run.shards, r)
    bars = parse_bars(bars)
    pieces, _ = held_out_cuts(run, r.split, bars, of_bars, n_pieces)
    n_bars = bars[1] - bars[0] + 1
    bits, by_bar = {k: [] for k in keep}, {k: [[] for _ in range(n_bars)] for k in keep}
    left = []
    for pb, front, span in progress.bar(pieces, desc="suffix sweep"):
        cut = _teacher_forced(run, pb, front, span, bars, fill)
        if cut is None:
            continue
        prefix, suffix, middle, notes = cut
        i, j = span
        ends = [int(b) - j for b in pb.starts if j < b < j + len(suffix)] + [len(suffix)]  # where its bars end
        bar = np.searchsorted(np.sort(pb.starts[(pb.starts >= i) & (pb.starts < j)]) - i, np.arange(len(middle)),
                              side="right") - 1  # each middle token's bar, 0 .. n_bars - 1
        ltr = token_bits(run.model, np.concatenate([np.asarray(front, np.int32), prefix, middle]), pad)[-len(middle):]
        left.append(ltr.sum() / notes)
        for k in keep:
            kept = len(suffix) if k is None else ends[min(k, len(ends)) - 1] if k else 0
            seq = np.concatenate([arrange(front, prefix, suffix[:kept], fill, order), middle])
            fim = token_bits(run.model, seq, pad)[-len(middle):]
            bits[k].append(fim.sum() / notes)
            for b in range(n_bars):
                by_bar[k][b].append(float((fim - ltr)[bar == b].sum()))
    return {"settings": {"role": r.name, "bars": list(bars), "of_bars": of_bars, "order": order,
                         "run_dir": str(run_dir)},
            "n_pieces": len(left), "left_to_right": mean_interval(left),
            "rows": [{"bars": k, "fim": mean_interval(bits[k]), "per_piece": bits[k],
                      "difference": mean_interval([b - a for b, a in zip(bits[k], left)]),
                      "by_bar": [mean_interval(x) for x in by_bar[k]]} for k in keep]}


def choose_order(run_dir: str | Path, *, role: str = "validation", bars=(5, 8), of_bars: int = 16,
                 n_pieces: int = 32) -> dict:
    """For a model trained in both orders (``fim_spm``), the prompt order with the fewer bits per note of the real
    middles of the role's pieces (teacher forcing, all the suffix that fits: ``suffix_sweep``): a setting, so chosen
    on validation. Returns ``chosen``, ``left_to_right``, ``orders`` (order -> ``mean_interval``) and
    ``spm_minus_psm`` (paired, per piece), with ``settings``."""
    sweeps = {o: suffix_sweep(run_dir, role=role, bars=bars, of_bars=of_bars, n_pieces=n_pieces, keep=(None,),
                              order=o) for o in ORDERS}
    rows = {o: sweeps[o]["rows"][0] for o in ORDERS}
    return {"settings": {**sweeps["psm"]["settings"], "order": None}, "left_to_right": sweeps["psm"]["left_to_right"],
            "chosen": min(ORDERS, key=lambda o: rows[o]["fim"]["mean"]), "orders": {o: rows[o]["fim"] for o in ORDERS},
            "spm_minus_psm": mean_interval([s - p for s, p in zip(rows["spm"]["per_piece"], rows["psm"]["per_piece"])])}


def order_table(result: dict) -> str:
    """Markdown: ``choose_order``'s figures."""
    lr, o, d = result["left_to_right"], result["orders"], result["spm_minus_psm"]
    return (f"Prompt order, chosen on the {result['settings']['role']} role (bits per note of the real middle, "
            f"{bars_label(result['settings']['bars'])} of {result['settings']['of_bars']}, {lr['n']} pieces):\n\n"
            "| left to right (prefix) | PSM prompt | SPM prompt | SPM - PSM (paired) | chosen |\n"
            f"| --- | --- | --- | --- | --- |\n| {_cell(lr)} | {_cell(o['psm'])} | {_cell(o['spm'])} | {_cell(d)} | "
            f"{result['chosen'].upper()} |")


def suffix_table(result: dict) -> str:
    """Markdown: ``suffix_sweep``'s rows, with the bits of each bar of the span (its tokens' bits summed) minus the
    same left to right."""
    lr, (first, last) = result["left_to_right"], result["settings"]["bars"]
    per_bar = [f"bar {b}: minus left to right (bits)" for b in range(first, last + 1)]
    lines = ["| " + " | ".join(["suffix kept", "bits per note of the real middle", "minus left to right (prefix only)",
                                *per_bar, "n"]) + " |", "|" + " --- |" * (len(per_bar) + 4),
             f"| none, left to right | {_cell(lr)} | |" + " |" * len(per_bar) + f" {lr['n']} |"]
    for row in result["rows"]:
        k = row["bars"]
        what = "all that fits" if k is None else "no bar (FIM order, empty suffix)" if k == 0 else f"{k} bar(s)"
        cells = [what, _cell(row["fim"]), _cell(row["difference"]), *map(_cell, row["by_bar"]), str(row["fim"]["n"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(m: dict) -> str:
    return f"{fmt(m['mean'])} [{fmt(m['lo'])}, {fmt(m['hi'])}]" if m["n"] else "–"


def infilling_table(result: dict) -> str:
    """Markdown: ``measure_infilling``'s figures, each with its 95% interval and n."""
    s = result["settings"]
    bits, oa = result["bits_per_note"], result["oa"]
    head = (f"{bars_label(s['bars']).capitalize()} of {s['of_bars']} regenerated in {result['n_pieces']} held-out "
            f"pieces ({s['role']} role), {s['seeds']} seed(s) each at temperature {s['temperature']:g}.\n\n")
    lines = ["| measure | FIM (prefix + suffix) | left to right (prefix) | difference | n |",
             "| --- | --- | --- | --- | --- |",
             f"| bits per note of the real middle | {_cell(bits['fim'])} | {_cell(bits['left_to_right'])} | "
             f"{_cell(bits['difference'])} | {bits['difference']['n']} |",
             f"| the same, another piece's suffix in place of the real one (control) | "
             f"{_cell(bits['other_suffix'])} | | {_cell(bits['suffix_read'])} (other - real) | "
             f"{bits['suffix_read']['n']} |",
             f"| probability of Fill_end right after the real middle | {_cell(bits['p_end'])} | | | "
             f"{bits['p_end']['n']} |", "",
             "| measure | regenerated | real | difference | n (regenerated / real) |", "| --- | --- | --- | --- | --- |",
             f"| OA of the regenerated bars against the real ones | {fmt(oa['oa'])} [{fmt(oa['lo'])}, "
             f"{fmt(oa['hi'])}] | | | {oa['n']} |"]
    units = {"pitch_jump": "pitch jump (semitones)", "onset_gap": "onset gap (beats)"}
    for side, where in (("start", "first"), ("end", "last")):
        for key, what in units.items():
            m = result["seams"][side][key]
            lines.append(f"| {what} at the {where} seam | {_cell(m['regenerated'])} | {_cell(m['real'])} | "
                         f"{_cell(m['difference'])} | {m['regenerated']['n']} / {m['real']['n']} |")
    e = result["ended"]
    lines.append(f"| middles closed before their token budget ran out | {fmt(e['rate'])} [{fmt(e['lo'])}, "
                 f"{fmt(e['hi'])}] | | | {e['n']} |")
    skipped = ", ".join(f"{v} ({k})" for k, v in result["skipped"].items())
    return head + "\n".join(lines) + (f"\n\nLeft out: {skipped}." if skipped else "")
