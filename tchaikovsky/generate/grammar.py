"""Which token may follow which: the tokenizer's own grammar, as a mask for sampling and a check for samples.

miditok builds, for each tokenizer configuration, the successions of token kinds its encoder produces
(``tok.tokens_types_graph``, e.g. ``"Pitch" -> {"Velocity"}``). :func:`successions` takes that graph for the musical
kinds and adds our framing: every piece is ``[BOS, ..., EOS]`` (then PAD), REMI opens it with a bar, and it may end
wherever a new bar could begin. A BPE token stands for a run of base tokens, so what may follow it depends on the
kind of its LAST base token, and what it may follow on the kind of its FIRST. The training data obeys the table (a
test checks); a sampled token that breaks it decodes to nothing useful (miditok drops it).

Condition tokens (``data.conditions``) have rows too: ``[Period, Composer, Instrumentation, BOS, ...]``; so do the
fill-in-the-middle sentinels of a FIM-capable model (``data.fim``), each its own kind, framing whole bars:
``[conditions] Fill_prefix prefix Fill_suffix suffix Fill_middle middle Fill_end``.
Every kind in the vocabulary needs a row: ``Grammar`` raises on a kind the table does not know (a new kind of
condition token, say), so admitting one is an explicit decision made in :func:`successions`, never a silent
"anything goes".
"""

from __future__ import annotations

import miditok
import numpy as np

from tchaikovsky.data.conditions import KINDS, token_name
from tchaikovsky.data.fim import SENTINELS

EMPTY = "Empty"  # the kind of BPE's word-boundary marker, which stands for no base token


def kind(token: str) -> str:
    """The kind of a base token: ``"Pitch_60" -> "Pitch"``; each fill sentinel is a kind of its own."""
    return token if token in SENTINELS else token.split("_", 1)[0]


def _fill_rows(rows: dict[str, set[str]], ends: list[str], conditions) -> None:
    """The sentinels' rows, added to ``rows`` in place: each part of a FIM window is whole bars (or empty), opening
    with a Bar (the prefix and the suffix also with a Rest, where one covers a bar line); the prefix may open with
    BOS, the suffix be the piece's EOS alone or end with it; the middle opens with a Bar and ends where a bar could
    begin."""
    prefix, suffix, middle, end = SENTINELS
    bar = {"Bar", "Rest"}
    rows.update({prefix: bar | {"BOS", suffix}, suffix: bar | {"EOS", middle}, middle: {"Bar"}, end: {"PAD"}})
    for k in ends:
        rows[k] |= {suffix, middle, end}
    rows["BOS"] |= {suffix}  # the prefix of bar 1 is [BOS]
    rows["EOS"] |= {middle}  # a suffix runs to the piece's end
    if conditions is not None:  # [conditions] Fill_prefix ...; a window may follow a Fill_end
        rows[token_name(KINDS[-1], "").rstrip("_")] |= {prefix}
        rows[end] |= {token_name(KINDS[0], "").rstrip("_")}


def successions(tok: miditok.MusicTokenizer, conditions=None, fill: bool = False) -> dict[str, set[str]]:
    """kind -> the kinds that may come next, for this tokenizer (REMI).

    The musical rows are miditok's ``tokens_types_graph`` without its special-token entries (miditok lets any kind
    precede PAD or EOS); then ours: BOS -> Bar (REMI opens every piece with a bar), EOS only after the kinds that a
    Bar may follow (a piece ends where a new bar could begin, never inside a note), EOS -> PAD -> PAD. BPE's
    word-boundary marker (kind ``EMPTY``, no base token) stands where a word, a bar, may begin: after the kinds a
    Bar may follow, or BOS, and before what may begin a bar. With ``fill``, the rows of the four sentinels
    (``_fill_rows``)."""
    special = {kind(t) for t in tok.config.special_tokens}
    graph = {k: {n for n in nexts if kind(n) not in special}
             for k, nexts in tok.tokens_types_graph.items() if k not in special}
    if "Bar" not in graph:
        raise ValueError(f"{type(tok).__name__} has no Bar tokens: this grammar describes REMI")
    ends = [k for k, nexts in graph.items() if "Bar" in nexts]  # where a bar (a BPE word) may begin
    opens = set().union(*(graph[k] for k in ends))  # what may begin one
    for k in ends:
        graph[k] |= {"EOS", EMPTY}
    rows = {**graph, "BOS": {"Bar", EMPTY}, "EOS": {"PAD"}, "PAD": {"PAD"}, EMPTY: opens}
    if conditions is not None:  # [Period, Composer, Instrumentation, BOS ...]; in the data, a piece follows an EOS
        kinds = [token_name(k, "").rstrip("_") for k in KINDS]
        rows.update({a: {b} for a, b in zip(kinds, kinds[1:] + ["BOS"])})
        rows["EOS"] = {"PAD", kinds[0]}
    if fill:
        _fill_rows(rows, ends, conditions)
    return rows


