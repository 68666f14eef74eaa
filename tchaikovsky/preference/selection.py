"""Which samples of one prompt become preference pairs: filters, top and bottom by score, pairs, a length guard.

NotaGen's CLaMP-DPO recipe: drop samples that are malformed (here: a share of grammar-forbidden token successions
above ``max_invalid_share``, ``generate.grammar.Grammar.invalid_share``), too short, or a copy of a real piece (the
scorer's copy detector above ``copy_threshold``, or flagged ``copied`` by ``evaluation.originality``); of the
rest, the top ``top_fraction`` by score are chosen and the bottom ``top_fraction`` rejected (a filtered sample is
neither: it is not a fair example of either); pairs are chosen x rejected, at most ``max_pairs`` per prompt, taken
so that every chosen and rejected sample appears before any appears twice.

The length guard. With summed log-probabilities a longer sequence has a lower log-probability, so if the chosen
samples were systematically longer (or shorter) than the rejected ones, the loss could lower the margin's cost by
moving the end-of-piece token rather than the music. Two defences: sample each round at one fixed length
(``SampleConfig(min_tokens=num_tokens)``: EOS masked, every sample equally long), which removes the bias at the
source; and, for samples of varying length, ``length_tolerance``: only pairs whose generated lengths differ by at
most that fraction of the longer one are formed (length-matched pairs, so the margin never rewards a length
difference). ``Selection.stats`` reports the mean lengths of chosen and rejected samples, of the pairs before and
after matching, and the rank correlation of score and length among the kept samples (a scorer that rewards length
shows up there).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from tchaikovsky.evaluation.compare import spearman

__all__ = ["SelectionConfig", "Selection", "select_pairs", "length_report"]


@dataclasses.dataclass(frozen=True)
class SelectionConfig:
    top_fraction: float = 0.1  # chosen: the best this share of the kept samples; rejected: the worst
    max_invalid_share: float = 0.0  # grammar-forbidden successions allowed in a kept sample (0: none)
    copy_threshold: float = 0.95  # a sample this similar to a real piece (scorer cosine) is dropped as a copy
    min_length: int = 16  # generated tokens a kept sample has at least
    max_pairs: int = 100  # pairs per prompt at most (NotaGen: 10 x 10)
    length_tolerance: float | None = 0.25  # pairs differ in length by at most this share (None: no matching)

    def __post_init__(self):
        if not 0.0 < self.top_fraction <= 0.5:
            raise ValueError(f"top_fraction={self.top_fraction} must be in (0, 0.5]")
        if self.length_tolerance is not None and not 0.0 <= self.length_tolerance <= 1.0:
            raise ValueError(f"length_tolerance={self.length_tolerance} must be in [0, 1] or None")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Selection:
    """One prompt's selection: ``chosen`` / ``rejected`` sample ids (best / worst first), ``pairs`` as
    (chosen id, rejected id), ``pair_lengths`` their generated lengths (chosen, rejected), ``dropped``
    {id: reason}, and ``stats`` (JSON-able numbers, see ``select_pairs``)."""

    chosen: list
    rejected: list
    pairs: list[tuple]
    pair_lengths: list[tuple[int, int]]
    dropped: dict
    stats: dict


def _mean(x) -> float:
    return float(np.mean(x)) if len(x) else math.nan


def select_pairs(samples: Sequence[Mapping], config: SelectionConfig = SelectionConfig()) -> Selection:
    """Filter one prompt's samples, pick the top and bottom ``top_fraction`` by score, and pair them.

    Each sample is a mapping with ``id`` (any JSON-able value), ``score`` (the reward, higher better),
    ``invalid_share`` (grammar-forbidden share of its token successions), ``max_similarity`` (largest scorer
    cosine to a real piece), optionally ``copied`` (True for a verbatim copy of training tokens:
    ``evaluation.originality.flag_copies``) and ``length`` (generated tokens). A sample is dropped, with the first
    reason that applies, for a non-finite score ("no score"), ``invalid_share > max_invalid_share`` ("malformed"),
    ``length < min_length`` ("too short") or ``copied`` or ``max_similarity > copy_threshold`` ("copy"). Of the n
    kept, k =
    min(max(1, round(top_fraction * n)), n // 2) are chosen and k rejected (ties in score broken by input
    order), so none is both; with fewer than 2 kept there are no pairs. Pairs are chosen x rejected in the order
    (rank sum, chosen rank), length-matched when ``length_tolerance`` is set, at most ``max_pairs``.

    ``stats``: n, n_kept, dropped (count per reason), k, n_pairs, n_pairs_unmatched (before the length match),
    score_chosen / score_rejected / score_kept (means), len_chosen / len_rejected (means over the samples),
    len_pair_chosen / len_pair_rejected (means over the pairs formed), score_length_spearman (kept samples)."""
    dropped: dict = {}
    kept: list[Mapping] = []
    for s in samples:
        score = float(s["score"])
        if not math.isfinite(score):
            reason = "no score"
        elif float(s.get("invalid_share", 0.0)) > config.max_invalid_share:
            reason = "malformed"
        elif int(s["length"]) < config.min_length:
            reason = "too short"
        elif s.get("copied") or float(s.get("max_similarity", -1.0)) > config.copy_threshold:
            reason = "copy"
        else:
            kept.append(s)
            continue
        dropped[s["id"]] = reason
    n = len(kept)
    k = min(max(1, round(config.top_fraction * n)), n // 2)
    order = sorted(range(n), key=lambda i: (-float(kept[i]["score"]), i))  # best first, stable on ties
    best = [kept[i] for i in order[:k]]
    worst = [kept[i] for i in order[::-1][:k]]  # worst first
    candidates = sorted(((i + j, i, j) for i in range(k) for j in range(k)))
    unmatched = [(best[i], worst[j]) for _, i, j in candidates]
    if config.length_tolerance is None:
        matched = unmatched
    else:
        def close(a, b) -> bool:
            la, lb = int(a["length"]), int(b["length"])
            return abs(la - lb) <= config.length_tolerance * max(la, lb, 1)

        matched = [(w, l) for w, l in unmatched if close(w, l)]
    matched = matched[: config.max_pairs]
    length = lambda xs: [int(x["length"]) for x in xs]  # noqa: E731
    score = lambda xs: [float(x["score"]) for x in xs]  # noqa: E731
    stats = {
        "n": len(samples), "n_kept": n, "dropped": dict(Counter(dropped.values())), "k": k,
        "n_pairs": len(matched), "n_pairs_unmatched": min(len(unmatched), config.max_pairs),
        "score_chosen": _mean(score(best)), "score_rejected": _mean(score(worst)), "score_kept": _mean(score(kept)),
        "len_chosen": _mean(length(best)), "len_rejected": _mean(length(worst)),
        "len_pair_chosen": _mean(length([w for w, _ in matched])),
        "len_pair_rejected": _mean(length([r for _, r in matched])),
        "score_length_spearman": spearman(score(kept), length(kept)) if n >= 2 else math.nan,
    }
    return Selection([s["id"] for s in best], [s["id"] for s in worst], [(w["id"], r["id"]) for w, r in matched],
                     [(int(w["length"]), int(r["length"])) for w, r in matched], dropped, stats)


def length_report(selections: Sequence[Selection]) -> dict:
    """Over the prompts of a round: how many pairs, the mean generated length of their chosen and rejected
    samples, the mean difference, the share of pairs whose chosen sample is the longer (0.5 or below with ties:
    no bias), and the mean score-length rank correlation over prompts. A difference far from 0, or a share near
    0 or 1, says the pairs would teach length."""
    lengths = np.array([pl for sel in selections for pl in sel.pair_lengths], np.float64).reshape(-1, 2)
    sp = [sel.stats["score_length_spearman"] for sel in selections
          if math.isfinite(sel.stats["score_length_spearman"])]
    return {"pairs": len(lengths), "len_chosen": _mean(lengths[:, 0]), "len_rejected": _mean(lengths[:, 1]),
            "len_difference": _mean(lengths[:, 0] - lengths[:, 1]),
            "chosen_longer_share": _mean(lengths[:, 0] > lengths[:, 1]),
            "score_length_spearman": _mean(sp)}
