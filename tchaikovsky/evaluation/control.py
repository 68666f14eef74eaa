"""Does a conditioned model obey? The independent judge's verdict on pieces asked for by period, composer or
instrumentation.

The judge (``evaluation.judge``) is trained on the run's ``judge`` split: real pieces of works the generator never
trained or validated on (``build_shards(held_out={"judge": ...})``), decoded from their tokens like the generated
pieces are, so both sides pass through the same tokenizer grid. Its accuracy on held-out judge-split works is the
ceiling. Then, for each value of a label, pieces are sampled with that condition and the judge says what it hears:
the share recognised as requested (controllability), beside the share of pieces sampled with "any" condition that
it calls the same value (the chance level of an unconditioned model), and OA against that value's real pieces.

    report = controllability(run_dir, label="composer", n_per_value=8)
    report["table"]            # one row per value: ceiling, conditioned, unconditioned, OA, copies
    report["confusion"]        # requested x predicted counts (plots.plot_confusion draws it)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tchaikovsky import io
from tchaikovsky.evaluation.compare import compare_sets, mean_oa
from tchaikovsky.evaluation.features import piece_metrics
from tchaikovsky.evaluation.judge import Judge, split_by_work
from tchaikovsky.evaluation.originality import NgramIndex, flag_copies

REPORT_FILE = "controllability.json"


@dataclass(frozen=True)
class Decoded:
    """A piece decoded from its token ids, with what is known of it (for the judge and ``compare_sets``)."""

    score: object
    rel_path: str
    work: str | None = None
    composer: str | None = None
    period: str | None = None
    instrumentation: str | None = None


def decoded_split(shards, tok, split: str, *, originals_only: bool = True) -> list[Decoded]:
    """The pieces of a split decoded to Scores (augmented copies left out with ``originals_only``); pieces that
    decode to no notes are skipped."""
    from tchaikovsky.data.tokenizer import decode_ids

    out = []
    for i, entry in enumerate(shards.pieces(split)):
        if originals_only and entry.get("augment"):
            continue
        score = decode_ids(tok, shards.piece_ids(split, i))
        if score.note_num() > 0:
            out.append(Decoded(score, entry["rel_path"], entry.get("work"), entry.get("composer"),
                               entry.get("period"), entry.get("instrumentation")))
    return out


def judge_ceiling(pieces: Sequence[Decoded], label: str, *, repeats: int = 5, fraction: float = 0.3) -> dict:
    """The judge's accuracy on real pieces of works it did not train on: mean and per-split accuracies over
    ``repeats`` work-disjoint splits (``fraction`` of each value's pieces held out), and the per-value recall."""
    accs, hits, counts = [], {}, {}
    for r in range(repeats):
        rest, held = split_by_work(pieces, fraction, seed=r, stratify=label)
        held = [p for p in held if getattr(p, label) is not None]
        if not held or len({getattr(p, label) for p in rest if getattr(p, label)}) < 2:
            continue
        judge = Judge.fit(rest, label)
        held = [p for p in held if getattr(p, label) in judge.classes]
        if not held:
            continue
        preds = judge.predict(held)
        accs.append(float(np.mean([p == getattr(h, label) for p, h in zip(preds, held)])))
        for p, h in zip(preds, held):
            v = getattr(h, label)
            counts[v] = counts.get(v, 0) + 1
            hits[v] = hits.get(v, 0) + int(p == v)
    return {"accuracy": float(np.mean(accs)) if accs else float("nan"), "splits": accs,
            "recall": {v: hits[v] / counts[v] for v in sorted(counts)}}


def typical(cond, label: str, value: str) -> dict:
    """The full request for ``label=value``: the other conditions as in the most common training combination that
    has the value (as a user asks "Bach, Baroque, voices"), or "any" when no combination has it."""
    from tchaikovsky.data.conditions import KINDS, UNKNOWN

    combos = [(n, c.split("|")) for c, n in cond.combinations.items() if c.split("|")[KINDS.index(label)] == value]
    if not combos:
        return {label: value}
    best = max(combos, key=lambda nc: nc[0])[1]
    return {k: (v if v != UNKNOWN else "") for k, v in zip(KINDS, best)}


def training_index(shards, tok, seed: int = 0) -> NgramIndex:
    """The n-gram index of the training split's music tokens (``tokenizer.music_ids``), for copy checks."""
    from tchaikovsky.data.tokenizer import music_ids

    return NgramIndex([music_ids(tok, shards.piece_ids("train", i)) for i in range(len(shards.pieces("train")))],
                      seed=seed)


def controllability(run_dir: str | Path, *, label: str = "composer", n_per_value: int = 8, num_tokens: int = 512,
                    min_tokens: int = 0, temperature: float = 1.0, top_p: float = 0.95, seed: int = 0,
                    min_pieces: int = 4, max_reference: int = 32, write: bool = True, progress: bool = True) -> dict:
    """Sample ``n_per_value`` pieces per value of ``label`` (each value with at least ``min_pieces`` pieces in the
    judge split) from the run's model with that condition (the other conditions as ``typical`` fills them), and as
    many with every condition "any"; let the judge
    (trained on the whole judge split) classify them. Returns (and writes ``run_dir/controllability.json``):
    ``ceiling`` (``judge_ceiling``), ``values``, ``table`` (per value: ceiling recall, ``conditioned`` rate,
    ``unconditioned`` rate, ``oa`` of the conditioned samples against that value's real training pieces,
    ``copies``), ``confusion`` (requested x predicted, rows/columns in ``classes`` order), ``classes``, and the
    means. Raises ValueError when the run has no conditions or no judge split."""
    from tchaikovsky.config import SampleConfig
    from tchaikovsky.data.conditions import load_conditions
    from tchaikovsky.data.shards import Shards
    from tchaikovsky.data.tokenizer import decode_ids, music_ids, special_ids
    from tchaikovsky.generate.sampling import generate
    from tchaikovsky.training.checkpoint import load_run_model

    run_dir = Path(run_dir)
    say = print if progress else (lambda *a, **k: None)
    model, tok, _ = load_run_model(run_dir)
    cond = load_conditions(run_dir, tok)
    shards = Shards(run_dir / "shards")
    if cond is None:
        raise ValueError(f"{run_dir} has no conditions: fine-tune it with conditions first (notebook 03, init_from)")
    if "judge" not in shards.splits:
        raise ValueError(f"{run_dir / 'shards'} has no judge split: build the shards with judge_fraction > 0")
    judged = decoded_split(shards, tok, "judge")
    counts: dict[str, int] = {}
    for p in judged:
        if getattr(p, label):
            counts[getattr(p, label)] = counts.get(getattr(p, label), 0) + 1
    known = set(cond.known(label))
    values = sorted(v for v, n in counts.items() if n >= min_pieces and v in known and v != "unknown")
    if len(values) < 2:
        raise ValueError(f"the judge split has fewer than two {label} values with >= {min_pieces} pieces: {counts}")
    say(f"judge: {len(judged)} real pieces; {label} values {values}", flush=True)
    judge_pieces = [p for p in judged if getattr(p, label) in values]
    ceiling = judge_ceiling(judge_pieces, label)
    judge = Judge.fit(judge_pieces, label)
    if write:
        judge.save(run_dir / "judge")

    sp = special_ids(tok)
    config = SampleConfig(num_tokens=num_tokens, min_tokens=min_tokens, top_p=top_p)
    seeds = list(range(seed, seed + n_per_value))
    prompts = {v: cond.prefix(**typical(cond, label, v)) for v in values}
    prompts[None] = cond.prefix()
    samples: dict = {}
    for v, prefix in prompts.items():
        say(f"sampling {n_per_value} x {num_tokens} tokens for {label}={v or 'any'} ...", flush=True)
        seqs = generate(model, np.asarray(prefix + [sp["bos"]], np.int32), config, seeds=seeds,
                        temperatures=temperature, tok=tok, conditions=cond)
        samples[v] = [(s, decode_ids(tok, s)) for s in seqs]

    train = decoded_split(shards, tok, "train")
    index = training_index(shards, tok, seed)
    rng = np.random.default_rng(seed)
    uncond = [sc for _, sc in samples[None] if sc.note_num() > 0]
    uncond_pred = judge.predict(uncond)
    table, requested, heard, out_dir = [], [], [], run_dir / "samples" / "controllability"
    for v in values:
        pieces = [(ids, sc) for ids, sc in samples[v] if sc.note_num() > 0]
        pred = judge.predict([sc for _, sc in pieces])
        requested += [v] * len(pred)
        heard += pred
        real = [p for p in train if getattr(p, label) == v]
        real = [real[i] for i in np.sort(rng.choice(len(real), min(max_reference, len(real)), replace=False))]
        oa = (mean_oa(compare_sets([piece_metrics(sc) for _, sc in pieces], [piece_metrics(p.score) for p in real]))
              if len(real) >= 2 and pieces else float("nan"))
        flags = flag_copies([music_ids(tok, ids) for ids, _ in pieces], index)
        if write:
            out_dir.mkdir(parents=True, exist_ok=True)
            for k, (_, sc) in enumerate(pieces[:2]):  # two to listen to per value; the numbers cover them all
                sc.dump_midi(str(out_dir / f"{label}-{v.split()[-1]}-{k}.mid"))
        table.append({"value": v, "request": typical(cond, label, v), "ceiling": ceiling["recall"].get(v, float("nan")), "n": len(pred),
                      "conditioned": float(np.mean([p == v for p in pred])) if pred else float("nan"),
                      "unconditioned": float(np.mean([p == v for p in uncond_pred])) if uncond_pred else float("nan"),
                      "oa": oa, "copies": int(sum(f["copied"] for f in flags)),
                      "mean_notes": float(np.mean([sc.note_num() for _, sc in pieces])) if pieces else 0.0})
    classes = judge.classes
    confusion = np.zeros((len(classes),) * 2, np.int64)
    for r, h in zip(requested, heard):
        confusion[classes.index(r), classes.index(h)] += 1
    report = {"label": label, "values": values, "classes": classes, "ceiling": ceiling, "table": table,
              "confusion": confusion.tolist(), "n_judge_pieces": len(judge_pieces),
              "conditioned": float(np.mean([r == h for r, h in zip(requested, heard)])) if heard else float("nan"),
              "unconditioned": float(np.mean([row["unconditioned"] for row in table])),
              "settings": {"n_per_value": n_per_value, "num_tokens": num_tokens, "min_tokens": min_tokens,
                           "temperature": temperature, "top_p": top_p, "seed": seed}}
    if write:
        io.atomic_write(run_dir / REPORT_FILE, json.dumps(io.jsonable(report), indent=1))
    return report


def summary_table(report: dict) -> str:
    """The report as a Markdown table, one row per value and a mean row."""
    def f(x):
        return "–" if x is None or x != x else f"{x:.2f}"

    lines = [f"| {report['label']} | judge ceiling (real) | conditioned | unconditioned (chance) | OA vs its real "
             "pieces | copies |", "|---|---|---|---|---|---|"]
    for r in report["table"]:
        lines.append(f"| {r['value']} | {f(r['ceiling'])} | {f(r['conditioned'])} | {f(r['unconditioned'])} | "
                     f"{f(r['oa'])} | {r['copies']}/{r['n']} |")
    oas = [r["oa"] for r in report["table"] if r["oa"] == r["oa"]]
    lines.append(f"| **all** | {f(report['ceiling']['accuracy'])} | {f(report['conditioned'])} | "
                 f"{f(report['unconditioned'])} | {f(float(np.mean(oas)) if oas else float('nan'))} | "
                 f"{sum(r['copies'] for r in report['table'])}/{sum(r['n'] for r in report['table'])} |")
    return "\n".join(lines)


def show_controllability(run_dir: str | Path, *, label: str = "composer", **kwargs) -> dict | None:
    """For a notebook: run ``controllability`` and display its table and confusion matrix (saved as
    ``run_dir/controllability_<label>.png``); a run it does not apply to (no conditions, no judge split, too few
    values) gets one line saying why, and None."""
    from IPython.display import Markdown, display

    from tchaikovsky.evaluation.plots import plot_confusion

    try:
        report = controllability(run_dir, label=label, **kwargs)
    except ValueError as e:
        print(f"no controllability check: {e}")
        return None
    display(Markdown(summary_table(report)))
    fig = plot_confusion(report["confusion"], report["classes"], path=Path(run_dir) / f"controllability_{label}.png",
                         title=f"requested {label} (rows) vs the judge's verdict (columns)")
    display(fig)
    return report
