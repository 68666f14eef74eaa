"""Does a conditioned model obey? The independent judge's verdict on pieces asked for by period, composer or
instrumentation, under the evaluation protocol (``evaluation.protocol``).

For a role ("validation" for choices, "test" for reported figures) the judge (``evaluation.judge``) is trained on
that role's held-out works (real pieces the generator never trained or validated on, decoded from their tokens
like the samples). Its cross-validated accuracy on those works, each piece predicted by a judge that never saw
its work, is the ceiling. Then, for each value of a label, pieces are sampled with that condition, and as many
with every condition "any", from the role's seeds; the judge says what it hears:

* ``conditioned``: the share recognised as asked, with n and a 95% interval (a piece that fails to decode or has
  no notes is a miss and counts in n);
* ``chance``: the measured share of "any" pieces the judge hears as that value;
* ``lift``: conditioned - chance with Newcombe's interval; pooled over values by ``intervals.pooled_lift``;
* OA against that value's held-out real pieces of the role, copies of the training tokens, failures.

    report = controllability(run_dir, label="composer", role="test", n_per_value=16)
    summary_table(report)      # Markdown, every rate with its interval and n
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tchaikovsky import io, progress
from tchaikovsky.config import SampleConfig
from tchaikovsky.data.conditions import KINDS, UNKNOWN, load_conditions
from tchaikovsky.data.shards import Shards
from tchaikovsky.data.tokenizer import music_ids, special_ids
from tchaikovsky.evaluation import protocol
from tchaikovsky.evaluation.compare import oa_interval
from tchaikovsky.evaluation.features import piece_metrics
from tchaikovsky.evaluation.intervals import Difference, Rate, fmt, pooled_lift
from tchaikovsky.evaluation.judge import Judge, cross_validate
from tchaikovsky.evaluation.originality import flag_copies
from tchaikovsky.evaluation.views import decode_samples, decoded_split, has_notes, training_index
from tchaikovsky.evaluation.reward import run_scorer
from tchaikovsky.generate.rerank import best_of, candidate_seeds
from tchaikovsky.training import checkpoint


def report_path(run_dir: str | Path, label: str, role: str) -> Path:
    return Path(run_dir) / f"controllability_{label}_{role}.json"


def typical(cond, label: str, value: str) -> dict:
    """The full request for ``label=value``: the other conditions as in the most common training combination that
    has the value (as a user asks "Bach, Baroque, voices"), or "any" when no combination has it."""
    combos = [(n, c.split("|")) for c, n in cond.combinations.items() if c.split("|")[KINDS.index(label)] == value]
    if not combos:
        return {label: value}
    best = max(combos, key=lambda nc: nc[0])[1]
    return {k: (v if v != UNKNOWN else "") for k, v in zip(KINDS, best)}


def judged_values(pieces, cond, label: str, min_pieces: int) -> list[str]:
    """The values of ``label`` the check covers: known to the conditions, with >= ``min_pieces`` held-out pieces."""
    counts: dict[str, int] = {}
    for p in pieces:
        if getattr(p, label):
            counts[getattr(p, label)] = counts.get(getattr(p, label), 0) + 1
    known = set(cond.known(label))
    values = sorted(v for v, n in counts.items() if n >= min_pieces and v in known and v != UNKNOWN)
    if len(values) < 2:
        raise ValueError(f"the held-out split has fewer than two {label} values with >= {min_pieces} pieces: {counts}")
    return values


def _sample(model, tok, cond, requests: dict, config, seeds, temperature, rerank: int = 1, scorer=None) -> dict:
    """{value or None ("any"): [(ids, Score or None)]} for each request's condition prefix; with ``rerank`` > 1
    each piece is the best of ``rerank`` candidates under ``scorer`` (``generate.rerank.best_of``)."""
    bos, out = special_ids(tok)["bos"], {}
    for v, request in requests.items():
        progress.say(f"sampling {len(seeds)} x {config.num_tokens} tokens for {request or 'any'}"
                     + (f", each the best of {rerank}" if rerank > 1 else "") + " ...")
        seqs = [p.tokens for p in best_of(model, tok, np.asarray(cond.prefix(**request) + [bos], np.int32), config,
                                          n=rerank, seeds=seeds, temperatures=temperature, conditions=cond,
                                          asked=request, scorer=scorer)]
        out[v] = list(zip(seqs, decode_samples(tok, seqs)[0]))
    return out


def _row(v, request, pieces, uncond_heard, judge, ceiling, real, index, tok) -> dict:
    """One value's verdict: ``pieces`` [(ids, Score or None)] asked for ``v``; ``uncond_heard`` the judge's
    predictions of the "any" pieces (None for a failure)."""
    scores = [sc for _, sc in pieces]
    cond, chance = judge.rate(scores, [v] * len(scores)), Rate.of([h == v for h in uncond_heard])
    heard = [sc for sc in scores if has_notes(sc)]
    oa = oa_interval([piece_metrics(sc) for sc in heard], [piece_metrics(p.score) for p in real])
    flags = flag_copies([music_ids(tok, ids) for ids, _ in pieces], index)
    recall = ceiling["recall"].get(v)
    return {"value": v, "request": request, "ceiling": recall, "conditioned": cond.to_dict(),
            "chance": chance.to_dict(), "lift": Difference(cond, chance).to_dict(), "n": len(scores),
            "oa": oa["oa"], "oa_interval": [oa["lo"], oa["hi"]], "n_real": len(real),
            "copies": int(sum(f["copied"] for f in flags)),
            "mean_notes": float(np.mean([sc.note_num() for sc in heard])) if heard else 0.0,
            "diversity": judge.spread(heard), "diversity_real": judge.spread([p.score for p in real])}


def _outside(outside, v, pieces, uncond) -> dict | None:
    """The outside judge's verdict on the pieces asked for ``v`` (and on the "any" pieces: its chance), when it
    knows ``v``; else None."""
    if outside is None or v not in outside.classes:
        return None
    scores = [sc for _, sc in pieces]
    rate, chance = outside.rate(scores, [v] * len(scores)), Rate.of([h == v for h in outside.predict(uncond)])
    return {"conditioned": rate.to_dict(), "chance": chance.to_dict(), "lift": Difference(rate, chance).to_dict()}


def controllability(run_dir: str | Path, *, label: str = "composer", role: str = "test", n_per_value: int = 8,
                    num_tokens: int = 512, min_tokens: int = 0, temperature: float = 1.0, top_p: float = 0.95,
                    seed: int = 0, min_pieces: int = 2, max_reference: int = 32, write: bool = True,
                    rerank: int = 1, guidance: float = 1.0, outside=None) -> dict:
    """The judge's check of ``label`` for one protocol ``role`` (see the module docstring): ``n_per_value`` pieces
    per value (each value with >= ``min_pieces`` held-out pieces of the role; the other conditions as ``typical``
    fills them) and as many asked for "any", from the role's seeds (``seed`` offsets them); ``guidance`` is the
    sampler's classifier-free guidance (``SampleConfig.guidance``; the "any" pieces are the same at every value,
    their conditions being "unknown" in both halves, so chance is measured as before); ``outside``: a second judge
    (trained on music no run of this project saw) whose verdict each row also carries (``outside``: recognised,
    chance, difference; None for a value it does not know). Each row also has ``diversity`` (``Judge.spread`` of
    its pieces) and ``diversity_real`` (of its real held-out pieces). Returns (and writes
    ``run_dir/controllability_<label>_<role>.json``, the judge in ``run_dir/judge/<role>/``): ``ceiling``
    (``judge.cross_validate``), ``table`` (one row per value), ``pooled`` (``intervals.pooled_lift``),
    ``conditioned`` (pooled Rate dict), ``failed`` (decode errors and note-less pieces, "any" included),
    ``confusion`` (requested x heard, failures left out; ``classes`` order), ``settings`` and
    ``held_out_overlap`` (pieces a parent run trained on, when the fine-tune was allowed to overlap). With
    ``rerank`` > 1 every piece ("any" ones too) is the best of ``rerank`` candidates (distinct seeds derived from
    the role's: ``generate.rerank.candidate_seeds``) under the run's scorer (``evaluation.reward.run_scorer``,
    trained on training pieces only, fitted first if the run has none); the judge hears only the kept piece.
    Raises ValueError when the run has no conditions or no held-out split for the role."""
    run_dir, r = Path(run_dir), protocol.role(role)
    model, tok, _ = checkpoint.load_run_model(run_dir)
    cond, shards = load_conditions(run_dir, tok), Shards(run_dir / "shards")
    if cond is None:
        raise ValueError(f"{run_dir} has no conditions: fine-tune it with conditions first (notebook 03, init_from)")
    protocol.require_split(shards, r)
    real = decoded_split(shards, tok, r.split)
    values = judged_values(real, cond, label, min_pieces)
    judge_pieces = [p for p in real if getattr(p, label) in values]
    progress.say(f"judge ({r.name}): {len(judge_pieces)} real held-out pieces; {label} values {values}")
    try:
        ceiling = cross_validate(judge_pieces, label, seed=seed)
    except ValueError as e:  # e.g. no value has two works: the check still runs, without a ceiling
        ceiling = {"accuracy": None, "recall": {}, "note": str(e)}
    judge = Judge.fit(judge_pieces, label)
    if write:
        judge.save(run_dir / "judge" / r.name)

    config = SampleConfig(num_tokens=num_tokens, min_tokens=min_tokens, top_p=top_p, guidance=guidance)
    seeds = r.seeds(n_per_value, seed)
    requests = {**{v: typical(cond, label, v) for v in values}, None: {}}
    candidate_seeds(seeds[-1], rerank)  # a bad rerank fails here, before a scorer is fitted for it
    scorer = run_scorer(run_dir) if rerank > 1 else None
    samples = _sample(model, tok, cond, requests, config, seeds, temperature, rerank, scorer)
    index, rng = training_index(shards, tok, seed), np.random.default_rng(seed)
    uncond_heard = judge.predict([sc for _, sc in samples[None]])
    table = []
    for v in values:
        refs = [p for p in real if getattr(p, label) == v]
        refs = [refs[i] for i in np.sort(rng.choice(len(refs), min(max_reference, len(refs)), replace=False))]
        table.append(_row(v, requests[v], samples[v], uncond_heard, judge, ceiling, refs, index, tok))
        table[-1]["outside"] = _outside(outside, v, samples[v], [sc for _, sc in samples[None]])
    if write:
        _keep_examples(run_dir / "samples" / "controllability" / r.name, label, samples, values)
    generated = [sc for v in values for _, sc in samples[v]]
    requested = [v for v in values for _ in samples[v]]
    confusion, failed = judge.confusion(generated, requested, with_failed=True)
    for t in table:  # pieces the judge could not hear (no decode, no pitched notes): misses, counted in n
        t["failed"] = int(failed[judge.classes.index(t["value"])])
    report = {"label": label, "role": r.name, "values": values, "classes": judge.classes, "ceiling": ceiling,
              "table": table, "n_judge_pieces": len(judge_pieces),
              "conditioned": judge.rate(generated, requested).to_dict(),
              "pooled": pooled_lift([Rate.from_dict(t["conditioned"]) for t in table],
                                    [Rate.from_dict(t["chance"]) for t in table], seed=seed),
              "failed": {"asked": sum(t["failed"] for t in table), "any": sum(h is None for h in uncond_heard),
                         "n_any": len(uncond_heard)},
              "confusion": confusion.tolist(),
              "held_out_overlap": _overlap(run_dir),
              "settings": {"n_per_value": n_per_value, "num_tokens": num_tokens, "min_tokens": min_tokens,
                           "temperature": temperature, "top_p": top_p, "guidance": guidance,
                           "seeds": [seeds[0], seeds[-1]], "held_out_split": r.split, "rerank": rerank}}
    if write:
        io.atomic_write(report_path(run_dir, label, r.name), json.dumps(io.jsonable(report), indent=1))
    return report


def _keep_examples(out_dir: Path, label: str, samples: dict, values) -> None:
    """Two pieces per value to listen to (the numbers cover them all)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for v in values:
        for k, sc in enumerate([sc for _, sc in samples[v] if has_notes(sc)][:2]):
            sc.dump_midi(str(out_dir / f"{label}-{v.split()[-1]}-{k}.mid"))


def _overlap(run_dir: Path) -> list[str]:
    """The held-out pieces this run's parent trained on, as recorded when the fine-tune was allowed anyway."""
    last = checkpoint.latest(run_dir / "checkpoints")
    return list(checkpoint.read_meta(last).get("held_out_overlap", [])) if last else []


def summary_table(report: dict) -> str:
    """The report as Markdown: per value the judge's ceiling, recognised as asked, chance (asked for "any"), the
    difference with its interval, OA, failures and copies; then the pooled row and any overlap warning."""
    def rate(d):
        return "–" if not d else str(Rate.from_dict(d))

    def diff(d):
        return f"{fmt(d['diff'], True)} [{fmt(d['lo'], True)}, {fmt(d['hi'], True)}]"

    lines = [f"| {report['label']} ({report['role']}) | judge ceiling (real, unseen works) | recognised as asked | "
             "chance: asked \"any\", heard as it | difference | OA vs its held-out pieces | failed | copies |",
             "|---|---|---|---|---|---|---|---|"]
    for t in report["table"]:
        lines.append(f"| {t['value']} | {rate(t['ceiling'])} | {rate(t['conditioned'])} | {rate(t['chance'])} | "
                     f"{diff(t['lift'])} | {fmt(t['oa'])} [{fmt(t['oa_interval'][0])}, {fmt(t['oa_interval'][1])}] "
                     f"(vs {t['n_real']}) | {t['failed']}/{t['n']} | "
                     f"{t['copies']}/{t['n']} |")
    p, n = report["pooled"], sum(t["n"] for t in report["table"])
    lines.append(f"| **all** | {rate(report['ceiling']['accuracy'])} | {rate(report['conditioned'])} | "
                 f"{fmt(p['chance_mean'])} (mean of measured) | **{fmt(p['lift'], True)} [{fmt(p['lo'], True)}, "
                 f"{fmt(p['hi'], True)}]** | {fmt(_finite_mean([t['oa'] for t in report['table']]))} | "
                 f"{report['failed']['asked']}/{n} (any: {report['failed']['any']}/{report['failed']['n_any']}) | "
                 f"{sum(t['copies'] for t in report['table'])}/{n} |")
    if report.get("held_out_overlap"):
        lines.append(f"\n**Warning:** {len(report['held_out_overlap'])} held-out pieces were trained on by the "
                     "parent run (allow_overlap): these figures are not about unseen music.")
    return "\n".join(lines)


def _finite_mean(xs) -> float:
    xs = [x for x in xs if x == x]
    return float(np.mean(xs)) if xs else float("nan")
