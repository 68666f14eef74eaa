"""Tests for tchaikovsky.data.labels on real MIDI files: instrumentation rules, work keys, labels.csv."""

import json
from pathlib import Path

import pytest
import symusic

from tchaikovsky.data.corpus import load_corpus
from tchaikovsky.data.labels import INSTRUMENTATIONS, instrumentation_of, music21_work, track_family


def multi_track(parts, *, chords=False, tpq=480) -> symusic.Score:
    """A score with one track per (name, program, lowest pitch) in ``parts``, each playing 16 quarter notes
    (two-note chords with ``chords``)."""
    score = symusic.Score(tpq)
    for name, program, low in parts:
        track = symusic.Track(name=name, program=program)
        for i in range(16):
            for p in ([low + i % 8, low + 4 + i % 8] if chords else [low + i % 8]):
                track.notes.append(symusic.Note(i * tpq, tpq, p, 80))
        score.tracks.append(track)
    score.tempos.append(symusic.Tempo(0, 120.0))
    return score


def write(score: symusic.Score, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    score.dump_midi(str(path))
    return path


SATB = [("Soprano", 0, 67), ("Alto", 0, 60), ("Tenor", 0, 55), ("Bass", 0, 43)]
QUARTET = [("Violin I", 48, 72), ("Violin II", 48, 67), ("Viola", 48, 60), ("Violoncello", 48, 48)]


@pytest.mark.parametrize("parts, chords, expected", [
    (SATB, False, "voices"),
    (SATB + [("Horn 2", 0, 60)], False, "voices"),  # a chorale with a doubling horn: 4 of 5 tracks are voices
    (QUARTET, False, "strings"),
    ([("Track 1", 41, 60), ("Track 2", 42, 48)], False, "strings"),  # no telling names: programs decide
    ([("Piano", 0, 60)], True, "keyboard"),
    ([("", 0, 60), ("", 0, 40)], False, "keyboard"),  # unnamed program-0 tracks sound as pianos
    ([("Flute", 0, 72)], False, "solo melody"),  # one track, never two notes at once
    ([("Soprano", 0, 67), ("Piano", 0, 48)], False, "ensemble"),  # a song: voice and piano
    ([("Flute", 73, 72), ("Oboe", 68, 67), ("Horn", 60, 55), ("Bassoon", 70, 43)], False, "ensemble"),
])
def test_instrumentation_rules(tmp_path, parts, chords, expected):
    score = symusic.Score(str(write(multi_track(parts, chords=chords), tmp_path / "x.mid")))  # via a real file
    assert instrumentation_of(score) == expected
    assert expected in INSTRUMENTATIONS


def test_track_family_prefers_names_over_programs():
    assert track_family("Bass", 0) == "voices"
    assert track_family("Double Bass", 0) == "strings"
    assert track_family("Contrabass", 32) == "strings"
    assert track_family(None, 53) == "voices"
    assert track_family("Synth lead", 81) == "other"
    assert instrumentation_of(symusic.Score(480)) is None


def test_music21_work_groups_movements():
    assert music21_work("beethoven/opus18no1/movement1.mxl") == "beethoven/opus18no1"
    assert music21_work("bach/bwv1.6.mxl") == music21_work("bach/bwv1.4.mxl") == "bach/bwv1"
    assert music21_work("bach/bwv10.7.mxl") == music21_work("bach/bwv10.3-sc.mxl") == "bach/bwv10"
    assert music21_work("palestrina/Credo_06_c.krn") == music21_work("palestrina/Agnus_II_06.krn") == \
        "palestrina/mass 06"
    assert music21_work("monteverdi/madrigal.3.1.mxl") != music21_work("monteverdi/madrigal.3.2.mxl")


@pytest.fixture
def folder(tmp_path) -> Path:
    """A folder with a choir piece, a quartet piece and a piano piece (none of them with known composers)."""
    write(multi_track(SATB), tmp_path / "choir.mid")
    write(multi_track(QUARTET), tmp_path / "sub" / "quartet.mid")
    write(multi_track([("Piano", 0, 60)], chords=True), tmp_path / "piano.MID")
    return tmp_path


def test_guesses_and_label_counts_without_labels_csv(folder):
    corpus = load_corpus(folder)
    got = {p.rel_path: (p.composer, p.period, p.instrumentation, p.work) for p in corpus.pieces}
    assert got == {"choir.mid": (None, None, "voices", "choir"), "piano.MID": (None, None, "keyboard", "piano"),
                   "sub/quartet.mid": (None, None, "strings", "sub/quartet")}
    labels = corpus.summary()["labels"]
    assert labels == {"composer": {"unknown": 3}, "period": {"unknown": 3},
                      "instrumentation": {"voices": 1, "keyboard": 1, "strings": 1}}
    report = json.loads(corpus.write_report(folder.parent / "data_report.json").read_text())
    assert report["labels"]["instrumentation"]["strings"] == 1


def test_labels_csv_wins_over_guesses(folder):
    (folder / "labels.csv").write_text(
        "path,composer,period,instrumentation,work\n"
        "sub/quartet.mid,Joseph Haydn,,,op. 76\n"  # empty cells: period guessed from the composer, rest kept
        "piano.MID,Me,Modern,Strings,\n"  # class names are matched ignoring case
        "./choir.mid,,,unknown,\n")  # "unknown" forces unknown
    pieces = {p.rel_path: p for p in load_corpus(folder).pieces}
    q, p, c = pieces["sub/quartet.mid"], pieces["piano.MID"], pieces["choir.mid"]
    assert (q.composer, q.period, q.instrumentation, q.work) == ("Joseph Haydn", "Classical", "strings", "op. 76")
    assert (p.composer, p.period, p.instrumentation, p.work) == ("Me", "Modern", "strings", "piano")
    assert (c.composer, c.instrumentation) == (None, None)


@pytest.mark.parametrize("text, message", [
    ("path,composer,genre\nchoir.mid,X,pop\n", "unknown column(s) ['genre']"),
    ("file,composer\nchoir.mid,X\n", "no 'path' column"),
    ("path,composer\nnothere.mid,X\n", "'nothere.mid' is not a .mid/.midi file"),
    ("path,composer\nchoir.mid,X,extra\n", "line 2: more cells than the header"),
    ("path,composer\nchoir.mid,X\nchoir.mid,Y\n", "line 3: 'choir.mid' is labelled twice"),
    ("path,composer\n,X\n", "line 2: empty path"),
])
def test_bad_labels_csv_is_a_clear_error(folder, text, message):
    (folder / "labels.csv").write_text(text)
    with pytest.raises(ValueError, match="labels.csv") as e:
        load_corpus(folder)
    assert message in str(e.value)


def test_old_export_metadata_without_instrumentation_still_loads(tmp_path):
    """An embedded export made before instrumentation was recorded: the MIDI decides, lazily."""
    root = tmp_path / "music21"
    write(multi_track(SATB), root / "bach" / "bwv1.6.mid")
    meta = {"format": "tchaikovsky-music21-export/1", "music21": "9", "failed": {}, "pieces": {"bach/bwv1.6.mid": {
        "source": "bach/bwv1.6.mxl", "composer": "Johann Sebastian Bach", "title": "Wie schön", "collection": "bach",
        "period": "Baroque", "n_parts": 4}}}
    (root / "metadata.json").write_text(json.dumps(meta))
    (piece,) = load_corpus(root).pieces
    assert (piece.composer, piece.period, piece.instrumentation, piece.work) == (
        "Johann Sebastian Bach", "Baroque", "voices", "bach/bwv1")
