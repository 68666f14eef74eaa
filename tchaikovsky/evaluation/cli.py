"""``python -m tchaikovsky.evaluation --run-dir R``: evaluate a trained run (see ``report``); with ``--temperatures``,
choose the sampling temperature on validation seeds and report it on test seeds (see ``temperature``)."""

import argparse

from tchaikovsky.evaluation.report import evaluate_run, summary_table
from tchaikovsky.evaluation.temperature import main_temperatures


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0].strip('`'))
    ap.add_argument("--run-dir", required=True, help="a trained run: tokenizer.json, shards/, checkpoints/model.eqx")
    ap.add_argument("--n-samples", type=int, default=None, help="default 8; with --temperatures, 24 per split")
    ap.add_argument("--num-tokens", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--max-reference", type=int, default=64, help="at most this many train / held-out pieces")
    ap.add_argument("--no-baselines", action="store_true", help="skip the bigram and random baselines")
    ap.add_argument("--temperatures", type=float, nargs="+", default=None,
                    help="instead: choose among these on validation seeds, report the choice on test seeds "
                         "(evaluation.temperature; prints a table and one JSON line, writes nothing)")
    ap.add_argument("--n-boot", type=int, default=2000, help="with --temperatures: bootstrap resamples")
    args = ap.parse_args(argv)
    if args.temperatures:
        args.n_samples = args.n_samples or 24
        return main_temperatures(args)
    args.n_samples = args.n_samples or 8
    evaluation = evaluate_run(args.run_dir, n_samples=args.n_samples, num_tokens=args.num_tokens, seed=args.seed,
                              temperature=args.temperature, top_p=args.top_p, baselines=not args.no_baselines,
                              max_reference=args.max_reference)
    print()
    print(summary_table(evaluation))
    return evaluation
