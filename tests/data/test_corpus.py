"""Tests for tchaikovsky.corpus on real files: music21 exports and MIDI folders built here with symusic."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import symusic

from tchaikovsky.data import embedded as E
from tchaikovsky.data.corpus import Corpus, Piece, load_corpus
from tchaikovsky.data.stats import corpus_stats, piece_stats
from tchaikovsky.data.embedded import default_cache_dir, embedded_corpus

SCALE = [60, 62, 64, 65, 67, 69, 71, 72]


def make_score(pitches, *, tpq=480, beats=1.0, program=0, drum=False, qpm=120.0, velocity=80) -> symusic.Score:
    """A one-track score playing ``pitches`` one after another, each ``beats`` quarter notes long."""
    score = symusic.Score(tpq)
    track = symusic.Track(name="drums" if drum else "piano", program=program, is_drum=drum)
    step = int(beats * tpq)
    for i, p in enumerate(pitches):
        track.notes.append(symusic.Note(i * step, step, int(p), velocity))
    score.tracks.append(track)
    score.tempos.append(symusic.Tempo(0, qpm))
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    return score


def melody(seed: int, n: int = 16) -> list[int]:
    return list(np.random.default_rng(seed).integers(48, 84, n))


def write(score: symusic.Score, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    score.dump_midi(str(path))
    return path


# ---------------------------------------------------------------------------------------------------------------------
# The embedded music21 corpus.


def test_embedded_export_and_reuse(corpus_cache, monkeypatch, tmp_path):
    root = embedded_corpus(max_files=6, cache_dir=corpus_cache, workers=2)
    assert root == Path(corpus_cache) / "music21"
    corpus = load_corpus("", max_files=6, cache_dir=corpus_cache)
    assert len(corpus.pieces) == 6 and corpus.summary()["skipped"] == 0
    assert corpus.pieces[0].rel_path == "bach/bwv1.6.mid"  # sorted music21 paths: deterministic choice
    meta = json.loads((root / "metadata.json").read_text())["pieces"]
    for piece in corpus.pieces:
        score = symusic.Score(str(piece.path))
        assert score.note_num() > 50 and piece.path.parent == root / "bach"
        assert meta[piece.rel_path]["composer"] == piece.composer == "Johann Sebastian Bach"
        assert meta[piece.rel_path]["n_parts"] == piece.n_parts >= 4  # chorales: one track per voice
        assert len([t for t in score.tracks if t.note_num()]) == piece.n_parts
        assert piece.period == "Baroque" and piece.collection == "bach" and piece.title
    assert not list(root.rglob("*.tmp"))  # atomic writes leave no temporaries behind

    stamps = {p: p.stat().st_mtime_ns for p in [*root.rglob("*.mid"), root / "metadata.json"]}

    class Converting(Exception):
        pass

    def convert(todo, *args):
        raise Converting([s.key for s in todo])

    monkeypatch.setattr(E, "_convert", convert)  # every music21 conversion goes through it
    assert embedded_corpus(max_files=6, cache_dir=corpus_cache) == root  # nothing to convert
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # and no file rewritten
    with pytest.raises(Converting):  # the spy does stand where a conversion would happen
        embedded_corpus(max_files=1, cache_dir=tmp_path)


def test_embedded_spreads_across_composers_and_takes_first_tune_of_opus(corpus_cache):
    corpus = load_corpus("", max_files=4, composers=("bach", "essenFolksong"), cache_dir=corpus_cache)
    by_collection = {c: [p for p in corpus.pieces if p.collection == c] for c in ("bach", "essenFolksong")}
    assert [len(v) for v in by_collection.values()] == [2, 2]
    folk = by_collection["essenFolksong"][0]  # altdeu10.abc is an Opus of 300+ tunes: only the first is exported
    assert folk.rel_path == "essenFolksong/altdeu10.mid" and folk.composer is None and folk.period == "Folk"
    assert folk.title == "Das Hildebrandslied" and folk.n_parts == 1
    assert symusic.Score(str(folk.path)).note_num() > 10


def test_failed_export_is_reported_replaced_and_remembered(corpus_cache):
    corpus = load_corpus("", max_files=8, composers=("essenFolksong",), cache_dir=corpus_cache)
    meta_path = Path(corpus_cache) / "music21" / "metadata.json"
    failed = json.loads(meta_path.read_text())["failed"]
    if "essenFolksong/ballad60.abc" not in failed:
        pytest.skip("this music21 version converts essenFolksong/ballad60.abc; no known-bad score to test with")
    skipped = [r for r in corpus.report if r["status"] == "skipped"]
    assert [r["path"] for r in skipped] == ["essenFolksong/ballad60.mid"]
    assert skipped[0]["reason"].startswith("export failed: ") and corpus.summary()["by_reason"] == {"export failed": 1}
    kept = [p.rel_path for p in corpus.pieces]
    assert len(kept) == 8 and "essenFolksong/ballad70.mid" in kept  # the next score takes the failed one's place
    assert not (Path(corpus_cache) / "music21" / "essenFolksong" / "ballad60.mid").exists()
    stamp = meta_path.stat().st_mtime_ns
    load_corpus("", max_files=8, composers=("essenFolksong",), cache_dir=corpus_cache)
    assert meta_path.stat().st_mtime_ns == stamp  # the failure is not retried


def test_export_worker_reports_a_broken_source_without_leaving_files(tmp_path):
    bad = tmp_path / "broken.mxl"
    bad.write_bytes(b"PK\x03\x04 this is not a real compressed MusicXML file")
    dst = tmp_path / "out" / "broken.mid"
    dst.parent.mkdir()
    result = E._export_one(str(bad), str(dst))
    assert set(result) == {"error"} and result["error"]
    assert list(dst.parent.iterdir()) == []


def test_unknown_composer_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no scores for"):
        embedded_corpus(composers=("nobody-at-all",), cache_dir=tmp_path)


# ---------------------------------------------------------------------------------------------------------------------
# A folder of good, bad and irrelevant files.


@pytest.fixture
def messy_folder(tmp_path) -> Path:
    d = tmp_path / "data"
    good1 = write(make_score(melody(1)), d / "good1.mid")
    write(make_score(melody(2), program=40), d / "upper" / "GOOD2.MID")
    write(make_score(melody(3), tpq=96), d / "good3.midi")
    write(make_score(melody(4)), d / "Good4.MiDi")
    write(make_score(melody(5)), d / "x.mid" / "inside.mid")  # a directory named x.mid is entered, not read
    (d / "corrupt.mid").write_bytes(np.random.default_rng(0).bytes(2000))
    (d / "truncated.mid").write_bytes(good1.read_bytes()[: good1.stat().st_size // 2])
    (d / "empty.mid").write_bytes(b"")
    (d / "text.mid").write_text("this is a text file, renamed\n" * 20)
    write(make_score([]), d / "nonotes.mid")
    write(make_score(melody(6) * 2, drum=True), d / "drums.mid")
    write(make_score(SCALE[:3]), d / "short.mid")
    write(make_score(melody(7, 48)), d / "long.mid")  # 48 quarter notes at 120 qpm: 24 s
    shutil.copy(good1, d / "zz_copy.mid")
    hires = make_score(melody(1), tpq=960, velocity=30)  # same music at another resolution and loudness
    write(hires, d / "zz_hires.mid")
    for name in ("readme.txt", "sound.wav", "backup.mid.bak", "upper/notes.TXT"):
        (d / name).write_bytes(b"RIFF....WAVEfmt " if name.endswith("wav") else b"hello")
    write(make_score(melody(8)), d / ".ipynb_checkpoints" / "good1-checkpoint.mid")
    return d


def test_load_folder_keeps_good_and_explains_every_skip(messy_folder, tmp_path):
    corpus = load_corpus(messy_folder, max_duration_s=20.0)
    assert isinstance(corpus, Corpus) and corpus.root == messy_folder.resolve()
    kept = ["Good4.MiDi", "good1.mid", "good3.midi", "upper/GOOD2.MID", "x.mid/inside.mid"]
    assert [p.rel_path for p in corpus.pieces] == kept
    assert all(p.path.is_absolute() and p.path.is_file() for p in corpus.pieces)
    assert corpus.pieces[1].title == "good1" and corpus.pieces[1].composer is None and corpus.pieces[1].n_parts == 1

    reasons = {r["path"]: r.get("reason") for r in corpus.report if r["status"] == "skipped"}
    assert reasons.pop("x.mid").startswith("not a file")
    assert reasons.pop("corrupt.mid").startswith("unreadable: ")
    assert reasons.pop("truncated.mid").startswith("unreadable: ")
    assert reasons.pop("text.mid").startswith("unreadable: ")
    assert reasons.pop("empty.mid") == "empty"
    assert reasons.pop("nonotes.mid") == "no notes"
    assert reasons.pop("drums.mid") == "drums only"
    assert reasons.pop("short.mid") == "too few notes (3 < 8)"
    assert reasons.pop("long.mid").startswith("too long")
    assert reasons.pop("zz_copy.mid") == "duplicate of good1.mid"
    assert reasons.pop("zz_hires.mid") == "duplicate of good1.mid"
    assert reasons == {}
    paths = [r["path"] for r in corpus.report]
    assert paths == sorted(paths) and len(paths) == len(kept) + 11
    assert not any(p.endswith((".txt", ".TXT", ".wav", ".bak")) or "checkpoint" in p for p in paths)
    assert all("reason" not in r for r in corpus.report if r["status"] == "kept")

    out = corpus.write_report(tmp_path / "reports" / "scan.json")
    data = json.loads(out.read_text())
    assert data["kept"] == 5 and data["skipped"] == 11 and data["files"] == corpus.report
    assert data["by_reason"] == {"unreadable": 3, "duplicate": 2, "not a file": 1, "empty": 1, "no notes": 1,
                                 "drums only": 1, "too few notes": 1, "too long": 1}
    assert data["by_reason"] == corpus.summary()["by_reason"] and data["root"] == str(corpus.root)
    json.dumps([p.to_dict() for p in corpus.pieces])  # JSON-able
    assert "path" not in corpus.pieces[0].to_dict() and corpus.pieces[0].to_dict()["rel_path"] == "Good4.MiDi"


def test_max_files_keeps_the_first_in_sorted_order(messy_folder):
    corpus = load_corpus(messy_folder, max_files=2)
    assert [p.rel_path for p in corpus.pieces] == ["Good4.MiDi", "good1.mid"]


def test_unusable_folders_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_corpus(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.mid").write_bytes(b"")
    (tmp_path / "bad" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"no usable MIDI.*1 \.mid/\.midi path.*1 other.*empty"):
        load_corpus(tmp_path / "bad")


# ---------------------------------------------------------------------------------------------------------------------
# Metadata of known datasets.


def test_giantmidi_file_names(tmp_path):
    write(make_score(melody(10)), tmp_path / "Bach, Johann Sebastian, Prelude in C major, BWV 846, XxXxXxXx.mid")
    write(make_score(melody(11)), tmp_path / "Chopin, Frédéric, Nocturne in E-flat major, Op. 9, No. 2, 9E6b3swbnWg.mid")
    write(make_score(melody(12)), tmp_path / "my song, take 2.mid")
    pieces = {p.rel_path: p for p in load_corpus(tmp_path).pieces}
    bach = pieces["Bach, Johann Sebastian, Prelude in C major, BWV 846, XxXxXxXx.mid"]
    assert (bach.composer, bach.title, bach.collection, bach.period) == (
        "Johann Sebastian Bach", "Prelude in C major, BWV 846", "giantmidi", "Baroque")
    chopin = pieces["Chopin, Frédéric, Nocturne in E-flat major, Op. 9, No. 2, 9E6b3swbnWg.mid"]
    assert (chopin.composer, chopin.title, chopin.period) == (
        "Frédéric Chopin", "Nocturne in E-flat major, Op. 9, No. 2", "Romantic")
    plain = pieces["my song, take 2.mid"]
    assert (plain.composer, plain.title, plain.collection, plain.split) == (None, "my song, take 2", None, None)


def test_maestro_csv(tmp_path):
    data = tmp_path / "maestro"
    base = data / "maestro-v3.0.0"  # the csv sits one level down, as in the Kaggle dataset
    rows = [("Frédéric Chopin", "Ballade No. 1 in G Minor, Op. 23", "train", "2018/a.midi"),
            ("Johann Sebastian Bach", "Prelude and Fugue in A Minor, WTC I, BWV 865", "test", "2017/b.midi"),
            ("Franz Schubert / Franz Liszt", "Ständchen", "validation", "2017/c.midi")]
    for i, (_, _, _, name) in enumerate(rows):
        write(make_score(melody(20 + i)), base / name)
    with open(base / "maestro-v3.0.0.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["canonical_composer", "canonical_title", "split", "year", "midi_filename", "audio_filename",
                    "duration"])
        for composer, title, split, name in rows:
            w.writerow([composer, title, split, name[:4], name, name.replace(".midi", ".wav"), 8.0])
    pieces = load_corpus(data).pieces
    got = [(p.rel_path, p.composer, p.title, p.split, p.collection, p.period) for p in pieces]
    assert got == [
        ("maestro-v3.0.0/2017/b.midi", "Johann Sebastian Bach", rows[1][1], "test", "maestro", "Baroque"),
        ("maestro-v3.0.0/2017/c.midi", "Franz Schubert / Franz Liszt", "Ständchen", "validation", "maestro", "Romantic"),
        ("maestro-v3.0.0/2018/a.midi", "Frédéric Chopin", rows[0][1], "train", "maestro", "Romantic"),
    ]


# ---------------------------------------------------------------------------------------------------------------------
# Statistics and the cache location.


def test_piece_stats_of_a_known_scale(tmp_path):
    path = write(make_score(SCALE, velocity=90), tmp_path / "scale.mid")
    for source in (path, str(path), symusic.Score(str(path)), make_score(SCALE, velocity=90).to("quarter")):
        s = piece_stats(source)
        assert s["n_notes"] == 8 and s["duration_s"] == pytest.approx(4.0)
        assert (s["n_tracks"], s["programs"], s["is_drum"]) == (1, [0], False)
        np.testing.assert_array_equal(s["pitches"], SCALE)
        np.testing.assert_array_equal(s["velocities"], [90] * 8)
        np.testing.assert_allclose(s["durations_beats"], 1.0)
        assert s["tempos"] == [pytest.approx(120.0)] and s["time_signatures"] == ["4/4"]


def test_corpus_stats(tmp_path):
    write(make_score(SCALE), tmp_path / "a.mid")
    write(make_score(melody(30, 12), beats=0.5, program=40, qpm=60.0), tmp_path / "b.mid")
    corpus = load_corpus(tmp_path)
    s = corpus_stats(corpus)
    assert (s["n_pieces"], s["n_notes"]) == (2, 20)
    assert s["total_duration_s"] == pytest.approx(4.0 + 6.0)  # 12 eighth notes at 60 qpm: 6 s
    np.testing.assert_array_equal(s["notes_per_piece"], [8, 12])
    assert len(s["pitches"]) == len(s["velocities"]) == len(s["durations_beats"]) == 20
    np.testing.assert_array_equal(s["pitches"][:8], SCALE)
    assert sorted(s["tempos"]) == [pytest.approx(60.0), pytest.approx(120.0)]
    assert s["time_signatures"] == {"4/4": 2} and s["programs"] == {0: 1, 40: 1}
    assert corpus.summary()["labels"]["composer"] == {"unknown": 2}
    assert corpus_stats(corpus, max_pieces=1)["n_notes"] == 8


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TCHAIKOVSKY_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("TCHAIKOVSKY_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "tchaikovsky"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "tchaikovsky"


def test_piece_is_frozen():
    piece = Piece(path=Path("/x/a.mid"), rel_path="a.mid", composer="A")
    with pytest.raises(AttributeError):
        piece.composer = "B"  # type: ignore[misc]
    assert piece.to_dict() == {"rel_path": "a.mid", "composer": "A", "title": None, "collection": None,
                               "period": None, "n_parts": None, "split": None, "instrumentation": None, "work": None}
