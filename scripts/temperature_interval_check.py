"""Do the intervals of ``evaluation.temperature`` hold? Independent sets of fresh samples against the bootstrap of one.

    python scripts/temperature_interval_check.py --run-dir runs/demo --temperature 0.8 --n-samples 48 --sets 8

Draws ``sets`` independent sets of ``n_samples`` samples at one temperature (seeds from ``--seed``, a range that
neither the validation nor the test seeds of ``choose_temperature`` use) and scores each set's mean OA against the
test reference ``choose_temperature`` uses (``disjoint_references``). The spread of those figures across sets is the
sampling noise an interval must cover; for each set the bootstrap over its own samples, as ``choose_temperature``
computes it, gives an estimate of that noise. Prints, per set: the figure, the bootstrap's standard deviation and
its mean minus the figure (the shift a resample with repeated pieces adds), the centred interval
``choose_temperature`` reports and the plain percentile interval, each marked by whether it holds the mean of all
sets' figures (the best estimate of the expected figure of ``n_samples`` samples). Then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main(argv=None) -> dict:
    from tchaikovsky.evaluation.compare import resampled_mean_oa
    from tchaikovsky.evaluation.intervals import fmt
    from tchaikovsky.evaluation.report import _split_pieces, load_run, sample_ids
    from tchaikovsky.evaluation.intervals import centred_interval
    from tchaikovsky.evaluation.temperature import _score, disjoint_references

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--n-samples", type=int, default=48)
    ap.add_argument("--sets", type=int, default=8)
    ap.add_argument("--seed", type=int, default=2_000_000, help="first seed of the samples")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--num-tokens", type=int, default=512)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--max-reference", type=int, default=64)
    args = ap.parse_args(argv)
    t0 = time.time()
    n = args.n_samples
    run = load_run(args.run_dir)
    train = _split_pieces(run.shards, "train")
    rng = np.random.default_rng(0)  # as choose_temperature with its default seed 0: the same test reference
    refs = disjoint_references(run.shards.pieces("train"), args.max_reference, rng)
    reference = _score(run.tok, [train[i][: 1 + args.num_tokens] for i in refs["test"]])
    ids = sample_ids(run, num_tokens=args.num_tokens, top_p=args.top_p,
                     seeds=np.arange(args.seed, args.seed + args.sets * n), temperatures=args.temperature)
    pieces = _score(run.tok, ids)
    sets = [pieces[s * n:(s + 1) * n] for s in range(args.sets)]
    draws = np.vstack([np.arange(n), np.random.default_rng(1).integers(0, n, (args.n_boot, n))])
    oa = resampled_mean_oa(sets, reference, draws)  # (sets, 1 + n_boot)
    truth = float(oa[:, 0].mean())
    rows = []
    for s in range(args.sets):
        boot = oa[s, 1:]
        centred = centred_interval(oa[s])
        plain = (float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975)))
        rows.append({"figure": float(oa[s, 0]), "boot_sd": float(boot.std()), "shift": float(boot.mean() - oa[s, 0]),
                     "centred": centred, "centred_holds": centred[0] <= truth <= centred[1],
                     "plain": plain, "plain_holds": plain[0] <= truth <= plain[1]})
    result = {"run_dir": args.run_dir, "temperature": args.temperature, "n_samples": n, "sets": args.sets,
              "seeds": [args.seed, args.seed + args.sets * n - 1], "n_boot": args.n_boot,
              "mean_of_sets": truth, "sd_across_sets": float(oa[:, 0].std(ddof=1)),
              "mean_boot_sd": float(np.mean([r["boot_sd"] for r in rows])),
              "centred_hold": int(sum(r["centred_holds"] for r in rows)),
              "plain_hold": int(sum(r["plain_holds"] for r in rows)), "rows": rows,
              "seconds": round(time.time() - t0, 1)}
    print("| set | mean OA | bootstrap sd | bootstrap mean - OA | centred 95% | plain percentile 95% |")
    print("|---|---|---|---|---|---|")
    for s, r in enumerate(rows):
        mark = {True: "", False: " (misses)"}
        print(f"| {s} | {fmt(r['figure'])} | {r['boot_sd']:.3f} | {r['shift']:+.3f} | [{fmt(r['centred'][0])}, "
              f"{fmt(r['centred'][1])}]{mark[r['centred_holds']]} | [{fmt(r['plain'][0])}, {fmt(r['plain'][1])}]"
              f"{mark[r['plain_holds']]} |")
    print(f"\n{args.sets} independent sets of {n} samples at temperature {args.temperature:g}: mean OA "
          f"{truth:.3f}, standard deviation across sets {result['sd_across_sets']:.3f}; mean bootstrap standard "
          f"deviation within a set {result['mean_boot_sd']:.3f}. The mean of the sets is held by "
          f"{result['centred_hold']}/{args.sets} centred intervals and {result['plain_hold']}/{args.sets} plain ones.")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
