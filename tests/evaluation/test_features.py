"""Per-piece music measures on pieces built note by note with symusic, with hand-computed values."""

import math

import pytest
from symusic import Note, Score, Tempo, TimeSignature, Track

from tchaikovsky.evaluation import features as M

TPQ = 480


def make_score(notes, *, ts=(4, 4), qpm=120.0, drums=()) -> Score:
    """notes: (onset in beats, length in beats, pitch) triples, one piano track; ``drums`` likewise, a drum track."""
    score = Score(TPQ)
    for spec, is_drum in ((notes, False), (drums, True)):
        if not spec:
            continue
        track = Track("drums" if is_drum else "piano", 0, is_drum)
        for onset, length, pitch in spec:
            track.notes.append(Note(int(onset * TPQ), int(length * TPQ), pitch, 80))
        score.tracks.append(track)
    score.tempos.append(Tempo(0, qpm))
    score.time_signatures.append(TimeSignature(0, *ts))
    return score


C_MAJOR = [60, 62, 64, 65, 67, 69, 71, 72]


def test_c_major_scale():
    m = M.piece_metrics(make_score([(i, 1, p) for i, p in enumerate(C_MAJOR)]))
    assert m["scale_consistency"] == 1.0
    assert m["n_pitch_classes"] == 7
    assert m["pitch_range"] == 12
    assert m["polyphony"] == 1.0 and m["empty_beat_rate"] == 0.0
    assert m["note_density"] == pytest.approx(2.0)  # 8 notes in 4 s at 120 qpm
    assert m["mean_ioi"] == pytest.approx(0.5)
    assert m["duration_histogram"] == [0, 0, 0, 1, 0, 0, 0]  # all quarter notes
    assert m["n_notes"] == 8 and m["duration_s"] == pytest.approx(4.0)


def test_repeated_note_and_chromatic_scale_entropy():
    one = M.piece_metrics(make_score([(i, 1, 60) for i in range(8)]))
    assert one["pitch_class_entropy"] == 0.0 and one["n_pitch_classes"] == 1 and one["pitch_range"] == 0
    chromatic = make_score([(i, 1, 60 + i) for i in range(12)])
    assert M.pitch_class_entropy(chromatic) == pytest.approx(math.log2(12))
    assert M.scale_consistency(chromatic) == pytest.approx(7 / 12)


def test_block_chords_polyphony_and_drums_ignored():
    chords = [(4 * bar, 4, p) for bar in range(3) for p in (60, 64, 67)]
    hats = [(0.5 * k, 0.25, 42) for k in range(24)]
    m = M.piece_metrics(make_score(chords, drums=hats))
    assert m["polyphony"] == 3.0
    assert m["n_notes"] == 9 and m["pitch_range"] == 7  # the drum track counts for nothing
    # a held note under a melody: 2 pitches for 2 beats, 1 pitch for 2 more -> (2*2 + 1*2) / 4
    assert M.polyphony(make_score([(0, 4, 48), (0, 1, 60), (1, 1, 62)])) == pytest.approx(1.5)
    # a repeated pitch overlapping itself is one pitch sounding (piano-roll definition)
    assert M.polyphony(make_score([(0, 2, 60), (1, 2, 60)])) == 1.0


def test_empty_beat_rate_with_a_bar_of_rest():
    notes = [(b, 1, 60) for b in range(4)] + [(b, 1, 62) for b in range(8, 12)]  # bar 2 (beats 4-7) silent
    assert M.empty_beat_rate(make_score(notes)) == pytest.approx(4 / 12)
    # a note ending exactly on a beat does not fill the next one; a long note fills every beat it spans
    assert M.empty_beat_rate(make_score([(0, 1, 60), (2, 1, 60)])) == pytest.approx(1 / 3)
    assert M.empty_beat_rate(make_score([(0, 3, 60)])) == 0.0


