"""Scores written in code: chords, scales, motifs."""

from collections import defaultdict

import pytest
import symusic as sm

from tchaikovsky.generate import scores

TPQ = scores.TPQ


def chords_at(score: sm.Score) -> dict[int, list[int]]:
    """onset tick -> sorted pitches sounding from it (all tracks)."""
    out = defaultdict(list)
    for track in score.tracks:
        for n in track.notes:
            out[n.time].append(n.pitch)
    return {t: sorted(p) for t, p in sorted(out.items())}


def beats_and_pitches(score: sm.Score) -> list[tuple[float, int]]:
    """Sorted (onset in quarter notes, pitch) pairs, whatever the score's ticks per quarter."""
    tpq = score.ticks_per_quarter
    return sorted((n.time / tpq, n.pitch) for t in score.tracks for n in t.notes)


def test_chord_progression_pitch_classes_onsets_and_tempo():
    score = scores.chord_progression("C G Am F", tempo=120, beats_per_chord=2)
    assert score.ticks_per_quarter == TPQ and len(score.tracks) == 1
    assert [t.qpm for t in score.tempos] == [120]
    assert [(t.numerator, t.denominator) for t in score.time_signatures] == [(4, 4)]
    chords = chords_at(score)
    assert list(chords) == [0, 2 * TPQ, 4 * TPQ, 6 * TPQ]
    assert [{p % 12 for p in c} for c in chords.values()] == [{0, 4, 7}, {7, 11, 2}, {9, 0, 4}, {5, 9, 0}]
    assert {n.duration for n in score.tracks[0].notes} == {2 * TPQ}
    # in seconds: one chord every 2 beats at 120 bpm = every second
    secs = sorted({round(n.time, 6) for n in score.to("second").tracks[0].notes})
    assert secs == pytest.approx([0.0, 1.0, 2.0, 3.0])
    for c in chords.values():
        bass, *upper = c
        assert bass % 12 == c[0] % 12 and bass < min(upper)  # root in the bass, below the chord
        assert max(upper) - min(upper) < 12  # close position
        assert 55 <= min(upper) and max(upper) <= 79  # around octave 4
        assert 48 <= bass <= 59  # an octave lower


def test_chord_progression_defaults_and_octave():
    score = scores.chord_progression("Dm7 G7 Cmaj7")  # 100 bpm, 4 beats per chord
    assert list(chords_at(score)) == [0, 4 * TPQ, 8 * TPQ]
    assert sorted({round(n.time, 3) for n in score.to("second").tracks[0].notes}) == pytest.approx([0, 2.4, 4.8])
    low = scores.chord_progression("C", octave=2, program=33, velocity=64)
    assert 30 <= chords_at(low)[0][1] and max(chords_at(low)[0]) <= 54 and low.tracks[0].program == 33
    assert {n.velocity for n in low.tracks[0].notes} == {64}


@pytest.mark.parametrize("symbol, pcs", [
    ("Dm7", {2, 5, 9, 0}), ("G7", {7, 11, 2, 5}), ("Cmaj7", {0, 4, 7, 11}), ("F#m", {6, 9, 1}),
    ("E7sus4", {4, 9, 11, 2}), ("Cdim", {0, 3, 6}), ("Caug", {0, 4, 8}), ("C5", {0, 7}), ("Bbdim7", {10, 1, 4, 7}),
    ("D9", {2, 6, 9, 0, 4}), ("Csus2", {0, 2, 7}), ("Csus4", {0, 5, 7}), ("A6", {9, 1, 4, 6}), ("Ebmin", {3, 6, 10}),
    ("Abmaj", {8, 0, 3}), ("Bm7b5", {11, 2, 5, 9}),
])
def test_chord_qualities(symbol, pcs):
    (chord,) = chords_at(scores.chord_progression(symbol)).values()
    assert {p % 12 for p in chord} == pcs


@pytest.mark.parametrize("symbol, bass_pc, pcs", [
    ("Bb/D", 2, {10, 2, 5}), ("C/G", 7, {0, 4, 7}), ("F#m/C#", 1, {6, 9, 1}), ("Am/G", 7, {9, 0, 4, 7}),
    ("G7/F", 5, {7, 11, 2, 5}),
])
def test_slash_chord_puts_the_named_bass_lowest(symbol, bass_pc, pcs):
    (chord,) = chords_at(scores.chord_progression(symbol)).values()
    assert chord[0] % 12 == bass_pc and chord[0] < chord[1]
    assert {p % 12 for p in chord} == pcs


@pytest.mark.parametrize("text, bad", [("C G H F", "H"), ("Cmaj13", "Cmaj13"), ("C/X", "C/X"), ("c", "c"),
                                       ("Am F#m7#11", "F#m7#11")])
