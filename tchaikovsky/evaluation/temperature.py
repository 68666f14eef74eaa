"""Choose the sampling temperature on validation samples, report it on test samples never used for the choice.

    python -m tchaikovsky.evaluation --run-dir runs/demo --temperatures 0.8 0.9 1.0 --n-samples 48

``choose_temperature`` draws ``n_samples`` unconditional samples at every candidate temperature with the
**validation** seeds ``seed .. seed + n - 1``, scores each temperature by the mean overlapped area (OA) of its
samples against a **validation reference** of training pieces, and chooses the best. Then it draws ``n_samples``
fresh samples at the chosen temperature with the **test** seeds ``test_seed .. test_seed + n - 1`` (a disjoint
range) and scores them against a **test reference**: training pieces of other works than the validation
reference's (one transposition per piece). That test figure is the one to report; the validation figures were used
for a choice, and the best of several noisy figures is biased upwards.

The samples are drawn as notebook 04's evaluation draws them (``report.sample_ids``: 512 new tokens, top-p 0.95,
no grammar, no least length) and the OA is ``report.evaluate_run``'s (``compare.compare_sets``, mean over the
features, against up to 64 training pieces), so the test figure is comparable with ``evaluate_run``'s mean OA of
as many samples (not of fewer: a set's OA grows with its size, see below).

The intervals, and why they are over sets and not over per-sample figures. OA is a property of a *set* (how the
distances from its pieces to the reference are distributed, against the distances within the reference), and that
set figure is what the evaluation reports. An OA of one piece alone is another, lower quantity (min(p, q) is
concave, so the OA of a pooled set is at least the mean of its pieces' OAs). The set's OA also grows with the
set's size (a fuller histogram of distances overlaps more), so the figure estimated is the expected OA of ``n``
samples, of which the set's OA is one unbiased draw. Its spread comes from a bootstrap over samples: the samples
of one temperature are independent draws (one seed each), so their resamples with replacement, scored exactly as
the set is (``compare.resampled_mean_oa``), spread as sets of fresh samples do. But a resample holds only about
63% distinct pieces, so its OA runs lower than a set of ``n`` distinct ones: the plain percentile interval would
sit below the figure it is for. The interval is therefore the bootstrap's 2.5 and 97.5% percentiles moved by the
point estimate minus the bootstrap mean (centred as the point is). ``scripts/temperature_interval_check.py``
checks this against independent sets of fresh samples on a trained run.

The reference is held fixed, not resampled (a repeated reference piece would add distances of 0 to the intra-set
distribution), so the intervals are conditional on the reference pieces; validation uses one reference for all
temperatures. One seed draws the same uniforms at every temperature (inverse-CDF sampling), so the i-th samples of
the temperatures are paired, and the bootstrap resamples the seeds jointly: the interval of a difference between
temperatures comes from the same draws, which removes the noise the two share. Each temperature's difference to
the validation best is shown with that interval; where every interval holds 0, the choice is within noise. The
intervals are approximate at small ``n``: a few dozen samples are the least to read them by.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tchaikovsky import io, progress
from tchaikovsky.data.tokenizer import decode_ids
from tchaikovsky.evaluation.compare import resampled_mean_oa
from tchaikovsky.evaluation.features import piece_metrics
from tchaikovsky.evaluation.intervals import centred_interval, fmt
from tchaikovsky.evaluation.protocol import TEST_SEED_BASE
from tchaikovsky.evaluation.report import _split_pieces, load_run, sample_ids

__all__ = ["TEST_SEED", "disjoint_references", "choose_temperature", "temperature_table",
           "main_temperatures"]

TEST_SEED = TEST_SEED_BASE  # first seed of the test samples: validation ranges below it never meet it


def disjoint_references(pieces: list[dict], k: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Two references of up to ``k`` training pieces each (indices into ``pieces``, the shards' piece records) that
    share no work (``work``, else the file): one piece per file, so transposed copies of a piece (the augmented
    shards hold several) never stand twice in a reference nor once in each."""
    refs, works = {"validation": [], "test": []}, {"validation": set(), "test": set()}
    files = set()
    for i in rng.permutation(len(pieces)):
        p = pieces[i]
        file, work = p.get("rel_path", i), p.get("work") or p.get("rel_path", i)
        if file in files:
            continue
        for name in sorted(refs, key=lambda n: len(refs[n])):  # the smaller first: both fill alike
            other = "test" if name == "validation" else "validation"
            if len(refs[name]) < k and work not in works[other]:
                refs[name].append(int(i))
                works[name].add(work)
                files.add(file)
                break
    return {name: np.sort(np.asarray(idx, np.int64)) for name, idx in refs.items()}


