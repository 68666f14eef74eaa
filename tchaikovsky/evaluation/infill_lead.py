"""Best-of-N infilling, measured: does keeping the middle that leads best into the bars after it make seams like
real ones?

    result = lead_in_reference("runs/fim", n=8, seeds=2, order="spm")
    print(lead_in_table(result))

``generate.infill`` with ``rerank=N`` draws N middles per requested piece and keeps the closed one under which the
model finds the bars after the span most likely, read left to right (``generate.infill.lead_in_bits``): the suffix
used the way the model reads music best. Whether to use it is a setting, so it is chosen on the validation role: the
run with its last seam's mean pitch jump nearer the real seams' (``measure_infilling``), plain or best-of-N. Then
both are measured on the test role, on the same pieces and seeds (candidate 0 of a seed is its plain draw), with
paired differences per regeneration for the seams and an interval for each OA.
"""

from __future__ import annotations

from pathlib import Path

from tchaikovsky.evaluation.infill import measure_infilling
from tchaikovsky.evaluation.intervals import fmt, mean_interval

__all__ = ["lead_in_reference", "compare_rerank", "lead_in_table"]

MEASURES = (("end", "pitch_jump", "pitch jump (semitones) at the last seam"),
            ("end", "onset_gap", "onset gap (beats) at the last seam"),
            ("start", "pitch_jump", "pitch jump (semitones) at the first seam"),
            ("start", "onset_gap", "onset gap (beats) at the first seam"))


def _gap(result: dict) -> float:
    """How far the regenerated last seams' mean pitch jump is from the real ones' (semitones)."""
    m = result["seams"]["end"]["pitch_jump"]
    return abs(m["regenerated"]["mean"] - m["real"]["mean"])


def compare_rerank(plain: dict, ranked: dict) -> dict:
    """Two ``measure_infilling`` results on the same role, pieces and seeds, one with ``rerank`` 1: per seam measure,
    both sides, the real seams and the paired difference (ranked - plain, per regeneration); OA of each; the closed
    rate of each and their paired difference. ValueError for results of other pieces or seeds."""
    a, b = plain["settings"], ranked["settings"]
    same = ("role", "bars", "of_bars", "n_pieces", "seeds", "temperature", "top_p", "order", "run_dir")
    if a["rerank"] != 1 or any(a[k] != b[k] for k in same) or plain["n_pieces"] != ranked["n_pieces"]:
        raise ValueError("compare a plain run (rerank 1) with a best-of-N one of the same run, role, pieces and seeds")
    rows = {}
    for side, key, label in MEASURES:
        p, r = plain["seams"][side][key], ranked["seams"][side][key]
        rows[label] = {"plain": p["regenerated"], "ranked": r["regenerated"], "real": p["real"],
                       "difference": mean_interval([y - x for x, y in zip(p["per_regeneration"],
                                                                           r["per_regeneration"])])}
    closed = mean_interval([float(y) - float(x) for x, y in zip(plain["ended"]["per_regeneration"],
                                                                ranked["ended"]["per_regeneration"])])
    return {"n": b["rerank"], "role": b["role"], "seams": rows, "oa": {"plain": plain["oa"], "ranked": ranked["oa"]},
            "ended": {"plain": plain["ended"], "ranked": ranked["ended"], "difference": closed},
            "gap": {"plain": _gap(plain), "ranked": _gap(ranked)}}


def lead_in_reference(run_dir: str | Path, *, n: int = 8, bars=(5, 8), of_bars: int = 16, n_pieces: int = 32,
                      seeds: int = 2, temperature: float = 0.9, order: str | None = None,
                      plain_test: dict | None = None) -> dict:
    """Choose plain or best-of-``n`` on the validation role (the last seam nearer the real ones), then measure both
    on the test role (``plain_test``: a plain ``measure_infilling`` of the test role already made with the same
    settings, reused). Returns ``validation`` and ``test`` (``compare_rerank``'s) and ``chosen`` (1 or ``n``)."""
    kw = dict(bars=bars, of_bars=of_bars, n_pieces=n_pieces, seeds=seeds, temperature=temperature, order=order)
    val = compare_rerank(measure_infilling(run_dir, role="validation", **kw),
                         measure_infilling(run_dir, role="validation", rerank=n, **kw))
    chosen = n if val["gap"]["ranked"] < val["gap"]["plain"] else 1
    test = compare_rerank(plain_test or measure_infilling(run_dir, role="test", **kw),
                          measure_infilling(run_dir, role="test", rerank=n, **kw))
    return {"validation": val, "test": test, "chosen": chosen}


def _cell(m: dict) -> str:
    return f"{fmt(m['mean'])} [{fmt(m['lo'])}, {fmt(m['hi'])}]"


def _rate(e: dict) -> str:
    return f"{fmt(e['rate'])} [{fmt(e['lo'])}, {fmt(e['hi'])}]"


def lead_in_table(result: dict) -> str:
    """Markdown: the validation choice, then the test role's figures, plain against best-of-N."""
    val, test, n = result["validation"], result["test"], result["test"]["n"]
    head = (f"Best of {n} by how the middle leads into the bar after it (`rerank={n}`), against plain sampling. "
            f"Validation: the last seam's pitch jump is {fmt(val['gap']['plain'])} semitones from the real seams' "
            f"plain, {fmt(val['gap']['ranked'])} best of {n}: **{'best of ' + str(n) if result['chosen'] > 1 else 'plain'}"
            f" chosen**. Test role, same pieces and seeds:\n\n")
    lines = [f"| measure | plain | best of {n} | real | best of {n} - plain (paired) | n |", "|---|---|---|---|---|---|"]
    for label, row in test["seams"].items():
        lines.append(f"| {label} | {_cell(row['plain'])} | {_cell(row['ranked'])} | {_cell(row['real'])} | "
                     f"{_cell(row['difference'])} | {row['difference']['n']} |")
    oa = test["oa"]
    lines.append(f"| OA of the regenerated bars against the real ones | {fmt(oa['plain']['oa'])} "
                 f"[{fmt(oa['plain']['lo'])}, {fmt(oa['plain']['hi'])}] | {fmt(oa['ranked']['oa'])} "
                 f"[{fmt(oa['ranked']['lo'])}, {fmt(oa['ranked']['hi'])}] | | | {oa['ranked']['n']} |")
    e = test["ended"]
    lines.append(f"| middles closed by the model | {_rate(e['plain'])} | {_rate(e['ranked'])} | | "
                 f"{_cell(e['difference'])} | {e['ranked']['n']} |")
    return head + "\n".join(lines)
