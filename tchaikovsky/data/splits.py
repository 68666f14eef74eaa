"""Which piece goes where: train / val (/ test) by piece, and held-out splits (a judge's, a reward model's) by work.

Every split is a pure function of the pieces (by ``rel_path``, whatever their order) and a seed, so a fine-tune
that reads the same folder with the same seed gets the same judge split as its pretraining.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

_SPLIT_NAMES = {"train": "train", "validation": "val", "valid": "val", "val": "val", "dev": "val", "test": "test"}


def held_out_by_work(pieces: Sequence[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """(rest, held out): about ``fraction`` of each composer's pieces, as whole works (``piece.work``, else its
    rel_path), shuffled with ``seed``; a composer with a single work stays out of it (it could not be on both
    sides). No work has pieces on both sides."""
    works: dict[str, list[Any]] = {}
    for p in pieces:
        works.setdefault(getattr(p, "work", None) or p.rel_path, []).append(p)
    by_composer: dict[str, list[str]] = {}
    for w, ps in works.items():
        by_composer.setdefault(str(getattr(ps[0], "composer", None)), []).append(w)
    rng = np.random.default_rng([seed, 7])
    chosen: set[str] = set()
    for composer in sorted(by_composer):
        names = sorted(by_composer[composer])
        if len(names) < 2:
            continue
        names = [names[i] for i in rng.permutation(len(names))]
        total, taken = sum(len(works[w]) for w in names), 0
        for w in names[:-1]:  # the last work always stays on the training side
            if taken >= fraction * total:
                break
            chosen.add(w)
            taken += len(works[w])
    held = [p for w in sorted(chosen) for p in works[w]]
    return [p for w, ps in works.items() if w not in chosen for p in ps], held


def assign_splits(pieces: Sequence[Any], val_fraction: float, seed: int,
                  held_out: dict[str, float] | None = None) -> dict[str, list[Any]]:
    """Pieces -> {"train", "val"[, "test"], *held_out}, by piece, sorted by rel_path.

    ``held_out`` (e.g. ``{"judge": 0.2}``) first sets aside, per name, that fraction of each composer's pieces as
    whole works (``held_out_by_work``): pieces the generator never trains or validates on, for a judge or a reward
    model. A piece's own ``split`` (e.g. MAESTRO's train/validation/test) is honoured; the others are shuffled with
    ``seed`` (after sorting by rel_path, so input order does not matter) and ``val_fraction`` of them go to val.
    With >= 2 pieces, val gets at least one piece (taken from train if the dataset's split has no validation).
    """
    seen: dict[str, Any] = {}
    for p in pieces:  # a rel_path listed twice is one piece: it cannot land on both sides
        seen.setdefault(p.rel_path, p)
    ordered = [seen[k] for k in sorted(seen)]
    out: dict[str, list[Any]] = {"train": [], "val": []}
    for i, (name, fraction) in enumerate(sorted((held_out or {}).items())):
        if name in ("train", "val", "test") or not 0.0 < fraction < 1.0:
            raise ValueError(f"held_out {name!r}: a new split name and a fraction in (0, 1), got {fraction!r}")
        ordered, out[name] = held_out_by_work(ordered, fraction, seed + 1000 * (i + 1))
        ordered = sorted(ordered, key=lambda p: p.rel_path)
    free = []
    for p in ordered:
        own = _SPLIT_NAMES.get(str(getattr(p, "split", None) or "").lower())
        (out.setdefault(own, []) if own else free).append(p)
    rng = np.random.default_rng(seed)
    perm = [free[i] for i in rng.permutation(len(free))]
    n_val = min(int(round(val_fraction * len(perm))), max(len(perm) - 1, 0))  # train keeps >= 1 piece
    out["val"] += perm[:n_val]
    out["train"] += perm[n_val:]
    if not out["val"] and len(out["train"]) >= 2:
        out["val"].append(out["train"].pop(int(rng.integers(len(out["train"])))))
    return {k: sorted(v, key=lambda p: p.rel_path) for k, v in out.items()}