def _score(tok, ids_list) -> list[dict]:
    return [piece_metrics(decode_ids(tok, ids)) for ids in ids_list]


def choose_temperature(run_dir: str | Path, temperatures: Sequence[float], *, n_samples: int = 24,
                       num_tokens: int = 512, top_p: float = 0.95, max_reference: int = 64, seed: int = 0,
                       test_seed: int = TEST_SEED, n_boot: int = 2000) -> dict:
    """Choose among ``temperatures`` on validation samples and report the choice on test samples (module docstring).

    Returns ``validation`` (``seeds`` [first, last], ``reference`` training-piece indices, and per temperature a
    ``row``: ``temperature``, ``mean_oa``, ``lo``, ``hi``, ``n`` and ``diff`` to the best: ``diff``, ``lo``, ``hi``,
    ``significant``), ``chosen`` (the temperature of the highest validation mean OA; ties: the first), ``test``
    (``temperature``, ``mean_oa``, ``lo``, ``hi``, ``n``, ``seeds``, ``reference``), ``within_noise`` (every
    difference's interval holds 0), ``settings`` and ``seconds``. Writes nothing."""
    temperatures = [float(t) for t in temperatures]
    if not temperatures or len(set(temperatures)) != len(temperatures):
        raise ValueError(f"need distinct temperatures, got {temperatures}")
    if n_samples < 2:
        raise ValueError(f"need n_samples >= 2, got {n_samples}")
    if seed + n_samples > test_seed:
        raise ValueError(f"validation seeds {seed}..{seed + n_samples - 1} would reach the test seeds from {test_seed}")
    t0 = time.time()
    run = load_run(run_dir)
    train = _split_pieces(run.shards, "train")
    rng = np.random.default_rng(seed)
    refs = disjoint_references(run.shards.pieces("train"), max_reference, rng)
    if min(len(r) for r in refs.values()) < 2:
        raise ValueError(f"{run_dir}: too few training works for two disjoint references of 2 pieces or more")
    ref_pieces = {name: _score(run.tok, [train[i][: 1 + num_tokens] for i in idx]) for name, idx in refs.items()}
    # row 0: the samples themselves (the point estimate); rows 1..n_boot: resamples, the same for every temperature
    draws = np.vstack([np.arange(n_samples), rng.integers(0, n_samples, (n_boot, n_samples))])

    val_seeds = np.arange(seed, seed + n_samples)
    progress.say(f"validation: {n_samples} samples x {len(temperatures)} temperatures, "
                 f"seeds {seed}..{val_seeds[-1]} ...")
    ids = sample_ids(run, num_tokens=num_tokens, top_p=top_p, seeds=val_seeds[:, None], temperatures=temperatures)
    pieces = _score(run.tok, ids)  # row-major over (seed, temperature)
    sets = [pieces[j::len(temperatures)] for j in range(len(temperatures))]
    oa = resampled_mean_oa(sets, ref_pieces["validation"], draws)  # (temperatures, 1 + n_boot)
    best = int(np.argmax(oa[:, 0]))
    rows = []
    for j, t in enumerate(temperatures):
        diff = oa[j] - oa[best]
        lo, hi = centred_interval(oa[j])
        dlo, dhi = centred_interval(diff, -1.0, 1.0)
        rows.append({"temperature": t, "mean_oa": float(oa[j, 0]), "lo": lo, "hi": hi, "n": n_samples,
                     "diff": {"diff": float(diff[0]), "lo": dlo, "hi": dhi,
                              "significant": bool(dlo > 0 or dhi < 0)}})
    chosen = temperatures[best]

    progress.say(f"test: {n_samples} samples at temperature {chosen:g}, "
                 f"seeds {test_seed}..{test_seed + n_samples - 1} ...")
    test_pieces = _score(run.tok, sample_ids(run, num_tokens=num_tokens, top_p=top_p,
                                             seeds=np.arange(test_seed, test_seed + n_samples), temperatures=chosen))
    test_oa = resampled_mean_oa([test_pieces], ref_pieces["test"], draws)[0]
    lo, hi = centred_interval(test_oa)
    result = {
        "run_dir": str(run_dir), "step": run.meta.get("step"),
        "settings": {"temperatures": temperatures, "n_samples": n_samples, "num_tokens": num_tokens, "top_p": top_p,
                     "max_reference": max_reference, "seed": seed, "test_seed": test_seed, "n_boot": n_boot},
        "validation": {"seeds": [int(val_seeds[0]), int(val_seeds[-1])], "reference": refs["validation"].tolist(),
                       "rows": rows},
        "chosen": chosen,
        "within_noise": not any(r["diff"]["significant"] for r in rows),
        "test": {"temperature": chosen, "mean_oa": float(test_oa[0]), "lo": lo, "hi": hi, "n": n_samples,
                 "seeds": [test_seed, test_seed + n_samples - 1], "reference": refs["test"].tolist()},
    }
    result = io.jsonable(result)
    result["seconds"] = round(time.time() - t0, 1)
    return result


