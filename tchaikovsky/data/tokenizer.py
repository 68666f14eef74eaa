"""MIDI <-> token ids: a REMI+ vocabulary (miditok), optionally compressed with BPE.

One token stream per piece: with ``use_programs=True`` every note is preceded by a ``Program`` token, so a
four-part chorale is a single sequence (without programs miditok would emit one sequence per track; we then
merge the pitched tracks into one piano part so the model still sees one stream). Every encoded piece is framed
as ``[BOS, ..., EOS]`` by us, so unconditional sampling from ``[BOS]`` is in-distribution and the model learns
where pieces end.

The tokenizer is saved as miditok's own JSON (``tokenizer.json``), loadable with plain ``miditok.REMI(params=...)``.
``tokenizer_hash`` fingerprints vocabulary + config so checkpoints and shards can detect a mismatched tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import miditok
import numpy as np
from miditok.utils import merge_tracks
from symusic import Score, Track

from tchaikovsky import io, progress

TOKENIZER_FILE = "tokenizer.json"
SPECIAL_TOKENS = ("PAD", "BOS", "EOS")
_VERSION_KEYS = ("miditok_version", "symusic_version", "hf_tokenizers_version")


def make_tokenizer(*, use_programs: bool = True) -> miditok.REMI:
    """The base (untrained) REMI+ tokenizer: programs, tempos, time signatures, rests; no sustain pedal.

    Positions: 8 per beat in the first bar (0-4 beats), 4 per beat for longer durations; 32 velocity bins.
    """
    config = miditok.TokenizerConfig(
        pitch_range=(21, 109),
        beat_res={(0, 4): 8, (4, 12): 4},
        num_velocities=32,
        special_tokens=list(SPECIAL_TOKENS),
        use_programs=use_programs,
        one_token_stream_for_programs=use_programs,
        use_tempos=True,
        use_time_signatures=True,
        use_rests=True,
        use_chords=False,
        use_sustain_pedals=False,
        use_pitch_bends=False,
        encode_ids_split="bar",  # BPE merges never cross a bar line
    )
    return miditok.REMI(config)


class _TrainingBytes:
    """Files -> miditok's byte strings for the 🤗 BPE trainer; unreadable files contribute nothing (no crash)."""

    def __init__(self, tok: miditok.REMI, files: Sequence[Path]):
        self.inner = miditok.TokTrainingIterator(tok, [Path(f) for f in files])

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[list[str]]:
        for i in progress.bar(range(len(self.inner)), desc="BPE: tokenizing"):
            try:
                yield self.inner[i]
            except Exception:  # noqa: BLE001 - a broken file must not stop training
                yield []


def train_tokenizer(
    files: Sequence[Path], vocab_size: int, *, use_programs: bool = True
) -> miditok.REMI:
    """Learn BPE merges on ``files`` until the vocabulary has ``vocab_size`` ids (base tokens included).

    If ``vocab_size`` is not above the base vocabulary, no BPE is learned: the base tokenizer is returned with a
    warning. The 🤗 trainer stops short of ``vocab_size`` when the data runs out of pairs to merge (warned too):
    size models from ``len(tok)``, not from the request. Merges never cross bar lines. Unreadable files are
    ignored. Our per-file bar is ``progress.bar`` (``progress.quiet`` silences it); miditok always turns on the 🤗
    trainer's own bar.
    """
    tok = make_tokenizer(use_programs=use_programs)
    base = len(tok)
    if vocab_size <= base:
        warnings.warn(
            f"vocab_size={vocab_size} <= base REMI vocabulary ({base}): no BPE, using the base tokenizer.",
            stacklevel=2,
        )
        return tok
    if not files:
        raise ValueError("train_tokenizer needs at least one MIDI file to learn BPE from")
    tok.train(vocab_size=vocab_size, model="BPE", iterator=_TrainingBytes(tok, files))
    if len(tok) < vocab_size:
        warnings.warn(f"BPE ran out of merges at {len(tok)} < vocab_size={vocab_size}: too little training data.",
                      stacklevel=2)
    return tok


