"""Which token may follow which: the tokenizer's own grammar, as a mask for sampling and a check for samples.

miditok builds, for each tokenizer configuration, the successions of token kinds its encoder produces
(``tok.tokens_types_graph``, e.g. ``"Pitch" -> {"Velocity"}``). :func:`successions` takes that graph for the musical
kinds and adds our framing: every piece is ``[BOS, ..., EOS]`` (then PAD), REMI opens it with a bar, and it may end
wherever a new bar could begin. A BPE token stands for a run of base tokens, so what may follow it depends on the
kind of its LAST base token, and what it may follow on the kind of its FIRST. The training data obeys the table (a
test checks); a sampled token that breaks it decodes to nothing useful (miditok drops it).

Condition tokens (``data.conditions``) have rows too: ``[Period, Composer, Instrumentation, BOS, ...]``; so do the
fill-in-the-middle sentinels (``data.fim``), each its own kind, after a FIM-capable model's other ids.
Every kind in the vocabulary needs a row: ``Grammar`` raises on a kind the table does not know (a new kind of
condition token, say), so admitting one is an explicit decision made in :func:`successions`, never a silent
"anything goes".
"""

from __future__ import annotations

import miditok
import numpy as np

from tchaikovsky.data.conditions import KINDS, token_name
from tchaikovsky.data.fim import SENTINELS, vocab_base
from tchaikovsky.data.tokenizer import base_tokens

EMPTY = "Empty"  # the kind of BPE's word-boundary marker, which stands for no base token


def kind(token: str) -> str:
    """The kind of a base token: ``"Pitch_60" -> "Pitch"``; a fill-in-the-middle sentinel is a kind of its own."""
    return token if token in SENTINELS else token.split("_", 1)[0]


def successions(tok: miditok.MusicTokenizer, conditions=None, fill=None) -> dict[str, set[str]]:
    """kind -> the kinds that may come next, for this tokenizer (REMI).

    The musical rows are miditok's ``tokens_types_graph`` without its special-token entries (miditok lets any kind
    precede PAD or EOS); then ours: BOS -> Bar (REMI opens every piece with a bar), EOS only after the kinds that a
    Bar may follow (a piece ends where a new bar could begin, never inside a note), EOS -> PAD -> PAD, or EOS -> the
    next piece (its BOS, or its first condition), as in the shards, where a training window may span both. BPE's
    word-boundary marker (kind ``EMPTY``, no base token) stands where a word, a bar, may begin: after the kinds a
    Bar may follow, or BOS, and before what may begin a bar. With ``fill`` (a ``data.fim.Fill``), the sentinels'
    rows (``_fill_rows``)."""
    special = {kind(t) for t in tok.config.special_tokens}
    graph = {k: {n for n in nexts if kind(n) not in special}
             for k, nexts in tok.tokens_types_graph.items() if k not in special}
    if "Bar" not in graph:
        raise ValueError(f"{type(tok).__name__} has no Bar tokens: this grammar describes REMI")
    ends = [k for k, nexts in graph.items() if "Bar" in nexts]  # where a bar (a BPE word) may begin
    opens = set().union(*(graph[k] for k in ends))  # what may begin one
    for k in ends:
        graph[k] |= {"EOS", EMPTY}
    rows = {**graph, "BOS": {"Bar", EMPTY}, "EOS": {"PAD", "BOS"}, "PAD": {"PAD"}, EMPTY: opens}
    if conditions is not None:  # [Period, Composer, Instrumentation, BOS ...]; in the data, a piece follows an EOS
        kinds = [token_name(k, "").rstrip("_") for k in KINDS]
        rows.update({a: {b} for a, b in zip(kinds, kinds[1:] + ["BOS"])})
        rows["EOS"] = {"PAD", kinds[0]}
    if fill is not None:
        _fill_rows(rows, kinds if conditions is not None else [])
    return rows


def _fill_rows(rows: dict[str, set[str]], conditions: list[str]) -> None:
    """Add to ``rows`` what a ``data.fim.psm`` training window, ``[conditions] <Fill_prefix> prefix <Fill_suffix>
    suffix <Fill_middle> middle <Fill_end>``, needs. Its prefix starts wherever the window does (any musical kind,
    BOS) or is empty; the cuts fall where a bar begins, so the prefix and the middle end where a Bar may follow, the
    suffix and the middle start with a Bar, the suffix may start with the piece's EOS or be empty. The suffix ends
    wherever the window does, so ``Fill_middle`` may follow any kind: the sampler never writes it (a model sampled
    left to right has the sentinels banned, and infilling gives it in the prompt), so that row loosens nothing
    sampled. After ``Fill_end`` (the middle is done): the rest of the window left to right from where the suffix
    ended (a bar, the piece's EOS), PAD, or a new piece. An SPM window, ``[conditions] <Fill_suffix> suffix
    <Fill_prefix> prefix <Fill_middle> ...``, adds: the conditions before ``Fill_suffix``, ``Fill_prefix`` after any
    kind (where the suffix ended) and after an empty suffix, ``Fill_middle`` after an empty prefix."""
    pre, suf, mid, end = SENTINELS
    before_bar = {k for k, nexts in rows.items() if "Bar" in nexts}  # the kinds a bar may follow, BOS included
    music = set(rows) - {"EOS", "PAD", *conditions}  # what a window may start with
    for k in rows:
        rows[k] |= {mid, pre}
    for k in before_bar:  # the prefix may end after BOS; the middle, a bar or more, never
        rows[k] |= {suf} if k == "BOS" else {suf, end}
    if conditions:
        rows[conditions[-1]] |= {pre, suf}
    rows.update({pre: music | {suf, mid}, suf: {"Bar", "EOS", mid, pre}, mid: {"Bar"},
                 end: {"Bar", "EOS", "PAD", "BOS", *conditions[:1]}})


class Grammar:
    """The successions of ``tok`` as arrays for the sampler (V = ``len(tok)``, K = number of kinds).

    Attributes: ``kinds`` (K names), ``table`` (K, K) bool (row: previous kind, column: next kind), ``first`` and
    ``last`` (V,) int32 kind indices of each id's first and last base token, ``bars`` (V,) int32 Bar tokens per id.
    ``allowed(prev_id)`` is ``table[last[prev_id], first]``. With ``conditions`` (``data.conditions``), their ids
    follow the tokenizer's (V grows by their number): each kind may follow only the one before it, and BOS only the
    last. With ``fill`` (``data.fim.Fill``, a FIM-capable model's sentinels), the 4 sentinel ids follow those (V
    grows by 4). Raises ValueError naming any kind of the vocabulary that has no row in :func:`successions`, or
    when ``fill`` does not sit right after the other ids."""

    def __init__(self, tok: miditok.MusicTokenizer, conditions=None, fill=None):
        if fill is not None and fill.base != vocab_base(len(tok), conditions):
            raise ValueError(f"the sentinels start at id {fill.base}, not after the tokenizer's and the conditions' "
                             f"{vocab_base(len(tok), conditions)} ids")
        rows = successions(tok, conditions, fill)
        self.kinds = sorted(rows)
        index = {k: i for i, k in enumerate(self.kinds)}
        self.table = np.zeros((len(self.kinds), len(self.kinds)), bool)
        for a, nexts in rows.items():
            self.table[index[a], [index[b] for b in nexts if b in index]] = True
        base = base_tokens(tok) + [[t] for t in (conditions.tokens if conditions is not None else ())]
        base += [[t] for t in (SENTINELS if fill is not None else ())]
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