def test_unknown_chord_symbols_raise_with_the_symbol_and_accepted_forms(text, bad):
    with pytest.raises(ValueError, match=f"unknown chord symbol '{bad}'") as err:
        scores.chord_progression(text)
    assert "sus4" in str(err.value) and "/bass" in str(err.value)


def test_chord_progression_rejects_bad_arguments():
    with pytest.raises(ValueError, match="no chords"):
        scores.chord_progression("  | ")
    with pytest.raises(ValueError, match="beats_per_chord"):
        scores.chord_progression("C", beats_per_chord=0)
    with pytest.raises(ValueError, match="time_signature"):
        scores.chord_progression("C", time_signature=(4, 3))


def test_chord_separators_and_time_signature():
    score = scores.chord_progression("C | G, Am |F", time_signature=(3, 4), beats_per_chord=3)
    assert len(chords_at(score)) == 4 and [(t.numerator, t.denominator) for t in score.time_signatures] == [(3, 4)]


def test_scale_a_minor():
    score = scores.scale("A minor")
    pitches = [n.pitch for n in score.tracks[0].notes]
    assert pitches[0] == 69 and pitches[-1] == 81 and len(pitches) == 8
    assert {p % 12 for p in pitches} == {9, 11, 0, 2, 4, 5, 7}
    assert [n.time for n in score.tracks[0].notes] == [i * TPQ // 2 for i in range(8)]  # eighth notes


@pytest.mark.parametrize("name, pcs", [
    ("C major", {0, 2, 4, 5, 7, 9, 11}), ("A harmonic minor", {9, 11, 0, 2, 4, 5, 8}),
    ("D dorian", {2, 4, 5, 7, 9, 11, 0}), ("E phrygian", {4, 5, 7, 9, 11, 0, 2}), ("F lydian", {5, 7, 9, 11, 0, 2, 4}),
    ("G mixolydian", {7, 9, 11, 0, 2, 4, 5}), ("B locrian", {11, 0, 2, 4, 5, 7, 9}),
    ("C ionian", {0, 2, 4, 5, 7, 9, 11}),
    ("A aeolian", {9, 11, 0, 2, 4, 5, 7}), ("C pentatonic major", {0, 2, 4, 7, 9}),
    ("A minor pentatonic", {9, 0, 2, 4, 7}), ("E blues", {4, 7, 9, 10, 11, 2}), ("C chromatic", set(range(12))),
    ("F# natural minor", {6, 8, 9, 11, 1, 2, 4}),
])
def test_scale_kinds(name, pcs):
    assert {n.pitch % 12 for n in scores.scale(name).tracks[0].notes} == pcs


def test_scale_directions_and_octaves():
    up = [n.pitch for n in scores.scale("C3 major", octaves=2).tracks[0].notes]
    assert up[0] == 48 and up[-1] == 72 and len(up) == 15
    down = [n.pitch for n in scores.scale("C3 major", octaves=2, direction="down").tracks[0].notes]
    assert down == up[::-1]
    melodic = [n.pitch for n in scores.scale("A melodic minor", direction="updown", note_beats=1).tracks[0].notes]
    assert melodic[:8] == [69, 71, 72, 74, 76, 78, 80, 81]  # raised 6th and 7th going up
    assert melodic[7:] == [81, 79, 77, 76, 74, 72, 71, 69]  # natural minor coming down
    with pytest.raises(ValueError, match="unknown scale"):
        scores.scale("C bebop")
    with pytest.raises(ValueError, match="direction"):
        scores.scale("C major", direction="sideways")


def test_motif_with_names_numbers_and_rests():
    score = scores.motif(["C4", "F#3", "Bb2", None, 62], [1, 0.5, 0.5, 1, 2], tempo=90, repeat=2, program=40)
    notes = score.tracks[0].notes
    assert [n.pitch for n in notes] == [60, 54, 46, 62] * 2
    assert [n.time for n in notes] == [0, 480, 720, 1440, 2400, 2880, 3120, 3840]
    assert [n.duration for n in notes][:4] == [480, 240, 240, 960]
    assert score.tracks[0].program == 40 and score.tempos[0].qpm == pytest.approx(90, abs=1e-3)
    assert scores.note_number("C-1") == 0 and scores.note_number("G9") == 127 and scores.note_number("Cb4") == 59
    with pytest.raises(ValueError, match="2 pitches but 1 durations"):
        scores.motif(["C4", "D4"], [1])
    with pytest.raises(ValueError, match="'H4' is not a pitch"):
        scores.motif(["C4", "H4"], 1)
    with pytest.raises(ValueError, match="outside"):
        scores.motif(["C10"], 1)