def save_tokenizer(tok: miditok.MusicTokenizer, path: str | Path) -> Path:
    """Write miditok's JSON (``path`` or ``path/tokenizer.json`` for a directory), atomically; return the file."""
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / TOKENIZER_FILE
    with io.replacing(path) as tmp:
        tok.save(tmp)
    return path


def load_tokenizer(path: str | Path) -> miditok.REMI:
    """Load a tokenizer saved by ``save_tokenizer`` (a file, or a directory holding ``tokenizer.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer file at {path} (save one with save_tokenizer(tok, run_dir))")
    try:
        params = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a tokenizer JSON file: {e}") from e
    name = params.get("tokenization") if isinstance(params, dict) else None
    cls = getattr(miditok, name, None) if isinstance(name, str) else None
    if cls is None or not isinstance(cls, type) or not issubclass(cls, miditok.MusicTokenizer):
        raise ValueError(f"{path} does not describe a miditok tokenizer (tokenization={name!r})")
    return cls(params=path)


def tokenizer_hash(tok: miditok.MusicTokenizer) -> str:
    """16 hex chars of SHA-256 over config + base vocab + BPE model; independent of library versions."""
    params = {k: v for k, v in tok.to_dict().items() if k not in _VERSION_KEYS}
    params["_vocab_base"] = tok.vocab  # also for untrained tokenizers
    blob = json.dumps(params, sort_keys=True, default=str)  # json normalises tuples vs lists after a reload
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def special_ids(tok: miditok.MusicTokenizer) -> dict[str, int]:
    """Ids of the special tokens we frame pieces with: ``{"pad", "bos", "eos"}``."""
    return {"pad": tok["PAD_None"], "bos": tok["BOS_None"], "eos": tok["EOS_None"]}


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


def _single_stream(tok: miditok.MusicTokenizer, score: Score) -> Score:
    """Without program tokens, merge the pitched tracks into one piano part (drums dropped): one stream."""
    if tok.one_token_stream:
        return score
    pitched = [t.copy() for t in score.tracks if not t.is_drum and len(t.notes) > 0]
    score = score.copy()
    score.tracks = [merge_tracks(pitched)] if pitched else []
    if pitched:
        score.tracks[0].program = 0
    return score


def _encode(tok: miditok.MusicTokenizer, path_or_score: str | Path | Score):
    """Preprocess + tokenize one piece: (TokSequence with BPE ids, preprocessed Score)."""
    score = tok.preprocess_score(_single_stream(tok, io.load_score(path_or_score)))
    seq = tok.encode(score, no_preprocess_score=True)
    if isinstance(seq, list):  # one sequence per track when programs are off (a single merged track)
        seq = seq[0] if seq else miditok.TokSequence(ids=[], tokens=[])
    return seq, score


def encode_events(tok: miditok.MusicTokenizer, path_or_score: str | Path | Score) -> tuple[miditok.TokSequence, Score]:
    """A piece's ``TokSequence`` before we frame it (``ids``: BPE ids; ``tokens`` and ``events``: its base tokens,
    each event with its ``time`` in the ticks of the preprocessed Score) and that Score (miditok's grid, one stream):
    where ``encode_file``'s ids come from, for code that needs to know when each token happens (``generate.bars``)."""
    return _encode(tok, path_or_score)


def encode_with_notes(tok: miditok.MusicTokenizer, path_or_score: str | Path | Score) -> tuple[np.ndarray, int]:
    """``encode_file`` plus the number of notes the tokens represent (after preprocessing: for bits per note)."""
    seq, score = _encode(tok, path_or_score)
    sp = special_ids(tok)
    ids = np.asarray([sp["bos"], *seq.ids, sp["eos"]], dtype=np.int32)
    return ids, int(sum(len(t.notes) for t in score.tracks))


def encode_file(tok: miditok.MusicTokenizer, path_or_score: str | Path | Score) -> np.ndarray:
    """A piece as int32 ids ``[BOS, ...piece (BPE applied)..., EOS]``."""
    return encode_with_notes(tok, path_or_score)[0]


def music_ids(tok: miditok.MusicTokenizer, ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """The ids of ``ids`` that are music: without PAD/BOS/EOS and without ids past the tokenizer's vocabulary (the
    condition tokens of a conditioned run). What originality checks compare."""
    ids = np.asarray(ids)
    return ids[(ids < len(tok)) & ~np.isin(ids, list(special_ids(tok).values()))]


def try_decode(tok: miditok.MusicTokenizer, ids: Sequence[int] | np.ndarray) -> Score | None:
    """Ids -> Score, or None when the tokenizer cannot decode them (the failure evaluations count as a miss).
    Specials and out-of-range ids (condition tokens) are dropped first; no music ids at all is an empty Score."""
    arr = np.asarray(ids, dtype=np.int64).ravel()
    drop = list(special_ids(tok).values())
    arr = arr[(arr >= 0) & (arr < len(tok)) & ~np.isin(arr, drop)]
    if arr.size == 0:
        return Score(tok.time_division)
    seq = arr.tolist()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tok.decode(seq if tok.one_token_stream else [seq])
    except Exception:  # noqa: BLE001 - arbitrary sampled ids: any decoder error is this piece's failure
        return None


def decode_ids(tok: miditok.MusicTokenizer, ids: Sequence[int] | np.ndarray) -> Score:
    """Ids -> Score. Never raises: an undecodable sequence becomes an empty Score (``try_decode`` tells the two
    apart, for evaluations, where a failure must count as a miss rather than vanish).

    Model samples are arbitrary id sequences, so this must be total: a bad sample is an empty piece, not a crash.
    """
    score = try_decode(tok, ids)
    return Score(tok.time_division) if score is None else score


def save_midi(tok: miditok.MusicTokenizer, ids: Sequence[int] | np.ndarray, path: str | Path) -> Path:
    """Decode ``ids`` and write a .mid file (parents created); return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    score = decode_ids(tok, ids)
    if not score.tracks:  # symusic 0.6 writes a track-less score's tempo/time-signature events out of order
        score.tracks.append(Track("empty", 0, False))  # (they reload at tick ~2**28); an empty track avoids it
    score.dump_midi(str(path))
    return path


def _onsets(score: Score, grid: int) -> Counter:
    """Multiset of (pitch, onset quantised to 1/grid of a quarter note) over all tracks."""
    tpq = score.ticks_per_quarter
    return Counter(
        (n.pitch, int(round(n.time * grid / tpq))) for t in score.tracks for n in t.notes
    )


def round_trip(tok: miditok.MusicTokenizer, path: str | Path | Score) -> dict:
    """Encode then decode a real file: how much survives, and how much BPE compresses.

    ``note_match`` is the fraction of the input's (pitch, onset) pairs, onsets on the tokenizer's finest grid,
    found again after decoding (notes outside the pitch range count as lost).
    """
    score_in = _single_stream(tok, io.load_score(path))
    seq, _ = _encode(tok, score_in)
    score_out = decode_ids(tok, seq.ids)
    grid = tok.config.max_num_pos_per_beat
    notes_in, notes_out = _onsets(score_in, grid), _onsets(score_out, grid)
    n_in, n_out = sum(notes_in.values()), sum(notes_out.values())
    before, after = len(seq.tokens), len(seq.ids)
    return {
        "notes_in": n_in,
        "notes_out": n_out,
        "note_match": sum((notes_in & notes_out).values()) / max(n_in, 1),
        "tokens_before_bpe": before,
        "tokens_after_bpe": after,
        "tokens_per_note_before": before / max(n_in, 1),
        "tokens_per_note_after": after / max(n_in, 1),
    }


def token_strings(tok: miditok.MusicTokenizer, path_or_score: str | Path | Score, n: int = 32) -> dict:
    """The first ``n`` REMI tokens of a piece as text, and the first ``n`` ids the model sees after BPE merged them."""
    seq, _ = _encode(tok, path_or_score)
    return {"remi_tokens": list(seq.tokens[:n]), "bpe_ids": [int(i) for i in seq.ids[:n]]}
