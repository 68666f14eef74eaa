"""``python -m benchmarks scorer``: how well the preference scorer separates held-out real pieces, and its cost.

The embedded music21 corpus with several composers (exported once, then cached) is split by work (stratified by
period); the scorer trains on one side and is measured on the other: per label, nearest-centroid accuracy (chance
1 / classes) and the mean cosine within and between label values; for the prompts with more than 10 real pieces,
how often a held-out piece scores highest for its own prompt; the copy detector: its threshold calibrated on half
the held-out pieces (99th percentile), the share of the other half it would flag, and the share of near-copies of
training pieces (transposed a tone, cut to 60%) it flags. An untrained encoder (one step) is measured the same way
as the baseline.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from benchmarks.common import load_avg, rounded

COMPOSERS = ("bach", "palestrina", "monteverdi", "trecento", "ryansMammoth", "mozart", "beethoven", "haydn")


def _copies(pieces, shift: int = 2):
    """Near-copies of real pieces: each transposed by ``shift`` semitones and cut to its first 60%."""
    import symusic

    out = []
    for p in pieces:
        s = symusic.Score(str(p.path))
        end = int(0.6 * s.end())
        for t in s.tracks:
            notes = [n for n in t.notes if n.time < end]
            t.notes.clear()
            for n in notes:
                n.pitch = min(127, n.pitch + shift)
                t.notes.append(n)
        out.append(s)
    return out


def _measure(scorer, train, test, prompts) -> dict:
    from tchaikovsky.evaluation.scorer import separation

    out = {}
    for label in scorer.config.labels:
        sep = separation(scorer, test, label)
        out[label] = {k: rounded(v, 3) if isinstance(v, float) else v for k, v in sep.items() if k != "label"}
    emb = scorer.embed_all(test)
    e = emb.label
    own = [tuple(getattr(p, k) for k in ("period", "composer", "instrumentation")) for p in test]
    keys = [tuple(p.values()) for p in prompts]
    held = [i for i, o in enumerate(own) if o in keys]
    if held:
        scores = np.stack([e[held] @ scorer.centroid(p) for p in prompts], axis=1)  # (n_held, prompts)
        out["prompt_top1"] = rounded(float(np.mean([keys[j] == own[i] for i, j in zip(held, scores.argmax(1))])), 3)
        own_scores = [scores[n, keys.index(own[i])] for n, i in enumerate(held)]
        out["prompt_own_score"] = rounded(float(np.mean(own_scores)), 3)
        out["prompt_other_score"] = rounded(float(np.mean([scores[n, j] for n, i in enumerate(held)
                                                           for j in range(len(keys)) if keys[j] != own[i]])), 3)
        out["n_prompt_pieces"] = len(held)
    label_sim = (e @ scorer.reference.T).max(axis=1)  # the label embedding would call almost everything a copy
    out["held_out_label_similarity_median"] = rounded(float(np.median(label_sim)), 3)
    sim = scorer.max_similarity_to_real(test, embedded=emb)
    out["held_out_window_similarity_median"] = rounded(float(np.median(sim)), 3)
    # the copy threshold calibrated on half the held-out pieces, checked on the other half and on real copies
    half = len(test) // 2
    threshold = scorer.calibrate_copy_threshold(test[:half], 0.99)
    copies = scorer.max_similarity_to_real(_copies(train[:40]))
    out["copy_threshold"] = rounded(threshold, 4)
    out["copy_flagged_held_out"] = rounded(float(np.mean(sim[half:] > threshold)), 3)
    out["copy_flagged_transposed_cut_copies"] = rounded(float(np.mean(copies > threshold)), 3)
    out["copies_similarity_median"] = rounded(float(np.median(copies)), 4)
    return out


def bench_scorer(max_files: int = 280, *, composers=COMPOSERS, data_dir: str = "", per_composer: int | None = None,
                 steps: int | None = None, temperature: float | None = None, test_fraction: float = 0.3,
                 seed: int = 0, cache_dir=None, save: str | None = None, log: Callable = print) -> dict:
    """Measure the scorer (see the module docstring) on the embedded corpus of ``composers`` (``max_files``
    pieces), or on the folder ``data_dir`` (e.g. an existing export: ``<cache>/music21``); ``per_composer`` keeps
    at most that many pieces of each known composer (sorted order), so one composer does not swamp the rest."""
    from tchaikovsky import progress
    from tchaikovsky.data.corpus import label_counts, load_corpus
    from tchaikovsky.evaluation.judge import split_by_work
    from tchaikovsky.evaluation.scorer import Scorer, ScorerConfig
    from tchaikovsky.preference.rounds import prompts_with_enough

    t0 = time.time()
    with progress.quiet():  # loading is reported by the line below; the scorer's training shows its bar
        pieces = load_corpus(data_dir, max_files=None if data_dir else max_files, composers=composers,
                             cache_dir=cache_dir).pieces
    if per_composer:
        seen: dict = {}
        pieces = [p for p in pieces if p.composer is None or seen.setdefault(p.composer, []).append(p)
                  or len(seen[p.composer]) <= per_composer]
    log(f"corpus: {len(pieces)} pieces in {time.time() - t0:.0f} s; {label_counts(pieces)}")
    train, test = split_by_work(pieces, test_fraction, seed=seed, stratify="period")
    prompts = prompts_with_enough(pieces)
    changes = {k: v for k, v in {"steps": steps, "temperature": temperature}.items() if v is not None}
    config = ScorerConfig(**changes)
    t = time.time()
    scorer = Scorer.fit(train, config=config, seed=seed)
    fit_s = time.time() - t
    if save:
        scorer.save(save)
    t = time.time()
    scorer.embed(test)
    embed_s = time.time() - t
    with progress.quiet():
        baseline = Scorer.fit(train, config=dataclasses.replace(config, steps=1), seed=seed)
    return {"bench": "scorer", "n_train": len(train), "n_test": len(test), "prompts": len(prompts),
            "config": config.to_dict(), "fit_s": rounded(fit_s, 1), "embed_s_per_piece": rounded(embed_s / len(test)),
            "load_avg": load_avg(), "trained": _measure(scorer, train, test, prompts),
            "untrained": _measure(baseline, train, test, prompts)}
