"""Views of a run's data for evaluations: real pieces of a split decoded like the samples, generated pieces
decoded with their failures kept, and the n-gram index of the training tokens.

Real and generated pieces pass through the same tokenizer grid (both are decoded from token ids), so a judge or a
set comparison cannot tell them apart by quantisation alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from tchaikovsky.data.tokenizer import decode_ids, music_ids, try_decode
from tchaikovsky.evaluation.originality import NgramIndex

__all__ = ["Decoded", "decoded_split", "decode_samples", "has_notes", "training_index"]


@dataclass(frozen=True)
class Decoded:
    """A piece decoded from its token ids, with what is known of it (for the judge and ``compare_sets``)."""

    score: object
    rel_path: str
    work: str | None = None
    composer: str | None = None
    period: str | None = None
    instrumentation: str | None = None


def decoded_split(shards, tok, split: str, *, originals_only: bool = True) -> list[Decoded]:
    """The pieces of a split decoded to Scores (augmented copies left out with ``originals_only``). A stored piece
    always has notes; one that decodes to none is left out with a warning naming how many."""
    out, empty = [], 0
    for i, entry in enumerate(shards.pieces(split)):
        if originals_only and entry.get("augment"):
            continue
        score = decode_ids(tok, shards.piece_ids(split, i))
        if score.note_num() > 0:
            out.append(Decoded(score, entry["rel_path"], entry.get("work"), entry.get("composer"),
                               entry.get("period"), entry.get("instrumentation")))
        else:
            empty += 1
    if empty:
        warnings.warn(f"{empty} piece(s) of the {split!r} split decode to no notes and are left out", stacklevel=2)
    return out


def has_notes(score) -> bool:
    """A generated piece the judge can hear: decoded, with at least one note."""
    return score is not None and score.note_num() > 0


def decode_samples(tok, seqs: Sequence) -> tuple[list, dict]:
    """Generated id sequences -> (Scores, with None for a sequence that failed to decode; failure counts
    ``{"decode_error": n, "no_notes": n}``). Every sequence keeps its place: a failure is a miss, never dropped."""
    scores = [try_decode(tok, s) for s in seqs]
    failed = {"decode_error": sum(s is None for s in scores),
              "no_notes": sum(s is not None and s.note_num() == 0 for s in scores)}
    return scores, failed


def training_index(shards, tok, seed: int = 0) -> NgramIndex:
    """The n-gram index of the training split's music tokens (``tokenizer.music_ids``), for copy checks."""
    return NgramIndex([music_ids(tok, shards.piece_ids("train", i)) for i in range(len(shards.pieces("train")))],
                      seed=seed)