def test_empty_beat_rate_where_muspy_counts_one_beat_more():
    """Pinned difference from ``muspy.empty_beat_rate`` (values hand-computed both ways): MusPy counts
    ``last offset // beat + 1`` beats and lets a note fill every beat from its onset's to its offset's inclusive,
    so a note ending exactly on a beat also "fills" the next one. Here a beat is filled only by sound in it."""
    # quarter notes on beats 0 and 2: beat 1 is silent; MusPy: 4 beats, all filled -> 0
    assert M.empty_beat_rate(make_score([(0, 1, 60), (2, 1, 60)])) == pytest.approx(1 / 3)
    # a piece ending exactly on a beat has no extra beat: beats 0-3, beat 1 silent; MusPy: 0 of 5
    assert M.empty_beat_rate(make_score([(0, 1, 60), (2, 2, 60)])) == pytest.approx(1 / 4)
    # a note ending mid-beat fills only that beat: beat 2 silent of 4; MusPy: 1 of 5
    assert M.empty_beat_rate(make_score([(0, 1.5, 60), (3, 1, 60)])) == pytest.approx(1 / 4)
    # a zero-length note fills the beat of its onset and ends the piece there: beats 1, 2 silent of 4; MusPy: 1/4
    assert M.empty_beat_rate(make_score([(0, 1, 60), (3, 0, 60)])) == pytest.approx(2 / 4)


def test_groove_consistency_bars_end_at_the_quantised_last_offset():
    """Pinned difference from ``muspy.groove_consistency``: MusPy counts ``last offset // bar + 1`` bars, one
    empty bar more when the piece ends exactly on a bar line. Offsets are rounded to the onset grid (24 steps per
    quarter note, as MusPy's ``adjust_resolution``), so an offset less than half a step past a bar line opens no
    bar, and one more than half a step past it does."""
    quarters = [(4 * bar + t, 1, 60) for bar in range(4) for t in range(4)]  # the last note ends on beat 16
    assert M.groove_consistency(make_score(quarters)) == 1.0  # MusPy: 1 - 4 / (96 * 4), against a silent 5th bar
    step = TPQ // 24
    hair = quarters[:-1] + [(15, 1 + (step // 4) / TPQ, 60)]  # a quarter step past the bar line: rounds onto it
    assert M.groove_consistency(make_score(hair)) == 1.0
    over = quarters[:-1] + [(15, 1 + (3 * step // 4) / TPQ, 60)]  # three quarters of a step: a 5th, empty bar
    assert M.groove_consistency(make_score(over)) == pytest.approx(1 - 4 / (96 * 4))


def test_groove_consistency():
    rhythm = [0, 1, 1.5, 2, 3]
    same = [(4 * bar + t, 0.5, 60 + bar) for bar in range(4) for t in rhythm]
    assert M.groove_consistency(make_score(same)) == 1.0
    # bar 2 adds one onset: 2 differing cells (bar1->bar2, bar2->bar3) over 3 transitions of 96 steps
    changed = same + [(4 + 2.5, 0.5, 70)]
    assert M.groove_consistency(make_score(changed)) == pytest.approx(1 - 2 / (3 * 96))
    # 3/4: bars of 72 steps; identical 3/4 bars are consistent too, one bar alone is undefined
    waltz = [(3 * bar + t, 1, 55) for bar in range(3) for t in (0, 1, 2)]
    assert M.groove_consistency(make_score(waltz, ts=(3, 4))) == 1.0
    assert math.isnan(M.groove_consistency(make_score([(0, 1, 60), (2, 1, 60)])))
    assert M.measure_resolution((6, 8)) == 72


def test_empty_piece_is_nan_and_paths_work(tmp_path):
    for score in (Score(TPQ), make_score([], drums=[(0, 1, 36)])):
        m = M.piece_metrics(score)
        assert m["n_notes"] == 0 and m["duration_s"] == 0.0
        assert all(math.isnan(m[f]) for f in M.SCALAR_FEATURES)
        assert all(math.isnan(v) for v in m["duration_histogram"])
    path = tmp_path / "scale.mid"
    make_score([(i, 1, p) for i, p in enumerate(C_MAJOR)]).dump_midi(str(path))
    assert M.piece_metrics(path)["n_pitch_classes"] == 7
    assert M.piece_metrics(str(path))["scale_consistency"] == 1.0


def test_seconds_follow_tempo_and_durations_bin():
    slow = make_score([(i, 0.5, 60) for i in range(4)] + [(4, 2, 62), (6, 0.25, 64)], qpm=60.0)
    assert M.mean_ioi(slow) == pytest.approx(1.2)  # onsets at 0, 1, 2, 3, 4, 6 s
    assert M.note_density(slow) == pytest.approx(6 / 6.25)
    assert M.duration_histogram(slow) == pytest.approx([0, 1 / 6, 4 / 6, 0, 1 / 6, 0, 0])
