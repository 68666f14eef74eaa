"""Conditioned infilling as the judge hears it: "regenerate bars 5-8 as Palestrina", checked by the independent judge.

    result = conditioned_infilling("runs/fim", role="test", bars=(5, 8), of_bars=16, n_pieces=16)
    print(conditioned_table(result))

The role's held-out pieces are cut as in ``evaluation.infill`` (their first ``of_bars`` bars, ``bars`` taken out).
For each composer the role's judge knows (``evaluation.caption.judges``: trained on the role's held-out works, never
on a generated piece), the bars are regenerated with that composer asked (the other conditions as the most common
training combination with it: ``control.typical``), and once with every condition "any": the measured chance. The
judge hears the regenerated bars alone (the span cut out of the piece), so what it recognises is what the model
wrote, not the composer of the prefix and suffix around it. Each rate is a ``Rate`` (a span with no notes is a
miss, in n); the lift over chance has Newcombe's interval and is pooled over composers by ``pooled_lift``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from tchaikovsky import progress
from tchaikovsky.config import SampleConfig
from tchaikovsky.data.conditions import load_conditions
from tchaikovsky.data.fim import check_order, order_of
from tchaikovsky.evaluation import caption
from tchaikovsky.evaluation.control import typical
from tchaikovsky.evaluation.infill import SEED_OFFSET, held_out_cuts, span_of
from tchaikovsky.evaluation.intervals import Difference, Rate, fmt, pooled_lift
from tchaikovsky.evaluation.protocol import require_split, role as get_role
from tchaikovsky.evaluation.report import load_run
from tchaikovsky.generate.bars import parse_bars
from tchaikovsky.generate.infill import fill_of, infill_bars, middle_budget

__all__ = ["conditioned_infilling", "conditioned_table"]


def _spans(run, cond, pieces, bars, config, asked: dict, seeds, temperature, order: str) -> list:
    """The regenerated spans (Scores) of every piece with ``asked`` in front of its prompt."""
    front = cond.prefix(**asked)
    out = []
    for pb, _, _ in pieces:
        for x in infill_bars(run.model, run.tok, pb, bars, config, seeds=seeds, temperatures=temperature,
                             conditions=cond, front=front, order=order):
            out.append(span_of(x.score, *x.ticks))
    return out


def conditioned_infilling(run_dir: str | Path, *, role: str = "test", bars=(5, 8), of_bars: int = 16,
                          n_pieces: int = 16, seeds: int = 1, temperature: float = 1.0, top_p: float = 0.95,
                          guidance: float = 1.0, min_pieces: int = caption.MIN_PIECES, order: str | None = None) -> dict:
    """The judge's verdict on bars regenerated as each composer (see the module docstring). Returns ``settings``,
    ``n_pieces``, ``table`` (per composer: ``conditioned``, ``chance`` Rate dicts and ``lift``), ``pooled``
    (``pooled_lift``); ``min_pieces``: a composer is judged with that many held-out pieces (``caption.judges``);
    ``order``: the prompts' (None: the run's, ``data.fim.order_of``). ValueError for a run without sentinels,
    conditions, held-out works or a judge."""
    r, run = get_role(role), load_run(run_dir)
    cond = load_conditions(run_dir, run.tok)
    if cond is None:
        raise ValueError(f"{run_dir} has no conditions: conditioned infilling needs a conditioned FIM fine-tune")
    fill_of(run.model, run.tok, cond)
    order = check_order(order or order_of(run.meta))
    require_split(run.shards, r)
    if role != "test":
        raise ValueError("the judge of the caption is the test role's: conditioned infilling is reported on test")
    judge = caption.judges(run_dir, min_pieces=min_pieces).get("composer")
    if judge is None:
        raise ValueError(f"{run_dir}: {caption.no_judge_reason(run_dir, min_pieces=min_pieces)}")
    bars = parse_bars(bars)
    pieces, skipped = held_out_cuts(run, r.split, bars, of_bars, n_pieces)
    config = SampleConfig(num_tokens=middle_budget(run.model.config.context, run.model.config.context), top_p=top_p,
                          guidance=guidance)
    seed_list = r.seeds(seeds, SEED_OFFSET + 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # prompts cut to fit, middles out of tokens: the spans are judged as they are
        chance_spans = _spans(run, cond, pieces, bars, SampleConfig(**{**config.to_dict(), "guidance": 1.0}), {},
                              seed_list, temperature, order)
        heard_any = judge.predict(chance_spans)
        table = []
        for v in progress.bar(judge.classes, desc="conditioned infilling"):
            spans = _spans(run, cond, pieces, bars, config, typical(cond, "composer", v), seed_list, temperature,
                           order)
            rate, chance = judge.rate(spans, [v] * len(spans)), Rate.of([h == v for h in heard_any])
            table.append({"value": v, "conditioned": rate.to_dict(), "chance": chance.to_dict(),
                          "lift": Difference(rate, chance).to_dict()})
    return {"settings": {"role": r.name, "bars": list(bars), "of_bars": of_bars, "n_pieces": n_pieces, "seeds": seeds,
                         "temperature": temperature, "top_p": top_p, "guidance": guidance, "order": order},
            "n_pieces": len(pieces), "skipped": skipped, "table": table,
            "pooled": pooled_lift([Rate.from_dict(t["conditioned"]) for t in table],
                                  [Rate.from_dict(t["chance"]) for t in table])}


def conditioned_table(result: dict) -> str:
    """Markdown of ``conditioned_infilling``: per composer the regenerated bars recognised as asked, chance, lift."""
    s = result["settings"]
    head = (f"Bars {s['bars'][0]}-{s['bars'][1]} of {result['n_pieces']} held-out pieces ({s['role']} role) "
            f"regenerated as each composer (guidance {s['guidance']:g}); the judge hears the regenerated bars alone.\n\n")
    lines = ["| bars asked as | recognised as asked | chance: bars asked as \"any\" | difference |", "|---|---|---|---|"]
    for t in result["table"]:
        d = t["lift"]
        lines.append(f"| {t['value']} | {Rate.from_dict(t['conditioned'])} | {Rate.from_dict(t['chance'])} | "
                     f"{fmt(d['diff'], True)} [{fmt(d['lo'], True)}, {fmt(d['hi'], True)}] |")
    p = result["pooled"]
    lines.append(f"| **all** | | {fmt(p['chance_mean'])} (mean) | **{fmt(p['lift'], True)} [{fmt(p['lo'], True)}, "
                 f"{fmt(p['hi'], True)}]** |")
    return head + "\n".join(lines)
