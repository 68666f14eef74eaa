"""Token shards: split by piece, resumable parallel tokenization, deterministic batches, exact eval tiling."""

import json
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from symusic import Note, Score, Tempo, TimeSignature, Track

from tchaikovsky.data.corpus import Piece
from tchaikovsky.data.shards import Shards, assign_splits, build_shards
from tchaikovsky.data.tokenizer import encode_file, make_tokenizer, special_ids, tokenizer_hash


N_PIECES = 12


def write_piece(path: Path, seed: int, n_notes: int = 40) -> Path:
    """A small two-part piece on an eighth-note grid."""
    rng = np.random.default_rng(seed)
    score = Score(480)
    score.tempos.append(Tempo(0, 100.0))
    score.time_signatures.append(TimeSignature(0, 3, 4))
    for k, program in enumerate((0, 40)):
        track = Track(program=program)
        for i in range(n_notes):
            track.notes.append(Note(i * 240, 240, int(72 - 12 * k + rng.integers(0, 12)), 70))
        score.tracks.append(track)
    score.dump_midi(str(path))
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Piece]:
    root = tmp_path_factory.mktemp("corpus")
    pieces = [Piece(write_piece(root / f"p{i:02d}.mid", i, 20 + 5 * i), f"p{i:02d}.mid", composer="test")
              for i in range(N_PIECES)]
    (root / "broken.mid").write_bytes(np.random.default_rng(0).bytes(300))
    Score(480).dump_midi(str(root / "empty.mid"))
    extra = [Piece(root / "broken.mid", "broken.mid"), Piece(root / "empty.mid", "empty.mid")]
    return pieces + extra


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def built(tok, corpus, tmp_path_factory) -> Path:
    """Built once with a 2-process pool (the spawn path), reused by the read-side tests."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = build_shards(tok, corpus, tmp_path_factory.mktemp("shards"), val_fraction=0.25, seed=0,
                           workers=2)
    assert not [w for w in caught if "process pool" in str(w.message)]  # the pool really ran
    return out


def _rel_paths(shards: Shards, split: str) -> set[str]:
    return {p["rel_path"] for p in shards.pieces(split)}


def test_index_is_valid_and_matches_the_tokenizer(built, tok, corpus):
    index = json.loads((built / "index.json").read_text())
    assert index["tokenizer_hash"] == tokenizer_hash(tok)
    assert index["vocab_size"] == len(tok) and index["dtype"] == "uint16" and index["seed"] == 0
    shards = Shards(built)
    sp = special_ids(tok)
    path_of = {c.rel_path: c.path for c in corpus}
    for split in ("train", "val"):
        pieces = shards.pieces(split)
        assert sum(p["length"] for p in pieces) == shards.n_tokens(split) == index["splits"][split]["n_tokens"]
        assert [p["offset"] for p in pieces] == list(np.cumsum([0] + [p["length"] for p in pieces[:-1]]))
        for i, p in enumerate(pieces):
            ids = shards.piece_ids(split, i)
            assert ids[0] == sp["bos"] and ids[-1] == sp["eos"] and p["composer"] == "test"
            np.testing.assert_array_equal(ids, encode_file(tok, path_of[p["rel_path"]]))
    assert shards.n_notes("val") == sum(p["n_notes"] for p in shards.pieces("val")) > 0


def test_split_is_by_piece(built):
    shards = Shards(built)
    train, val = _rel_paths(shards, "train"), _rel_paths(shards, "val")
    assert not train & val
    assert train | val == {f"p{i:02d}.mid" for i in range(N_PIECES)}
    assert len(val) == 3  # 25% of the 12 good pieces (+2 bad ones that are skipped after the split)


def test_split_is_reproducible_and_seeded(corpus):
    names = lambda s: [p.rel_path for p in s["val"]]  # noqa: E731
    assert names(assign_splits(corpus, 0.25, seed=0)) == names(assign_splits(corpus[::-1], 0.25, seed=0))
    assert names(assign_splits(corpus, 0.25, seed=0)) != names(assign_splits(corpus, 0.25, seed=1))
    two = assign_splits(corpus[:2], 0.1, seed=0)
    assert len(two["val"]) == 1 and len(two["train"]) == 1  # at least one validation piece


def test_dataset_split_is_honoured(tok, corpus, tmp_path):
    own = ["train", "validation", "test"]
    tagged = [replace(p, split=own[i % 3]) for i, p in enumerate(corpus[:6])]
    shards = Shards(build_shards(tok, tagged, tmp_path, seed=3, workers=1))
    assert _rel_paths(shards, "val") == {"p01.mid", "p04.mid"}
    assert _rel_paths(shards, "test") == {"p02.mid", "p05.mid"}
    assert _rel_paths(shards, "train") == {"p00.mid", "p03.mid"}
    assert (tmp_path / "test.bin").is_file()


def test_bad_files_are_skipped_with_a_reason(built):
    skipped = {s["path"]: s["reason"] for s in Shards(built).index["skipped"]}
    assert set(skipped) == {"broken.mid", "empty.mid"}
    assert "too short" in skipped["empty.mid"] and skipped["broken.mid"]


def test_rerun_encodes_nothing(built, tok, corpus):
    cached = sorted((built / "pieces").glob("*"))
    mtimes = [f.stat().st_mtime_ns for f in cached]
    before = (built / "train.bin").read_bytes()
    build_shards(tok, corpus, built, val_fraction=0.25, seed=0, workers=2)
    stats = Shards(built).index["stats"]
    assert stats["encoded"] == 0 and stats["cached"] == len(corpus)
    assert [f.stat().st_mtime_ns for f in sorted((built / "pieces").glob("*"))] == mtimes
    assert (built / "train.bin").read_bytes() == before
    assert not list(built.glob("*.tmp"))


def test_batch_is_deterministic_and_sharded(built):
    shards = Shards(built)
    b = shards.batch(5, 8, 32, seed=1)
    assert b.shape == (8, 33) and b.dtype == np.int32
    np.testing.assert_array_equal(b, shards.batch(5, 8, 32, seed=1))
    assert not np.array_equal(b, shards.batch(6, 8, 32, seed=1))
    assert not np.array_equal(b, shards.batch(5, 8, 32, seed=2))
    halves = [shards.batch(5, 8, 32, seed=1, process_index=i, process_count=2) for i in range(2)]
    np.testing.assert_array_equal(np.concatenate(halves), b)
    flat = np.asarray(shards._split("train"))  # every row is a real contiguous window of the split
    for row in b:
        starts = np.flatnonzero(np.lib.stride_tricks.sliding_window_view(flat, 33).__eq__(row).all(1))
        assert len(starts) >= 1
    with pytest.raises(ValueError, match="divisible"):
        shards.batch(0, 7, 32, process_count=2)


def test_batch_pads_a_short_split(built):
    shards = Shards(built)
    n = shards.n_tokens("val")
    b = shards.batch(0, 2, n + 10, split="val")
    assert b.shape == (2, n + 11)
    assert (b[:, n:] == shards.pad_id).all()
    np.testing.assert_array_equal(b[0, :n], shards._split("val"))


def test_eval_batches_cover_the_split_once(built):
    shards = Shards(built)
    n, T, B = shards.n_tokens("val"), 16, 4
    batches = list(shards.eval_batches(B, T))
    assert len(batches) == shards.n_eval_batches(B, T)
    assert all(t.shape == (B, T + 1) and m.shape == (B, T) for t, m in batches)
    assert sum(float(m.sum()) for _, m in batches) == n - 1
    targets = np.concatenate([t[:, 1:][m > 0] for t, m in batches])
    np.testing.assert_array_equal(targets, np.asarray(shards._split("val"))[1:])


def test_hand_written_index_is_read_as_a_memory_map(tmp_path):
    """A hand-written index: Shards is a plain reader of (index.json, *.bin). The split stays on disk (memory-mapped,
    never read whole), and every batch row is the window at the start ``default_rng([seed, step])`` draws."""
    n, B, T = 60_000, 16, 1024
    np.arange(n, dtype=np.uint16).tofile(tmp_path / "train.bin")  # token = its position: windows are identifiable
    index = {"tokenizer_hash": "x", "vocab_size": 2**16, "dtype": "uint16", "seed": 0,
             "special_ids": {"pad": 0, "bos": 1, "eos": 2}, "splits": {"train": {"n_tokens": n, "pieces": []}}}
    (tmp_path / "index.json").write_text(json.dumps(index))
    shards = Shards(tmp_path)
    assert isinstance(shards._split("train"), np.memmap)
    for step in (0, 7):
        starts = np.random.default_rng([3, step]).integers(0, n - (T + 1) + 1, size=B)
        np.testing.assert_array_equal(shards.batch(step, B, T, seed=3), starts[:, None] + np.arange(T + 1))


def test_missing_or_truncated_shards_raise_clearly(built, tmp_path):
    with pytest.raises(FileNotFoundError, match="build_shards"):
        Shards(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "index.json").write_text((built / "index.json").read_text())
    (broken / "train.bin").write_bytes(b"\0\0")
    with pytest.raises(ValueError, match="rebuild"):
        Shards(broken)


def test_augmentation_adds_training_copies_only(tmp_path):
    import symusic

    from tchaikovsky.data.augment import Augment

    files = []
    for i in range(6):
        score = symusic.Score(480)
        track = symusic.Track("piano", 0, False)
        for j in range(16):
            track.notes.append(symusic.Note(j * 240, 240, 60 + (i + j) % 12, 80))
        track.notes.append(symusic.Note(0, 480, 107, 80))  # near the top of the piano: +2 leaves the range
        score.tracks.append(track)
        score.tempos.append(symusic.Tempo(0, 100.0))
        path = tmp_path / f"p{i}.mid"
        score.dump_midi(str(path))
        files.append(path)
    from tchaikovsky.data.corpus import Piece
    from tchaikovsky.data.tokenizer import make_tokenizer

    pieces = [Piece(path=f, rel_path=f.name) for f in files]
    tok = make_tokenizer()
    plain = Shards(build_shards(tok, pieces, tmp_path / "plain"))
    aug = Augment(transpose=(-2, 2), velocity=(10,), tempo=(1.1,))
    out = Shards(build_shards(tok, pieces, tmp_path / "aug", augment=aug))
    n_train = len(plain.pieces("train"))
    # +2 leaves the piano range for every piece; -2, velocity and tempo copies are kept
    assert len(out.pieces("train")) == n_train * 4
    assert out.pieces("val") == plain.pieces("val")
    copies = [p for p in out.pieces("train") if "augment" in p]
    assert sorted({tuple(p["augment"]) for p in copies}) == [(-2, 0, 1.0), (0, 0, 1.1), (0, 10, 1.0)]
    assert out.index["skipped"] == plain.index["skipped"] == []
    again = Shards(build_shards(tok, pieces, tmp_path / "aug", augment=aug))
    assert again.index["stats"]["encoded"] == 0  # augmented copies are cached like pieces


def test_augment_variants_change_what_they_say():
    """Each variant on a score with a piano and a drum track: the new Score, what changed, what did not."""
    from tchaikovsky.data.augment import Augment, OutOfRange as _OutOfRange, apply_variant as _apply

    score = Score(480)
    piano, drums = Track("piano", 0, False), Track("drums", 0, True)
    piano.notes.extend([Note(0, 480, 60, 5), Note(480, 480, 100, 125)])
    drums.notes.extend([Note(0, 120, 20, 64), Note(240, 120, 42, 64)])  # below A0: drums never limit transposition
    score.tracks.extend([piano, drums])
    score.tempos.append(Tempo(0, 100.0))

    def pitches(s, k):
        return list(s.tracks[k].notes.numpy()["pitch"])

    def velocities(s, k):
        return list(s.tracks[k].notes.numpy()["velocity"])

    up = _apply(score, (8, 0, 1.0))
    assert [t.is_drum for t in up.tracks] == [False, True]
    assert pitches(up, 0) == [68, 108] and pitches(up, 1) == [20, 42]  # 108 = C8: still inside
    assert pitches(score, 0) == [60, 100]  # the input is left as it was
    for semitones in (9, -40):  # C8 + 1, A0 - 1
        with pytest.raises(_OutOfRange):
            _apply(score, (semitones, 0, 1.0))
    assert velocities(_apply(score, (0, 10, 1.0)), 0) == [15, 127]  # clipped to 127
    assert velocities(_apply(score, (0, -10, 1.0)), 0) == [1, 115]  # clipped to 1
    assert velocities(_apply(score, (0, -10, 1.0)), 1) == [54, 54]  # drums too: loudness is not pitch
    faster = _apply(score, (0, 0, 1.5))
    assert faster.tempos[0].qpm == pytest.approx(150.0) and score.tempos[0].qpm == pytest.approx(100.0)
    assert pitches(faster, 0) == [60, 100] and velocities(faster, 0) == [5, 125]
    assert _apply(score, None) is score
    assert Augment(transpose=(0, 2), velocity=(0,), tempo=(1.0, 0.9)).variants() == [(2, 0, 1.0), (0, 0, 0.9)]