def base_tokens(tok: miditok.MusicTokenizer) -> list[list[str]]:
    """Per id, the base tokens it stands for: the token itself for an untrained tokenizer; for a trained (BPE) one,
    the run its learned token encodes (miditok's public ``decode_token_ids``), ``[]`` for the word-boundary marker."""
    if not tok.is_trained:
        names = {i: t for t, i in tok.vocab.items()}
        return [[names[i]] for i in range(len(tok))]
    out = []
    for i in range(len(tok)):
        seq = miditok.TokSequence(ids=[i], are_ids_encoded=True)
        tok.decode_token_ids(seq)
        out.append(list(seq.tokens))
    return out


class Grammar:
    """The successions of ``tok`` as arrays for the sampler (V = ``len(tok)``, K = number of kinds).

    Attributes: ``kinds`` (K names), ``table`` (K, K) bool (row: previous kind, column: next kind), ``first`` and
    ``last`` (V,) int32 kind indices of each id's first and last base token, ``bars`` (V,) int32 Bar tokens per id.
    ``allowed(prev_id)`` is ``table[last[prev_id], first]``. With ``conditions`` (``data.conditions``), their ids
    follow the tokenizer's (V grows by their number): each kind may follow only the one before it, and BOS only the
    last. With ``fill`` (a ``data.fim.Fill``, or True), the four sentinels follow (V grows by 4). Raises ValueError
    naming any kind of the vocabulary that has no row in :func:`successions`."""

    def __init__(self, tok: miditok.MusicTokenizer, conditions=None, fill=None):
        rows = successions(tok, conditions, fill=bool(fill))
        self.kinds = sorted(rows)
        index = {k: i for i, k in enumerate(self.kinds)}
        self.table = np.zeros((len(self.kinds), len(self.kinds)), bool)
        for a, nexts in rows.items():
            self.table[index[a], [index[b] for b in nexts if b in index]] = True
        base = base_tokens(tok) + [[t] for t in (conditions.tokens if conditions is not None else ())]
        base += [[t] for t in (SENTINELS if fill else ())]
        unknown = sorted({kind(t) for run in base for t in run} - set(index))
        if unknown:
            raise ValueError(f"token kind(s) {unknown} of the tokenizer have no row in the grammar: decide what "
                             "may follow them, and what they may follow, in tchaikovsky.generate.grammar.successions")
        first = [run[0] if run else EMPTY for run in base]
        last = [run[-1] if run else EMPTY for run in base]
        self.first = np.asarray([index[kind(t)] for t in first], np.int32)
        self.last = np.asarray([index[kind(t)] for t in last], np.int32)
        self.bars = np.asarray([sum(kind(t) == "Bar" for t in run) for run in base], np.int32)

    def allowed(self, prev_id: int) -> np.ndarray:
        """(V,) bool: the ids that may follow ``prev_id``."""
        return self.table[self.last[prev_id], self.first]

    def invalid_share(self, ids) -> float:
        """Share of successive pairs in ``ids`` that the grammar forbids (0.0 for fewer than two tokens)."""
        ids = np.asarray(ids, np.int64).ravel()
        if ids.size < 2:
            return 0.0
        ok = self.table[self.last[ids[:-1]], self.first[ids[1:]]]
        return float(1.0 - ok.mean())
