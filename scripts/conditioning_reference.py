"""The conditioning reference experiment (issue #12), on the embedded music21 corpus, CPU-sized.

    python scripts/conditioning_reference.py --out runs/conditioning-finetune  # or: make reference-conditioning-finetune

1. exports (once) and loads a corpus of several composers: Bach chorales, Palestrina mass movements, Monteverdi
   madrigals, Mozart / Haydn / Beethoven quartet movements, Trecento pieces, Ryan's Mammoth folk tunes;
2. pretrains the demo preset on all of it without conditions (``pretrain/``);
3. fine-tunes that model with period / composer / instrumentation tokens (``finetune/``: the tokenizer and the
   held-out works are the pretrained run's, the embedding grows by the condition tokens);
4. under the evaluation protocol (``conditioning_eval.py``): chooses the sampling temperature, the guidance scale and
   best-of-N on the validation role (a judge trained on the ``judge`` works, validation seeds), then lets the test
   role's judge (trained on the ``judge_test`` works, which no choice saw; test seeds) say how often pieces asked
   for each composer, period and instrumentation are recognised as such, against its cross-validated ceiling on
   real pieces and against pieces asked for "any" (measured chance), every rate with n and a 95% interval, with
   the composer table once per lever;
5. the outside check: a judge trained on music21 scores that no run of this script trains on (``OUTSIDE``) hears
   the same test pieces.
``--corpus full``, ``--pretrain-conditions``, ``--unconditional-rate``, ``--finetune-steps`` and ``--condition-lr``
are the training levers (more labelled music; conditions from pretraining on; windows asked for nothing, for
guidance; the steps spent; the condition rows' learning rate): ``make reference-conditioning`` runs the recipe that met issue #21's targets,
``--pretrain-conditions --unconditional-rate 0.1`` with guidance chosen on validation. Writes ``conditioning.json`` and ``conditioning.md`` (the tables) into ``--out`` and prints them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

# music21 corpus name -> pieces exported (the first ones, in sorted order: deterministic)
CORPUS = {"bach": 120, "palestrina": 61, "monteverdi": 49, "mozart": 14, "haydn": 9, "beethoven": 7,
          "trecento": 14, "ryansMammoth": 14}
# --corpus full (issue #21's "more labelled music"): most of what music21 bundles of these composers (None: all). The
# last scores (sorted order) of Bach, Palestrina and Monteverdi stay out of every run (OUTSIDE: the outside check's
# music, which no run of this script trains on); 200 of Ryan's Mammoth's folk tunes (more would make "folk" most of
# the data).
FULL_CORPUS = {"bach": 360, "palestrina": 800, "monteverdi": 82, "mozart": None, "haydn": None, "beethoven": None,
               "trecento": None, "ryansMammoth": 200}
OUTSIDE = ("bach", "palestrina", "monteverdi")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/conditioning")
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--pretrain-steps", type=int, default=800)
    ap.add_argument("--finetune-steps", type=int, default=600)
    ap.add_argument("--condition-dropout", type=float, default=0.2)
    ap.add_argument("--unconditional-rate", type=float, default=0.0,
                    help="share of windows with every condition unknown (guidance's unconditional path), wherever "
                         "conditions are trained")
    ap.add_argument("--judge-fraction", type=float, default=0.4,
                    help="works held out: half validation, half test (by a hash of each work)")
    ap.add_argument("--vocab-size", type=int, default=1024)
    ap.add_argument("--transpose-range", type=int, default=1)
    ap.add_argument("--samples", type=int, default=16, help="pieces per requested value")
    ap.add_argument("--num-tokens", type=int, default=512)
    ap.add_argument("--min-tokens", type=int, default=256)
    ap.add_argument("--temperatures", type=float, nargs="+", default=[0.9, 1.0],
                    help="sampling temperatures to choose from on the validation role")
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0],
                    help="classifier-free guidance scales to choose from on the validation role")
    ap.add_argument("--rerank", type=int, nargs="+", default=[1, 4],
                    help="best-of-N sizes to choose from on the validation role (1: off)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the corpus sizes (tests: 0.1)")
    ap.add_argument("--corpus", choices=("reference", "full"), default="reference",
                    help="reference: the 288-piece selection (CORPUS); full: every labelled score (FULL_CORPUS)")
    ap.add_argument("--pretrain-conditions", action="store_true",
                    help="pretrain with the condition tokens too (with --condition-dropout), not only the fine-tune")
    ap.add_argument("--fim-rate", type=float, default=0.0,
                    help="the fine-tune's share of fill-in-the-middle windows (03's fim_rate; infill_reference.py)")
    ap.add_argument("--fim-spm", type=float, default=0.0,
                    help="the share of those windows in suffix-prefix-middle order (03's fim_spm)")
    ap.add_argument("--pretrain-fim", action="store_true",
                    help="use --fim-rate in the pretraining too, not only the fine-tune (FIM learned from the start)")
    ap.add_argument("--condition-lr", type=float, default=None,
                    help="the fine-tune's learning rate for the condition tokens' rows, as a multiple of its own "
                         "(TrainConfig.condition_lr; default 1)")
    ap.add_argument("--until", choices=("pretrain", "finetune", "all"), default="all",
                    help="stop after this stage (a later call continues from what is on disk)")
    args = ap.parse_args(argv)

    from tchaikovsky import progress
    from tchaikovsky.data.corpus import Corpus, load_corpus
    from tchaikovsky.data.embedded import default_cache_dir, export_embedded
    from tchaikovsky.data.shards import Shards
    from tchaikovsky.data.spec import DataSpec
    from tchaikovsky.notebook import pipeline

    t0, times = time.time(), {}
    out = Path(args.out)
    chosen = set()
    for name, n in (FULL_CORPUS if args.corpus == "full" else CORPUS).items():
        root, sources, _, _ = export_embedded([name], None if n is None else max(2, round(n * args.scale)), None, None)
        chosen |= {s.dest for s in sources}
    with progress.quiet():  # the files were just exported: checking them again is not worth a bar
        corpus = load_corpus(root, max_files=None)
    corpus = Corpus(corpus.root, [p for p in corpus.pieces if p.rel_path in chosen], corpus.report)
    times["corpus_s"] = time.time() - t0
    print(f"corpus: {len(corpus)} pieces from {default_cache_dir()}; labels {corpus.summary()['labels']}", flush=True)

    spec = DataSpec(vocab_size=args.vocab_size, judge_fraction=args.judge_fraction,
                    transpose_range=args.transpose_range)
    pre, ft = out / "pretrain", out / "finetune"
    if not (pre / "shards" / "index.json").exists():
        pre.mkdir(parents=True, exist_ok=True)
        corpus.write_report(pre / "data_report.json")
        pipeline.prepare_data(pre, corpus, dataclasses.replace(spec, conditions=args.pretrain_conditions))
    t = time.time()
    dropout = ({"condition_dropout": args.condition_dropout, "unconditional_rate": args.unconditional_rate or None}
               if args.pretrain_conditions else {})
    if args.pretrain_fim and args.fim_rate:
        dropout.update(fim_rate=args.fim_rate, fim_spm=args.fim_spm or None)
    pipeline.train_run(pre, Shards(pre / "shards"), preset=args.preset, max_steps=args.pretrain_steps, **dropout)
    times["pretrain_s"] = time.time() - t
    if args.until == "pretrain":
        return {"times": times}
    if not (ft / "shards" / "index.json").exists():
        ft.mkdir(parents=True, exist_ok=True)
        pipeline.prepare_data(ft, corpus, dataclasses.replace(spec, conditions=True, tokenizer_from=str(pre)))
    t = time.time()
    pipeline.train_run(ft, Shards(ft / "shards"), preset=args.preset, max_steps=args.finetune_steps, init_from=str(pre),
                       condition_dropout=args.condition_dropout, fim_rate=args.fim_rate or None,
                       unconditional_rate=args.unconditional_rate or None, fim_spm=args.fim_spm or None,
                       condition_lr=args.condition_lr)
    times["finetune_s"] = time.time() - t
    if args.until == "finetune":
        return {"times": times}

    # The choices (temperature, guidance, best-of-N) on the validation role, the figures on the test role
    import conditioning_eval

    judge = outside_judge(out)
    result = conditioning_eval.evaluate(ft, temperatures=args.temperatures, guidance=args.guidance,
                                        rerank=args.rerank, samples=args.samples, num_tokens=args.num_tokens,
                                        min_tokens=args.min_tokens, outside=judge)
    times.update(result["times"])
    times["total_s"] = time.time() - t0
    from tchaikovsky import io

    summary = {"settings": vars(args), "times": times, "n_pieces": len(corpus), **result}
    io.atomic_write(out / "conditioning.json", json.dumps(io.jsonable(summary), indent=1))
    (out / "conditioning.md").write_text((ft / "levers.md").read_text())
    print(json.dumps(io.jsonable({"times": times, "finetune_eval": result["finetune_eval"]})))
    return summary


def outside_judge(out: Path):
    """The outside check's judge: trained on the scores of OUTSIDE composers that no run of this script trains on
    (beyond FULL_CORPUS's selection, which includes CORPUS's), read from their original MIDI files (not through our
    tokenizer), with its own cross-validated ceiling in ``info``. Saved in ``out/outside_judge``."""
    from tchaikovsky import progress
    from tchaikovsky.data.corpus import load_corpus
    from tchaikovsky.data.embedded import export_embedded
    from tchaikovsky.evaluation.judge import Judge, cross_validate

    seen = set()
    for name in OUTSIDE:
        root, sources, _, _ = export_embedded([name], FULL_CORPUS[name], None, None)
        seen |= {s.dest for s in sources}
    everything = set()
    for name in OUTSIDE:
        root, sources, _, _ = export_embedded([name], None, None, None)
        everything |= {s.dest for s in sources}
    with progress.quiet():
        corpus = load_corpus(root, max_files=None)
    pieces = [p for p in corpus.pieces if p.rel_path in everything - seen and p.composer]
    judge = Judge.fit(pieces, "composer")
    judge.info["ceiling"] = cross_validate(pieces, "composer")
    judge.info["outside_pieces"] = len(pieces)
    print(f"outside judge: {len(pieces)} scores no run trained on; its own cross-validated accuracy "
          f"{judge.info['ceiling']['accuracy']}", flush=True)
    path = judge.save(out / "outside_judge")
    return Judge.load(path)


if __name__ == "__main__":
    main()
