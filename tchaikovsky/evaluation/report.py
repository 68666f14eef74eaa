"""Evaluate a trained run: how its music compares with real music and with two trivial baselines.

``python -m tchaikovsky.evaluation --run-dir runs/demo`` (or ``evaluate_run(run_dir)``) loads the run's weights
(``checkpoints/model.eqx``), tokenizer and shards and builds five sets of pieces, all decoded from token ids with
the run's tokenizer, so they share its quantisation:

* ``train``: up to ``max_reference`` training pieces, the **reference** every other set is compared with;
* ``heldout``: up to ``max_reference`` validation pieces (real music the model never saw: the ceiling);
* ``model``: ``n_samples`` unconditional samples, generated afresh in one batched ``generate.sampling.generate``
  call with seeds ``seed .. seed + n_samples - 1`` (always generated, never read from ``samples/``, so an evaluation
  is reproducible and does not depend on what notebook 04 happened to write), written to ``samples/evaluation/``;
* ``bigram``: as many sequences from a token bigram model fitted on the training split;
* ``random``: as many sequences of tokens drawn uniformly from the vocabulary (specials excluded).

Real pieces are cut to the first ``num_tokens`` tokens, the budget the generated sets get (they may stop earlier
at EOS), so length-dependent measures (pitch range, pitch classes used) compare like with like.

For each set: per-piece measures (``features.piece_metrics``), mgeval-style comparison with the reference
(``compare.compare_sets``: overlapped area and KL divergence per feature), and originality against the whole
training split (longest run of tokens copied verbatim, share of 8-grams found in training, copy flags). For the
model: the exact held-out loss and bits per note (``training.step.evaluate``), next to the bits per note of the bigram
model and of a uniform distribution over the vocabulary on the same tokens.

Writes ``run_dir/evaluation.json`` and ``run_dir/evaluation_{features,durations,originality}.png`` (``plots``);
``summary_table`` turns the JSON into the markdown table of the README's reference results.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from tchaikovsky import io, progress
from tchaikovsky.config import SampleConfig, TrainConfig, compute_dtype
from tchaikovsky.data.conditions import load_conditions
from tchaikovsky.data.shards import Shards
from tchaikovsky.data.tokenizer import decode_ids, music_ids, special_ids, tokenizer_hash
from tchaikovsky.evaluation.baselines import BigramModel, random_tokens
from tchaikovsky.evaluation.compare import compare_sets, mean_oa
from tchaikovsky.evaluation.features import FEATURES, SCALAR_FEATURES, piece_metrics
from tchaikovsky.evaluation.originality import NgramIndex, flag_copies
from tchaikovsky.evaluation.plots import LABELS, _nan, plot_evaluation
from tchaikovsky.generate.sampling import generate
from tchaikovsky.training.checkpoint import load_run_model
from tchaikovsky.training.step import evaluate

__all__ = ["EVALUATION_FILE", "load_run", "sample_ids", "evaluate_run", "summary_table"]

EVALUATION_FILE = "evaluation.json"
TABLE_FEATURES = ("pitch_class_entropy", "scale_consistency", "polyphony", "groove_consistency")
NGRAM = 8


# ---------------------------------------------------------------------------------------------------- helpers


def _split_pieces(shards, split: str) -> list[np.ndarray]:
    if split not in shards.splits:
        return []
    return [shards.piece_ids(split, i) for i in range(len(shards.pieces(split)))]


def load_run(run_dir: str | Path) -> SimpleNamespace:
    """A trained run's ``model``, ``tok``, ``meta``, ``shards`` (checked to match the tokenizer), ``special`` ids and
    ``start``, the prompt of an unconditional piece (conditioned runs: "any" of each condition, then BOS)."""
    run_dir = Path(run_dir)
    model, tok, meta = load_run_model(run_dir)
    shards = Shards(run_dir / "shards")
    if shards.tokenizer_hash != tokenizer_hash(tok):
        raise ValueError(f"{run_dir / 'shards'} was built with another tokenizer than {run_dir / 'tokenizer.json'}")
    sp = special_ids(tok)
    cond = load_conditions(run_dir, tok)
    start = np.array((cond.prefix() if cond else []) + [sp["bos"]], np.int32)
    return SimpleNamespace(model=model, tok=tok, meta=meta, shards=shards, special=sp, start=start)


def sample_ids(run: SimpleNamespace, *, num_tokens: int, top_p: float, seeds, temperatures) -> list[np.ndarray]:
    """Token ids of the evaluation's samples of a ``load_run`` run, one per (seed, temperature) of their numpy
    broadcast (``generate``'s batch, decoded in one call): unconditional, nucleus ``top_p``, no grammar, no least
    length (the model may end a piece at once)."""
    config = SampleConfig(num_tokens=num_tokens, top_p=top_p, grammar=False)
    return [np.asarray(s, np.int32) for s in generate(run.model, run.start, config, seeds=np.asarray(seeds),
                                                      temperatures=temperatures, tok=run.tok)]


def _mean(values) -> float:
    v = np.asarray([_nan(x) for x in values], np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


# ---------------------------------------------------------------------------------------------------- main entry


def _score_sets(tok, seqs: dict, midi_dir: Path | None) -> tuple[dict, list[Path]]:
    """Decode and measure every set; the generated ones are also written to ``midi_dir`` to listen to."""
    sets, midi = {}, []
    for name, ids_list in seqs.items():
        scores = [decode_ids(tok, ids) for ids in ids_list]
        if midi_dir is not None and name in ("model", "bigram", "random"):
            midi_dir.mkdir(parents=True, exist_ok=True)
            for i, sc in enumerate(scores):
                path = midi_dir / f"{name}-{i:02d}.mid"
                sc.dump_midi(str(path))
                midi.append(path)
        sets[name] = {"n": len(ids_list), "n_tokens": [int(len(s)) for s in ids_list],
                      "pieces": [piece_metrics(sc) for sc in scores]}
    return sets, midi


def _originality(tok, train_pieces, seqs: dict, seed: int, copy_run: int, copy_fraction: float) -> dict:
    """Per set but train: copies against the whole training split, in music tokens (specials and conditions
    removed on both sides)."""
    index = NgramIndex([music_ids(tok, p) for p in train_pieces], seed=seed)
    out = {}
    for name, ids_list in seqs.items():
        if name == "train":
            continue
        samples = [music_ids(tok, s) for s in ids_list]
        flags = flag_copies(samples, index, max_run=copy_run, max_fraction=copy_fraction)
        out[name] = {"longest_run": [f["longest_run"] for f in flags],
                     "ngram_overlap": [index.ngram_overlap(s, NGRAM) for s in samples],
                     "copied": [f["copied"] for f in flags], "n_copied": int(sum(f["copied"] for f in flags))}
    return out


def _heldout_loss(model, meta: dict, shards, val_pieces, bigram, V: int) -> tuple[dict, int | None]:
    """The model's exact held-out loss and bits per note, and the bigram's and a uniform model's on the same
    targets; (all None, None) without a validation split."""
    loss = {"eval_loss": None, "bits_per_note": None, "bits_per_note_bigram": None, "bits_per_note_uniform": None}
    if not val_pieces:
        return loss, None
    notes = shards.n_notes("val")
    tc = TrainConfig(**meta.get("train_config", {}))
    loss.update(evaluate(model, shards, batch_size=tc.micro_batch, seq_len=min(tc.seq_len, model.config.context),
                         dtype=compute_dtype(tc.compute_dtype), pad_id=shards.pad_id))
    if notes:
        val_flat = np.concatenate(val_pieces)
        loss["bits_per_note_bigram"] = bigram.nll_bits(val_flat) / notes
        loss["bits_per_note_uniform"] = (len(val_flat) - 1) * math.log2(V) / notes
    return loss, notes


def _summary_row(s: dict, comparison, vs_heldout, org, loss: dict, name: str) -> dict:
    """What ``summary_table`` prints of one set."""
    pieces = s["pieces"]
    row = {"n": s["n"], "empty": float(np.mean([p["n_notes"] == 0 for p in pieces])) if pieces else math.nan,
           "n_notes": _mean(p["n_notes"] for p in pieces),
           "mean_oa": mean_oa(comparison) if comparison else math.nan,
           "mean_oa_vs_heldout": mean_oa(vs_heldout) if vs_heldout else math.nan}
    for f in SCALAR_FEATURES:
        row[f] = _mean(p[f] for p in pieces)
    row["n_copied"] = org["n_copied"] if org else None
    row["max_run"] = max(org["longest_run"], default=0) if org else None
    row["ngram_overlap"] = _mean(org["ngram_overlap"]) if org else math.nan
    row["bits_per_note"] = {"model": loss["bits_per_note"], "bigram": loss["bits_per_note_bigram"],
                            "random": loss["bits_per_note_uniform"]}.get(name)
    return row


def evaluate_run(run_dir: str | Path, *, n_samples: int = 8, num_tokens: int = 512, seed: int = 0,
                 temperature: float = 1.0, top_p: float = 0.95, baselines: bool = True, max_reference: int = 64,
                 copy_run: int = 64, copy_fraction: float = 0.5, write: bool = True) -> dict:
    """Evaluate the run in ``run_dir`` (see the module docstring); returns the dict written to ``evaluation.json``.

    Keys: ``settings``; ``loss`` (``eval_loss`` nats/token and ``bits_per_note`` on the validation split, plus
    ``bits_per_note_bigram`` and ``bits_per_note_uniform``); ``sets`` (per set: ``n``, ``n_tokens`` per piece and
    ``pieces``, the per-piece metric dicts); ``comparison`` (per set other than train: ``compare_sets``
    against the train reference); ``comparison_vs_heldout`` (model and baselines against the held-out pieces, when
    there are at least two); ``originality`` (per set other than train: ``longest_run``, ``ngram_overlap`` (n=8),
    ``copied`` per piece, ``n_copied``; runs are counted in tokens without BOS/EOS); ``summary`` (per set: what
    ``summary_table`` prints); ``plots`` and ``midi`` (files written). NaN is written as null.
    """
    t0 = time.time()
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    model, tok, meta, shards, sp = run.model, run.tok, run.meta, run.shards, run.special
    V = model.config.vocab_size  # the tokenizer's ids, then any condition tokens
    rng = np.random.default_rng(seed)

    train_pieces = _split_pieces(shards, "train")
    val_pieces = _split_pieces(shards, "val")
    if not train_pieces:
        raise ValueError(f"{run_dir / 'shards'} has no training pieces to compare with")

    def pick(pieces):
        idx = np.sort(rng.choice(len(pieces), size=min(max_reference, len(pieces)), replace=False))
        return [pieces[i][: 1 + num_tokens] for i in idx]

    seqs: dict[str, list[np.ndarray]] = {"train": pick(train_pieces)}
    if val_pieces:  # no validation split: no held-out row, no held-out loss
        seqs["heldout"] = pick(val_pieces)
    progress.say(f"generating {n_samples} samples of {num_tokens} tokens ...")
    seqs["model"] = sample_ids(run, num_tokens=num_tokens, top_p=top_p, seeds=range(seed, seed + n_samples),
                               temperatures=temperature)
    train_flat = np.concatenate(train_pieces)
    bigram = BigramModel(train_flat, V)
    if baselines:
        seqs["bigram"] = bigram.sample(n_samples, num_tokens, bos=sp["bos"], eos=sp["eos"], seed=seed)
        seqs["random"] = random_tokens(n_samples, num_tokens, len(tok), bos=sp["bos"], exclude=sp.values(),
                                       seed=seed)

    sets, midi = _score_sets(tok, seqs, run_dir / "samples" / "evaluation" if write else None)
    progress.say("pieces scored: " + ", ".join(f"{k} {v['n']}" for k, v in sets.items()))
    ref = sets["train"]["pieces"]
    comparison = {name: compare_sets(sets[name]["pieces"], ref) for name in sets if name != "train"}
    vs_heldout = {}
    if "heldout" in sets and sets["heldout"]["n"] >= 2:
        vs_heldout = {name: compare_sets(sets[name]["pieces"], sets["heldout"]["pieces"])
                      for name in sets if name not in ("train", "heldout")}
    progress.say(f"originality against {len(train_flat)} training tokens ...")
    originality = _originality(tok, train_pieces, seqs, seed, copy_run, copy_fraction)
    progress.say("held-out loss ...")
    loss, notes = _heldout_loss(model, meta, shards, val_pieces, bigram, V)
    summary = {name: _summary_row(s, comparison.get(name), vs_heldout.get(name), originality.get(name), loss, name)
               for name, s in sets.items()}

    evaluation = {
        "run_dir": str(run_dir),
        "step": meta.get("step"),
        "settings": {"n_samples": n_samples, "num_tokens": num_tokens, "seed": seed, "temperature": temperature,
                     "top_p": top_p, "baselines": baselines, "max_reference": max_reference, "ngram": NGRAM,
                     "copy_run": copy_run, "copy_fraction": copy_fraction, "vocab_size": V,
                     "train_tokens": int(len(train_flat)), "val_notes": notes},
        "loss": loss,
        "summary": summary,
        "comparison": comparison,
        "comparison_vs_heldout": vs_heldout,
        "originality": originality,
        "sets": sets,
    }
    evaluation = io.jsonable(evaluation)
    if write:
        evaluation["plots"] = [str(p) for p in plot_evaluation(evaluation, run_dir)]
        evaluation["midi"] = [str(p) for p in midi]
    evaluation["seconds"] = round(time.time() - t0, 1)
    if write:
        io.atomic_write(run_dir / EVALUATION_FILE, json.dumps(evaluation, indent=1, allow_nan=False))
    progress.say(f"evaluation done in {evaluation['seconds']} s" + (f": {run_dir / EVALUATION_FILE}" if write else ""))
    return evaluation


# ---------------------------------------------------------------------------------------------------- reporting


def _fmt(x, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def summary_table(evaluation: dict) -> str:
    """Markdown table of an ``evaluate_run`` result (or its ``evaluation.json``, loaded): one row per set (real
    held-out, model, bigram, random, and the train reference); columns: pieces, mean notes per piece, mean
    overlapped area with the reference over all features (higher is closer), key feature means, share of pieces
    without notes, longest copied run and copy flags, bits per note on the validation split. A short legend follows."""
    s = evaluation["summary"]
    st = evaluation["settings"]
    head = ["set", "pieces", "notes", "mean OA ↑", "PC entropy", "scale cons.", "polyphony", "groove cons.",
            "no notes", "longest copy", "copies", "bits/note ↓"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in ("heldout", "model", "bigram", "random", "train"):
        if name not in s:
            continue
        r = s[name]
        row = [LABELS[name], str(r["n"]), _fmt(_nan(r["n_notes"]), 0),
               _fmt(_nan(r["mean_oa"])) if name != "train" else "(reference)"]
        row += [_fmt(_nan(r[f])) for f in TABLE_FEATURES]
        row += [_fmt(_nan(r["empty"])), _fmt(r["max_run"]),
                f"{r['n_copied']}/{r['n']}" if r["n_copied"] is not None else "—", _fmt(_nan(r["bits_per_note"]))]
        lines.append("| " + " | ".join(row) + " |")
    loss = evaluation.get("loss", {})
    lines.append("")
    lines.append(f"OA: mgeval overlapped area (intra-set vs inter-set distances) against {s['train']['n']} training "
                 f"pieces, mean over {len(FEATURES)} features; pieces cut to {st['num_tokens']} tokens. Copies: "
                 f"longest run of tokens found verbatim in the {st['train_tokens']}-token training split "
                 f"(flagged at ≥ {st['copy_run']} tokens or ≥ {st['copy_fraction']:.0%} of a piece). Model at step "
                 f"{evaluation.get('step')}, held-out loss {_fmt(_nan(loss.get('eval_loss')), 3)} nats/token; "
                 f"random row's bits/note: uniform over the vocabulary.")
    return "\n".join(lines)
