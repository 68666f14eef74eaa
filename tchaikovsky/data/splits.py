"""Which piece goes where: train / val (/ test) by piece, and held-out splits (a judge's) by work.

Held-out works are chosen by their identity alone: a work's key (``piece.work``, else its rel_path) is hashed to a
number in [0, 1), and the held-out splits take consecutive ranges of it (``{"judge": 0.15, "judge_test": 0.15}``:
[0, 0.15) is ``judge``, [0.15, 0.30) is ``judge_test``). The same work is therefore held out whatever else is
loaded (another ``max_files``, other composers, another folder), in pretraining and fine-tuning alike, as long as
the fractions agree. The pieces left are split into train / val by piece from the seed.

The evaluation protocol's roles: ``judge`` (VALIDATION_WORKS) is the validation set of held-out works, for every
choice (rounds, temperature, guidance); ``judge_test`` (TEST_WORKS) is the test set, used only for reported
figures. ``held_out_overlap`` finds a fine-tune's held-out pieces that its parent trained on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

_SPLIT_NAMES = {"train": "train", "validation": "val", "valid": "val", "val": "val", "dev": "val", "test": "test"}
VALIDATION_WORKS, TEST_WORKS = "judge", "judge_test"
HASH_RULE = "sha256(work key) in [0, 1), consecutive ranges per held-out split in name order"


def held_out_roles(fraction: float) -> dict[str, float]:
    """``fraction`` of the works held out, half for validation (``judge``) and half for test (``judge_test``);
    {} for 0."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in [0, 1), got {fraction!r}")
    return {VALIDATION_WORKS: fraction / 2, TEST_WORKS: fraction / 2} if fraction else {}


def work_key(piece: Any) -> str:
    """The identity a piece's held-out role is a function of: its work, else its rel_path."""
    return str(getattr(piece, "work", None) or piece.rel_path)


def work_position(key: str) -> float:
    """A work key's stable place in [0, 1): the first 52 bits of its SHA-256."""
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:13], 16) / 16**13


def held_out_role(key: str, held_out: dict[str, float]) -> str | None:
    """The held-out split a work key belongs to under ``held_out`` (name -> fraction), or None."""
    u, start = work_position(key), 0.0
    for name in sorted(held_out):
        if start <= u < start + held_out[name]:
            return name
        start += held_out[name]
    return None


def held_out_overlap(held: Iterable[dict], trained: Iterable[dict]) -> list[dict]:
    """The index entries of ``held`` (a fine-tune's held-out pieces) whose content hash (or, for an index made
    before content hashes, rel_path) is among ``trained`` (the parent's train and val entries): pieces whose role
    as unseen test material the parent has already spoiled."""
    trained = list(trained)
    hashes = {e["content"] for e in trained if e.get("content")}
    paths = {e["rel_path"] for e in trained if not e.get("content")}
    return [e for e in held if (e.get("content") in hashes) or (e["rel_path"] in paths)]


def assign_splits(pieces: Sequence[Any], val_fraction: float, seed: int,
                  held_out: dict[str, float] | None = None) -> dict[str, list[Any]]:
    """Pieces -> {"train", "val"[, "test"], *held_out}, by piece, sorted by rel_path.

    ``held_out`` (e.g. ``held_out_roles(0.3)``) first sets aside whole works by ``held_out_role``: pieces the
    generator never trains or validates on, for the judge. A piece's own ``split`` (e.g. MAESTRO's
    train/validation/test) is honoured for the rest; the others are shuffled with ``seed`` (after sorting by
    rel_path, so input order does not matter) and ``val_fraction`` of them go to val. With >= 2 pieces, val gets
    at least one piece (taken from train if the dataset's split has no validation).
    """
    seen: dict[str, Any] = {}
    for p in pieces:  # a rel_path listed twice is one piece: it cannot land on both sides
        seen.setdefault(p.rel_path, p)
    ordered = [seen[k] for k in sorted(seen)]
    held_out = dict(held_out or {})
    out: dict[str, list[Any]] = {"train": [], "val": [], **{name: [] for name in sorted(held_out)}}
    for name, fraction in held_out.items():
        if name in ("train", "val", "test") or not 0.0 < fraction < 1.0:
            raise ValueError(f"held_out {name!r}: a new split name and a fraction in (0, 1), got {fraction!r}")
    if sum(held_out.values()) >= 1.0:
        raise ValueError(f"held_out fractions {held_out} leave nothing to train on")
    free = []
    for p in ordered:
        role = held_out_role(work_key(p), held_out) if held_out else None
        own = role or _SPLIT_NAMES.get(str(getattr(p, "split", None) or "").lower())
        (out.setdefault(own, []) if own else free).append(p)
    rng = np.random.default_rng(seed)
    perm = [free[i] for i in rng.permutation(len(free))]
    n_val = min(int(round(val_fraction * len(perm))), max(len(perm) - 1, 0))  # train keeps >= 1 piece
    out["val"] += perm[:n_val]
    out["train"] += perm[n_val:]
    if not out["val"] and len(out["train"]) >= 2:
        out["val"].append(out["train"].pop(int(rng.integers(len(out["train"])))))
    return {k: sorted(v, key=lambda p: p.rel_path) for k, v in out.items()}
