"""Best-of-N sampling: draw N candidates per requested piece and keep the one a scorer ranks highest.

    picks = best_of(model, tok, prompt, config, n=4, seeds=[0, 1], temperatures=0.9, conditions=cond,
                    asked={"composer": "Johann Sebastian Bach"}, scorer=run_scorer(run_dir))
    tokens, score, info = picks[0]          # info: the candidates' seeds and scores, the kept one's rank

The scorer is the preference reward (``evaluation.reward.run_scorer``: fitted on the run's training pieces only);
whether keeping its favourite helps is for the independent judge to say (``evaluation.control.controllability``
with ``rerank``). Any object with ``score(scores, prompt) -> (n,) array`` and ``count(prompt) -> int`` will do, so
this module needs nothing from ``evaluation``.

Candidate seeds: candidate 0 of requested seed ``s`` is ``s`` itself (so ``n=1`` is plain sampling, and the plain
piece is always among the candidates); candidate ``j >= 1`` is ``CANDIDATE_BASE + s * MAX_RERANK + j - 1``. For
requested seeds below ``MAX_SEED`` these are distinct from each other, from every other requested seed's and from
every seed an evaluation role, preference tuning or a user asks for (all below ``CANDIDATE_BASE`` = 2**31), and
they fit the uint32 seeds of ``sampling.generate``. Every candidate of every requested piece decodes in one
batched ``generate`` call: N times the sampling cost, plus one pass of the scorer over the N pieces.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tchaikovsky.data.conditions import KINDS, UNKNOWN
from tchaikovsky.data.tokenizer import try_decode
from tchaikovsky.generate.sampling import generate

CANDIDATE_BASE = 2**31  # candidate seeds live above every seed a user, a protocol role or a preference round uses
MAX_RERANK = 64  # candidates per piece at most
MAX_SEED = CANDIDATE_BASE // MAX_RERANK  # requested seeds must be below this (2**25 = 33_554_432)


class Pick(NamedTuple):
    """One requested piece after best-of-N: the kept candidate's ``tokens`` (as ``generate`` returns them),
    its scorer ``score`` (NaN with ``n=1``: nothing was scored), and ``info``: ``seed`` (requested), ``temperature``,
    ``kept_seed``, ``rank`` (the kept candidate's index: 0 is the plain piece), ``n``, ``seeds`` and ``scores`` of
    every candidate (-inf: a candidate that failed to decode or has no notes), ``prompt`` (what the scorer was
    asked)."""

    tokens: np.ndarray
    score: float
    info: dict


def candidate_seeds(seed: int, n: int) -> list[int]:
    """The ``n`` candidate seeds of requested ``seed`` (see the module docstring); ValueError outside the ranges."""
    if not (isinstance(n, (int, np.integer)) and 1 <= n <= MAX_RERANK):
        raise ValueError(f"rerank n={n!r}: use an integer from 1 (off) to {MAX_RERANK}")
    if not 0 <= int(seed) < MAX_SEED:
        raise ValueError(f"seed {seed} is outside 0..{MAX_SEED - 1}, the seeds best-of-N can derive candidates from")
    return [int(seed)] + [CANDIDATE_BASE + int(seed) * MAX_RERANK + j - 1 for j in range(1, n)]


def scorer_prompt(scorer, asked: dict | None) -> dict:
    """What the scorer is asked for a request: its known values (``"" / None / "unknown"`` are "any"), narrowed
    until some reference piece matches: instrumentation dropped first, then period, then composer (an unseen
    combination is still ranked by what the scorer knows of it)."""
    want = {k: v for k, v in (asked or {}).items() if k in KINDS and v and v != UNKNOWN}
    for drop in ("instrumentation", "period", "composer"):
        if scorer.count(want) > 0:
            return want
        want.pop(drop, None)
    return want


def best_of(model, tok, prompt, config, *, n: int, seeds, temperatures=1.0, conditions=None, asked=None,
            scorer=None) -> list[Pick]:
    """For each requested piece (the broadcast of ``seeds`` x ``temperatures``, flattened as ``generate`` does),
    ``n`` candidates from ``candidate_seeds`` at its temperature, all decoded in one batched ``generate`` call
    (``prompt``, ``config``, ``tok`` and ``conditions`` as ``generate`` takes them); each candidate decoded and
    scored by ``scorer.score(scores, scorer_prompt(scorer, asked))``; the highest kept (ties: the lower rank). A
    candidate that fails to decode or has no notes scores -inf; when all do, the plain piece is kept. ``n=1`` is
    plain sampling: ``generate``'s pieces, unscored (``scorer`` may be None). Returns one ``Pick`` per piece."""
    seeds, temps = np.broadcast_arrays(np.atleast_1d(seeds), np.atleast_1d(np.asarray(temperatures, np.float32)))
    seeds, temps = [int(s) for s in seeds.ravel()], [float(t) for t in temps.ravel()]
    cands = [candidate_seeds(s, n) for s in seeds]
    if n > 1 and scorer is None:
        raise ValueError("best-of-N needs a scorer to rank the candidates (evaluation.reward.run_scorer(run_dir))")
    seqs = generate(model, prompt, config, seeds=[c for cs in cands for c in cs],
                    temperatures=[t for t in temps for _ in range(n)], tok=tok, conditions=conditions)
    want = scorer_prompt(scorer, asked) if n > 1 else {}
    picks = []
    for i, (s, t) in enumerate(zip(seeds, temps)):
        group = seqs[i * n:(i + 1) * n]
        scores = _scores(tok, group, scorer, want) if n > 1 else np.full(1, np.nan)
        best = int(np.argmax(scores)) if n > 1 else 0  # the first maximum: the lowest rank wins a tie
        info = {"seed": s, "temperature": t, "kept_seed": cands[i][best], "rank": best, "n": n,
                "seeds": cands[i], "scores": [float(x) for x in scores], "prompt": want}
        picks.append(Pick(group[best], float(scores[best]), info))
    return picks


def _scores(tok, seqs, scorer, prompt: dict) -> np.ndarray:
    """The scorer's reward of each sequence; -inf for one that fails to decode or has no notes."""
    decoded = [try_decode(tok, s) for s in seqs]
    heard = [i for i, sc in enumerate(decoded) if sc is not None and sc.note_num() > 0]
    out = np.full(len(seqs), -np.inf)
    if heard:
        out[heard] = scorer.score([decoded[i] for i in heard], prompt)
    return out
