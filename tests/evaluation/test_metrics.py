"""Per-piece music measures, set comparison and originality, on pieces built note by note with symusic."""

import math

import numpy as np
import pytest
from symusic import Note, Score, Tempo, TimeSignature, Track

from tchaikovsky.evaluation import metrics as M

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


def test_overlapped_area_and_kl():
    rng = np.random.default_rng(0)
    a = rng.normal(size=200)
    assert M.overlapped_area(a, a) == pytest.approx(1.0)
    assert M.kl_divergence(a, a) == pytest.approx(0.0, abs=1e-12)
    far = a + 100
    assert M.overlapped_area(a, far) == 0.0
    assert M.kl_divergence(a, far) > 5
    shifted = M.overlapped_area(a, a + 1)
    assert 0.2 < shifted < 0.9
    assert M.overlapped_area([1, 2, np.nan], [1, 2]) == pytest.approx(1.0)  # NaN dropped
    assert math.isnan(M.overlapped_area([], [1.0]))


def test_intra_inter_and_compare_sets():
    rng = np.random.default_rng(0)
    ref = [{"x": v, "h": [v, 1 - v]} for v in rng.uniform(0, 1, 40)]
    alike = [{"x": v, "h": [v, 1 - v]} for v in rng.uniform(0, 1, 20)]
    unlike = [{"x": v, "h": [v, 1 - v]} for v in rng.uniform(5, 6, 20)]
    empty = [{"x": math.nan, "h": [math.nan, math.nan]}] * 3
    r = M.intra_inter(ref, alike, "x")
    assert len(r["intra"]) == 40 * 39 // 2 and len(r["inter"]) == 20 * 40
    assert M.intra_inter(ref, alike, "x")["oa"] > 0.7 > M.intra_inter(ref, unlike, "x")["oa"]
    assert M.intra_inter(ref, empty, "x")["oa"] == 0.0
    assert math.isnan(M.intra_inter(ref[:1], alike, "x")["oa"])
    out = M.compare_sets(alike, ref, features=("x", "h"))
    assert set(out["x"]) >= {"oa", "kl", "gen_mean", "ref_mean"}
    assert out["x"]["gen_mean"] == pytest.approx(np.mean([p["x"] for p in alike]))
    assert out["h"]["ref_mean"] == pytest.approx(np.mean([p["h"] for p in ref], axis=0))
    assert out["x"]["n_gen"] == 20 and out["x"]["n_ref"] == 40
    assert M.mean_oa(out) > M.mean_oa(M.compare_sets(unlike, ref, features=("x", "h")))


def _brute_longest(sample, pieces):
    best = 0
    for piece in pieces:
        for i in range(len(sample)):
            for j in range(len(piece)):
                k = 0
                while i + k < len(sample) and j + k < len(piece) and sample[i + k] == piece[j + k]:
                    k += 1
                best = max(best, k)
    return best


def test_longest_common_run_finds_planted_runs():
    rng = np.random.default_rng(1)
    train = [rng.integers(0, 40, size=int(rng.integers(30, 200))) for _ in range(25)]
    planted = np.r_[rng.integers(100, 140, 7), train[4][11:58], rng.integers(100, 140, 5)]  # 47 tokens copied
    assert M.longest_common_run(planted, train) == 47
    index = M.NgramIndex(train)
    samples = [rng.integers(0, 40, size=50) for _ in range(4)] + [planted, train[7], np.zeros(0, int), [3]]
    runs = index.longest_common_runs(samples)
    assert runs == [_brute_longest(list(s), [list(p) for p in train]) for s in samples]
    # a run across two training pieces is not one run; ids never seen in training match nothing
    across = np.r_[train[0][-5:], train[1][:5]]
    assert index.longest_common_runs([across])[0] == _brute_longest(list(across), [list(p) for p in train])
    assert M.longest_common_run([999, 1000], train) == 0


def test_ngram_overlap_and_copy_flags():
    rng = np.random.default_rng(2)
    train = rng.integers(0, 1000, size=5000)
    copy = train[100:300]
    fresh = rng.integers(1000, 2000, size=200)
    half = np.r_[train[1000:1030], fresh[:30]]
    assert M.ngram_overlap(copy, train, n=8) == 1.0
    assert M.ngram_overlap(fresh, train, n=8) == 0.0
    assert M.ngram_overlap(half, train, n=8) == pytest.approx(23 / 53)
    assert math.isnan(M.ngram_overlap(copy[:5], train, n=8))
    flags = M.flag_copies([copy, fresh, half, train[:10]], train)
    assert [f["copied"] for f in flags] == [True, False, True, False]  # 10 tokens: under min_run
    assert [f["longest_run"] for f in flags] == [200, 0, 30, 10]
