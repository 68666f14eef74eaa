"""REMI+ / BPE tokenizer: real miditok on real MIDI files written here with symusic (no mocks)."""

import json
import warnings
from pathlib import Path

import miditok
import numpy as np
import pytest
from symusic import Note, Score, Tempo, TimeSignature, Track

from tchaikovsky.data.tokenizer import (
    decode_ids,
    encode_file,
    load_tokenizer,
    make_tokenizer,
    round_trip,
    save_midi,
    save_tokenizer,
    special_ids,
    tokenizer_hash,
    train_tokenizer,
)

TPQ = 480
PROGRAMS = (0, 40, 41, 42)  # piano, violin, viola, cello
VOCAB = 800


def write_piece(path: Path, seed: int, *, n_tracks: int = 4, n_bars: int = 8) -> Path:
    """A quantised multi-track piece (eighth-note grid), with a tempo and a 4/4 time signature."""
    rng = np.random.default_rng(seed)
    score = Score(TPQ)
    score.tempos.append(Tempo(0, 96.0))
    score.time_signatures.append(TimeSignature(0, 4, 4))
    for k in range(n_tracks):
        track = Track(program=PROGRAMS[k % len(PROGRAMS)], name=f"part{k}")
        for step in range(n_bars * 8):
            if rng.random() < 0.6:
                dur = int(rng.choice([1, 2, 4])) * TPQ // 2
                track.notes.append(Note(step * TPQ // 2, dur, int(76 - 12 * k + rng.integers(0, 8)), 80))
        score.tracks.append(track)
    score.dump_midi(str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("midi")
    return [write_piece(d / f"piece{i}.mid", i) for i in range(8)]


@pytest.fixture(scope="module")
def tok(files):
    return train_tokenizer(files, VOCAB)


def test_base_vocabulary():
    base = make_tokenizer()
    assert len(base) == 549  # REMI+ with 129 programs (incl. drums), 32 velocities, tempos, time sigs, rests
    assert base.one_token_stream and not base.is_trained
    assert special_ids(base) == {"pad": 0, "bos": 1, "eos": 2}


def test_bpe_reaches_requested_vocab_size(tok):
    assert tok.is_trained
    assert len(tok) == VOCAB


def test_vocab_not_above_base_returns_base_tokenizer_with_warning(files):
    with pytest.warns(UserWarning, match="no BPE"):
        small = train_tokenizer(files, 100)
    assert not small.is_trained and len(small) == len(make_tokenizer())


def test_training_survives_bad_files_and_warns_when_merges_run_out(files, tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd not really a midi file")
    with pytest.warns(UserWarning, match="ran out of merges"):
        small = train_tokenizer([files[0], bad], 20_000)
    assert small.is_trained and len(make_tokenizer()) < len(small) < 20_000


def test_save_load_round_trip(tok, files, tmp_path):
    path = save_tokenizer(tok, tmp_path / "run")
    assert path == tmp_path / "run" / "tokenizer.json"
    for loaded in (load_tokenizer(path), load_tokenizer(path.parent)):
        assert tokenizer_hash(loaded) == tokenizer_hash(tok)
        for f in files:
            np.testing.assert_array_equal(encode_file(loaded, f), encode_file(tok, f))
    plain = miditok.REMI(params=path)  # loadable without this package
    assert len(plain) == len(tok) and plain.is_trained


def test_hash_tells_tokenizers_apart(tok):
    base = make_tokenizer()
    assert tokenizer_hash(base) == tokenizer_hash(make_tokenizer())
    assert len({tokenizer_hash(base), tokenizer_hash(tok), tokenizer_hash(make_tokenizer(use_programs=False))}) == 3


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer file"):
        load_tokenizer(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a tokenizer JSON"):
        load_tokenizer(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"tokenization": "NoSuchTokenizer"}))
    with pytest.raises(ValueError, match="does not describe a miditok tokenizer"):
        load_tokenizer(tmp_path / "other.json")


def test_encode_file_is_framed_with_bos_eos(tok, files):
    sp = special_ids(tok)
    ids = encode_file(tok, files[0])
    assert ids.dtype == np.int32 and ids.ndim == 1
    assert ids[0] == sp["bos"] and ids[-1] == sp["eos"]
    assert not np.isin(ids[1:-1], list(sp.values())).any()
    assert ids.max() < len(tok)
    np.testing.assert_array_equal(encode_file(tok, Score(str(files[0]))), ids)  # a Score works too


def test_four_track_piece_is_one_stream_with_program_tokens(files):
    base = make_tokenizer()
    ids = encode_file(base, files[0])
    tokens = [base[int(i)] for i in ids]
    assert {t for t in tokens if t.startswith("Program_")} == {f"Program_{p}" for p in PROGRAMS}


def _notes(score: Score) -> set[tuple[int, int, float]]:
    """(program, pitch, onset in quarter notes) of every note."""
    q = score.ticks_per_quarter
    return {(t.program, n.pitch, n.time / q) for t in score.tracks for n in t.notes}


def test_decode_recovers_notes(tok, files):
    original = Score(str(files[1]))
    decoded = decode_ids(tok, encode_file(tok, files[1]))
    assert _notes(decoded) == _notes(original)
    assert len(decoded.tracks) == 4


def test_round_trip_of_a_quantised_piece(tok, files):
    stats = round_trip(tok, files[2])
    assert stats["notes_in"] == stats["notes_out"] > 0
    assert stats["note_match"] > 0.99
    assert stats["tokens_after_bpe"] < stats["tokens_before_bpe"]
    assert stats["tokens_per_note_after"] < stats["tokens_per_note_before"]


@pytest.mark.parametrize(
    "ids",
    [
        np.random.default_rng(0).integers(0, VOCAB, 500),
        np.random.default_rng(1).integers(0, 3 * VOCAB, 500),  # mostly out of range
        [VOCAB, VOCAB + 1, 10**9, -5],
        [],
        [0, 1, 2, 2, 0],  # specials only
        np.zeros((2, 3), np.int64),
    ],
)
def test_decode_ids_never_raises(tok, ids):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # decode_ids must not leak warnings either
        score = decode_ids(tok, ids)
    assert isinstance(score, Score)
    assert score.ticks_per_quarter == tok.time_division


def test_save_midi(tok, files, tmp_path):
    out = save_midi(tok, encode_file(tok, files[4]), tmp_path / "out" / "x.mid")
    assert out.is_file()
    assert _notes(Score(str(out))) == _notes(Score(str(files[4])))


def test_without_programs_still_one_stream(files):
    piano = make_tokenizer(use_programs=False)
    ids = encode_file(piano, files[0])
    assert ids.ndim == 1 and ids[0] == special_ids(piano)["bos"]
    decoded = decode_ids(piano, ids)
    assert len(decoded.tracks) == 1
    assert {(p, t) for _, p, t in _notes(decoded)} == {(p, t) for _, p, t in _notes(Score(str(files[0])))}


def test_bpe_keeps_base_tokens_unseen_in_training(files, tmp_path):
    """miditok 3.0.4 trained BPE without the base alphabet: tokens absent from the training data (here high
    pitches) vanished from the vocabulary and such notes were silently dropped. Guards the miditok floor."""
    small = train_tokenizer([files[0]], len(make_tokenizer()) + 20)
    assert len(small) == len(make_tokenizer()) + 20
    high = Score(TPQ)
    high.tempos.append(Tempo(0, 96.0))
    high.time_signatures.append(TimeSignature(0, 4, 4))
    track = Track(program=0, name="high")
    for i, pitch in enumerate((96, 98, 100, 101, 103, 105, 107, 108)):  # far above the pieces' 40..83
        track.notes.append(Note(i * TPQ, TPQ, pitch, 80))
    high.tracks.append(track)
    high.dump_midi(str(tmp_path / "high.mid"))
    decoded = decode_ids(small, encode_file(small, tmp_path / "high.mid"))
    assert sorted(n.pitch for t in decoded.tracks for n in t.notes) == [96, 98, 100, 101, 103, 105, 107, 108]
