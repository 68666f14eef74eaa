"""``python -m benchmarks judge``: the judge's ceiling, its accuracy on real pieces of works it never trained on.

The embedded music21 corpus (by default Bach, Palestrina and Monteverdi 20 pieces each, Haydn 8, Mozart 8 and
Beethoven 7 string-quartet movements: each composer's first pieces in music21's sorted order, exported once, then
cached) is cross-validated per label (``evaluation.judge.cross_validate``: 5 work-grouped folds stratified by the
label, every piece predicted once by a judge that never saw its work). For each label it prints one JSON line and
a Markdown row: pieces and works, accuracy and the majority-class baseline (k/n, Wilson 95% interval), their
difference (Newcombe's interval; the two rates are of the same pieces, which that interval does not use, so it is
conservative when they are positively correlated), recall per value, then the confusion matrix. The result (all
labels) is the last JSON line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from benchmarks.common import load_avg, rounded

COMPOSERS = {"bach": 20, "palestrina": 20, "monteverdi": 20, "haydn": 8, "mozart": 8, "beethoven": 7}
LABELS = ("composer", "period", "instrumentation")


def parse_counts(items) -> dict[str, int]:
    """``["bach=20", "haydn=8"]`` -> ``{"bach": 20, "haydn": 8}``; a count must be a positive integer."""
    out = {}
    for item in items:
        name, sep, n = item.partition("=")
        if not sep or not name or not n.isdigit() or int(n) < 1:
            raise ValueError(f"expected composer=count with a positive count, got {item!r}")
        out[name] = int(n)
    return out


def load_pieces(composers: dict[str, int], cache_dir=None) -> list:
    """The first ``n`` usable pieces of each composer in music21's sorted order (exported once, then cached)."""
    from tchaikovsky import progress
    from tchaikovsky.data.corpus import load_corpus

    pieces = []
    with progress.quiet():  # the benchmark reports through ``log`` only
        for name, n in composers.items():
            pieces += load_corpus("", max_files=n, composers=(name,), cache_dir=cache_dir).pieces
    return pieces


def _short(v: str) -> str:
    return v.split()[-1] if v else v  # "Johann Sebastian Bach" -> "Bach"


def _rate(d: dict) -> str:
    return f"{d['rate']:.2f} [{d['lo']:.2f}, {d['hi']:.2f}] ({d['k']}/{d['n']})"


def summarise(cv: dict) -> dict:
    """The figures of one label's ``cross_validate`` result that are reported (per-piece lists left out), plus
    ``lift``: accuracy - majority with Newcombe's 95% interval."""
    from tchaikovsky.evaluation.intervals import Difference, Rate

    lift = Difference(Rate.from_dict(cv["accuracy"]), Rate.from_dict(cv["majority"]))
    keep = ("label", "n_pieces", "n_works", "accuracy", "majority", "majority_class", "recall", "classes",
            "confusion", "failed", "not_testable", "unlabelled", "folds", "seed")
    return {**{k: cv[k] for k in keep}, "lift": lift.to_dict()}


def markdown_row(s: dict) -> str:
    lift = s["lift"]
    recall = ", ".join(f"{_short(v)} {r['k']}/{r['n']}" for v, r in s["recall"].items())
    untested = "; not testable (one work): " + ", ".join(f"{_short(v)} {n}" for v, n in s["not_testable"].items()) \
        if s["not_testable"] else ""
    return (f"| {s['label']} | {s['n_pieces']} | {s['n_works']} | {_rate(s['accuracy'])} | "
            f"{_rate(s['majority'])} {_short(s['majority_class'])} | "
            f"{lift['diff']:+.2f} [{lift['lo']:+.2f}, {lift['hi']:+.2f}] | {recall}{untested} |")


HEADER = ("| label | pieces | works | accuracy [95%] (k/n) | majority class [95%] (k/n) | accuracy - majority "
          "[95%] | recall per value (k/n) |\n|---|---|---|---|---|---|---|")


def confusion_table(s: dict) -> str:
    names = [_short(c) for c in s["classes"]]
    lines = [f"| {s['label']}: true \\ predicted | " + " | ".join(names) + " | not heard |",
             "|---" * (len(names) + 2) + "|"]
    lines += [f"| {n} | " + " | ".join(map(str, row)) + f" | {f} |"
              for n, row, f in zip(names, s["confusion"], s["failed"])]
    return "\n".join(lines)


def bench_judge(composers: dict[str, int] | None = None, *, labels=LABELS, folds: int = 5, seed: int = 0,
                steps: int = 2000, cache_dir=None, log: Callable = print) -> dict:
    """Cross-validate the judge on the embedded corpus of ``composers`` ({music21 composer: pieces}, default
    ``COMPOSERS``) for each of ``labels``; print (``log``) one JSON line and a Markdown row per label, then the
    table and the confusion matrices. A label with fewer than two values (or no value of two works) is reported
    under ``skipped`` with the reason. Returns {"bench": "judge", corpus facts, "labels": {label: summary}}."""
    from tchaikovsky.data.corpus import label_counts
    from tchaikovsky.evaluation.judge import cross_validate

    composers = dict(COMPOSERS if composers is None else composers)
    t0 = time.time()
    pieces = load_pieces(composers, cache_dir)
    load_s = time.time() - t0
    log(f"corpus: {len(pieces)} pieces in {load_s:.0f} s; {label_counts(pieces, labels)}")
    results, skipped = {}, {}
    t = time.time()
    for label in labels:
        try:
            results[label] = summarise(cross_validate(pieces, label, folds=folds, seed=seed, steps=steps))
        except ValueError as e:
            skipped[label] = str(e)
            log(f"{label}: skipped ({e})")
            continue
        log(json.dumps(results[label]))
    cv_s = time.time() - t
    log(f"\nThe judge on real pieces of unseen works ({folds}-fold, work-grouped, stratified by the label; "
        f"seed {seed}):\n")
    log("\n".join([HEADER] + [markdown_row(s) for s in results.values()]))
    for s in results.values():
        log("\n" + confusion_table(s))
    return {"bench": "judge", "composers": composers, "n_pieces": len(pieces),
            "pieces_per_composer": label_counts(pieces, ("composer",))["composer"], "folds": folds, "seed": seed,
            "steps": steps, "labels": results, "skipped": skipped, "load_s": rounded(load_s, 3),
            "cross_validate_s": rounded(cv_s, 3), "load_avg": load_avg()}