def temperature_table(result: dict) -> str:
    """Markdown: the validation table (mean OA [95%] per temperature, difference to the best [95%]), the test row
    of the chosen temperature, and a line saying how the figures were made."""
    v, t, st = result["validation"], result["test"], result["settings"]
    lines = ["| split | temperature | n | mean OA [95%] | difference to the best [95%] |", "|---|---|---|---|---|"]
    for r in v["rows"]:
        d = r["diff"]
        diff = "(best: chosen)" if r["temperature"] == result["chosen"] else \
            f"{fmt(d['diff'], True)} [{fmt(d['lo'], True)}, {fmt(d['hi'], True)}]"
        lines.append(f"| validation | {r['temperature']:g} | {r['n']} | {fmt(r['mean_oa'])} [{fmt(r['lo'])}, "
                     f"{fmt(r['hi'])}] | {diff} |")
    lines.append(f"| **test** | **{t['temperature']:g}** | {t['n']} | **{fmt(t['mean_oa'])}** [{fmt(t['lo'])}, "
                 f"{fmt(t['hi'])}] | |")
    lines.append("")
    lines.append(f"Mean OA against {len(v['reference'])} training pieces (validation) and {len(t['reference'])} "
                 f"of other works (test), {st['num_tokens']} new tokens, top-p {st['top_p']}; seeds {v['seeds'][0]}-"
                 f"{v['seeds'][1]} (validation) and {t['seeds'][0]}-{t['seeds'][1]} (test); 95% intervals from a "
                 f"bootstrap over samples ({st['n_boot']} draws, percentiles centred on the figure; validation "
                 f"paired across temperatures). "
                 + ("Every difference's interval holds 0: the choice is within noise." if result["within_noise"]
                    else "The chosen temperature beats some others beyond noise."))
    return "\n".join(lines)


def main_temperatures(args) -> dict:
    """``python -m tchaikovsky.evaluation --temperatures ...``: the table, then the result as one JSON line."""
    result = choose_temperature(args.run_dir, args.temperatures, n_samples=args.n_samples,
                                num_tokens=args.num_tokens, top_p=args.top_p, max_reference=args.max_reference,
                                seed=args.seed, n_boot=args.n_boot)
    print()
    print(temperature_table(result))
    print(json.dumps(result, allow_nan=False))
    return result
