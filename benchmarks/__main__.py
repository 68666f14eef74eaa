"""``python -m benchmarks {training,sampling,data,scorer,judge} [options]``: each prints progress lines, then ONE
JSON line last.

``training``  tokens/s, step time and MFU of the package's train step (``benchmarks.training``).
``sampling``  KV-cached ``generate`` vs full recomputation: speedup, flatness, batched throughput, bandwidth
              fraction, guided vs unguided tokens/s, per-component breakdown (``benchmarks.sampling``).
``data``      ``build_shards`` vs a plain miditok loop; ``Shards.batch`` vs a train step (``benchmarks.data``).
``scorer``    the preference scorer's training time and its separation of held-out real pieces by label
              (``benchmarks.scorer``).
``judge``     the judge's ceiling: cross-validated accuracy on real pieces of unseen works per label, with 95%
              intervals, the majority baseline and the difference (``benchmarks.judge``).
"""

from __future__ import annotations

import argparse
from functools import partial

from benchmarks.common import emit


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    t = sub.add_parser("training", help="tokens/s, step time and MFU of the real train step")
    t.add_argument("--preset", default="demo")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--seq-len", type=int)
    t.add_argument("--accum-steps", type=int)
    t.add_argument("--steps", type=int, default=5, help="timed steps after the compile step (median reported)")
    t.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    t.add_argument("--fsdp", action="store_true")
    t.add_argument("--vocab-size", type=int, help="default: 2048, or 10000 for base-100m")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--compare-old", action=argparse.BooleanOptionalAction, default=None,
                   help="also time the step without the CPU fast paths, interleaved (default: on CPU only)")

    s = sub.add_parser("sampling", help="KV-cached generate vs full recomputation, flatness, batched throughput")
    s.add_argument("--preset", default="demo")
    s.add_argument("--tokens", type=int, default=1024)
    s.add_argument("--batch", type=int, default=64)
    s.add_argument("--batch-tokens", type=int,
                   help="tokens per sequence of the batched run (default: --tokens; at most 256 on CPU)")
    s.add_argument("--prompt-len", type=int, default=16)
    s.add_argument("--recompute-tokens", type=int,
                   help="tokens timed for the recompute baseline (default: 128 on CPU, --tokens elsewhere)")
    s.add_argument("--repeats", type=int, default=3)
    s.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    s.add_argument("--vocab-size", type=int)
    s.add_argument("--no-breakdown", action="store_true")
    s.add_argument("--guidance", type=float, default=2.0,
                   help="the guided-vs-unguided row's classifier-free guidance (1: skip the row)")
    s.add_argument("--seed", type=int, default=0)

    d = sub.add_parser("data", help="build_shards vs a plain miditok loop; Shards.batch vs a train step")
    d.add_argument("--files", type=int, default=60)
    d.add_argument("--workers", type=int, default=2, help="the explicit pool's size")
    d.add_argument("--concat", type=int, default=11,
                   help="chorales per long (GiantMIDI-sized) piece; <= 1 skips the long set")
    d.add_argument("--long-files", type=int, help="number of long pieces (default 2 x --files)")
    d.add_argument("--preset", default="demo", help="for batch_size x seq_len and the train step")
    d.add_argument("--vocab-size", type=int)
    d.add_argument("--cache-dir", help="embedded-corpus cache (default: tchaikovsky.data.embedded.default_cache_dir())")
    d.add_argument("--repeats", type=int, default=3)
    d.add_argument("--train-steps", type=int, default=3)

    c = sub.add_parser("scorer", help="the preference scorer: fit time, separation of held-out pieces by label")
    c.add_argument("--files", type=int, default=280, help="embedded-corpus pieces (several composers)")
    c.add_argument("--data-dir", default="", help="a MIDI folder instead of exporting (e.g. <cache>/music21)")
    c.add_argument("--per-composer", type=int, help="at most this many pieces of each known composer")
    c.add_argument("--steps", type=int, help="training steps (default: ScorerConfig's)")
    c.add_argument("--temperature", type=float, help="contrastive temperature (default: ScorerConfig's)")
    c.add_argument("--test-fraction", type=float, default=0.3)
    c.add_argument("--cache-dir", help="embedded-corpus cache (default: tchaikovsky.data.embedded.default_cache_dir())")
    c.add_argument("--save", help="also save the trained scorer to this directory")
    c.add_argument("--seed", type=int, default=0)

    j = sub.add_parser("judge", help="the judge's cross-validated accuracy on unseen works, with intervals")
    j.add_argument("--composers", nargs="+", metavar="NAME=N",
                   help="music21 composers and pieces of each (default: bach=20 palestrina=20 monteverdi=20 "
                        "haydn=8 mozart=8 beethoven=7)")
    j.add_argument("--labels", nargs="+", default=["composer", "period", "instrumentation"])
    j.add_argument("--folds", type=int, default=5)
    j.add_argument("--steps", type=int, default=2000, help="the judge's gradient steps (Judge.fit's default)")
    j.add_argument("--cache-dir", help="embedded-corpus cache (default: tchaikovsky.data.embedded.default_cache_dir())")
    j.add_argument("--seed", type=int, default=0)
    return ap


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark ``argv`` names; print its progress, then its result as one JSON line; return the result."""
    args = parser().parse_args(argv)
    log = partial(print, flush=True)
    if args.command == "training":
        from benchmarks.training import bench_training

        result = bench_training(args.preset, batch_size=args.batch_size, seq_len=args.seq_len, steps=args.steps,
                                dtype=args.dtype, fsdp=args.fsdp, vocab_size=args.vocab_size,
                                accum_steps=args.accum_steps, seed=args.seed,
                                compare_old=args.compare_old, log=log)
    elif args.command == "sampling":
        from benchmarks.sampling import bench_sampling

        result = bench_sampling(args.preset, tokens=args.tokens, batch=args.batch, batch_tokens=args.batch_tokens,
                                prompt_len=args.prompt_len, recompute_tokens=args.recompute_tokens,
                                repeats=args.repeats, vocab_size=args.vocab_size, dtype=args.dtype, seed=args.seed,
                                breakdown=not args.no_breakdown, guidance=args.guidance, log=log)
    elif args.command == "scorer":
        from benchmarks.scorer import bench_scorer

        result = bench_scorer(args.files, data_dir=args.data_dir, per_composer=args.per_composer, steps=args.steps,
                              temperature=args.temperature, test_fraction=args.test_fraction, seed=args.seed,
                              cache_dir=args.cache_dir, save=args.save, log=log)
    elif args.command == "judge":
        from benchmarks.judge import bench_judge, parse_counts

        result = bench_judge(parse_counts(args.composers) if args.composers else None, labels=tuple(args.labels),
                             folds=args.folds, seed=args.seed, steps=args.steps, cache_dir=args.cache_dir, log=log)
    else:
        from benchmarks.data import bench_data

        result = bench_data(args.files, workers=args.workers, concat=args.concat, long_files=args.long_files,
                            preset_name=args.preset, vocab_size=args.vocab_size, cache_dir=args.cache_dir,
                            repeats=args.repeats, train_steps=args.train_steps, log=log)
    return emit(result)


if __name__ == "__main__":
    main()
