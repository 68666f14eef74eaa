"""Which token may follow which: REMI's grammar, as a mask for sampling and a check for samples.

REMI (with program tokens, one stream) writes every note as ``Program Pitch Velocity Duration`` after a
``Position``, positions after a ``Bar`` (and its ``TimeSig``), tempo changes after a position, rests between notes.
A BPE token stands for a run of such base tokens, so what may follow it depends on its LAST base token's kind and
what it starts with on its FIRST base token's kind. ``NEXT`` lists the allowed successions of kinds; the training
data obeys it (a test checks), and a sampled token that breaks it decodes to nothing useful (miditok drops it).
"""

from __future__ import annotations

import numpy as np

# kind -> kinds that may come next
NEXT: dict[str, set[str]] = {
    "BOS": {"Bar", "TimeSig", "Position", "Tempo", "EOS"},
    "Bar": {"TimeSig", "Position", "Bar", "Rest", "Tempo", "EOS"},
    "TimeSig": {"Position", "Bar", "Tempo", "Rest", "EOS"},
    "Position": {"Program", "Pitch", "Tempo"},
    "Tempo": {"Program", "Pitch", "Position", "Bar", "Rest", "TimeSig"},
    "Program": {"Pitch"},
    "Pitch": {"Velocity"},
    "Velocity": {"Duration"},
    "Duration": {"Program", "Pitch", "Position", "Bar", "Rest", "Tempo", "EOS"},
    "Rest": {"Rest", "Position", "Bar", "Tempo", "TimeSig", "EOS"},
    "EOS": {"PAD"},
    "PAD": {"PAD"},
}
KINDS = sorted(NEXT)


_ALIASES = {"PitchDrum": "Pitch"}  # drum notes: PitchDrum Velocity Duration, like Pitch


def _kind(token: str) -> str:
    kind = token.split("_", 1)[0]
    return _ALIASES.get(kind, kind)


def token_kinds(tok) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per id: the kind index (into ``KINDS``) of its first and of its last base token, and how many Bar tokens it
    holds. Unknown kinds (tokens of a tokenizer configuration this grammar does not describe) get -1, which the
    mask treats as "anything goes"."""
    V = len(tok)
    first = np.full(V, -1, np.int32)
    last = np.full(V, -1, np.int32)
    bars = np.zeros(V, np.int32)
    index = {k: i for i, k in enumerate(KINDS)}
    learned = getattr(tok, "_vocab_learned_bytes_to_tokens", None)
    if getattr(tok, "is_trained", False) and learned:
        items = ((i, learned[b]) for b, i in tok.vocab_model.items())
    else:
        items = ((i, [t]) for t, i in tok.vocab.items())
    for i, base in items:
        if not base:  # e.g. BPE's word-boundary marker: no musical content
            continue
        first[i] = index.get(_kind(base[0]), -1)
        last[i] = index.get(_kind(base[-1]), -1)
        bars[i] = sum(_kind(t) == "Bar" for t in base)
    return first, last, bars


def successor_table() -> np.ndarray:
    """(K+1, K+1) bool: row = previous kind, column = next kind; the extra last row/column is the unknown kind -1."""
    K = len(KINDS)
    table = np.ones((K + 1, K + 1), bool)
    for a, nexts in NEXT.items():
        row = np.zeros(K + 1, bool)
        row[[KINDS.index(b) for b in nexts]] = True
        row[K] = True
        table[KINDS.index(a)] = row
    return table


class Grammar:
    """Arrays for the sampler: ``allowed(prev_id) -> (V,) bool`` is ``table[last[prev], first]``."""

    def __init__(self, tok):
        self.first, self.last, self.bars = token_kinds(tok)
        self.table = successor_table()

    def allowed(self, prev_id: int) -> np.ndarray:
        return self.table[self.last[prev_id], self.first]

    def invalid_share(self, ids) -> float:
        """Share of successive pairs in ``ids`` that the grammar forbids (0.0 for fewer than two tokens)."""
        ids = np.asarray(ids, np.int64).ravel()
        if ids.size < 2:
            return 0.0
        ok = self.table[self.last[ids[:-1]], self.first[ids[1:]]]
        return float(1.0 - ok.mean())
