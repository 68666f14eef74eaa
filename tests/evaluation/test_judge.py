"""Tests for tchaikovsky.evaluation.judge on real MIDI files whose answers are known by construction."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import symusic

from tchaikovsky.data.corpus import Piece
from tchaikovsky.evaluation import features as F
from tchaikovsky.evaluation.intervals import Rate
from tchaikovsky.evaluation.judge import (FEATURE_NAMES, Judge, cross_validate, feature_matrix, judge_features,
                                          split_by_work)

MAJOR = [0, 2, 4, 5, 7, 9, 11]


def score_of(voices, *, tpq=480) -> symusic.Score:
    """One track per voice; a voice is a list of (onset_beats, beats, pitch)."""
    score = symusic.Score(tpq)
    for v in voices:
        track = symusic.Track(name="", program=0)
        for on, dur, p in v:
            track.notes.append(symusic.Note(int(on * tpq), max(1, int(dur * tpq)), int(p), 80))
        score.tracks.append(track)
    score.tempos.append(symusic.Tempo(0, 120.0))
    return score


def scale_runs(rng) -> symusic.Score:
    """"Composer" A: eighth-note runs up and down a major scale in a random key."""
    tonic, steps = rng.integers(0, 12), np.cumsum(rng.choice([-1, 1], 48))
    pitches = [60 + tonic + 12 * (s // 7) + MAJOR[s % 7] for s in steps % 14]
    return score_of([[(i / 2, 0.5, p) for i, p in enumerate(pitches)]])


def clusters(rng) -> symusic.Score:
    """"Composer" B: chromatic clusters of 3-5 adjacent semitones, one every half note, at random heights."""
    return score_of([[(2 * i, 2, low + k) for i, low in enumerate(rng.integers(40, 80, 12))
                      for k in range(rng.integers(3, 6))]])


def chorale(rng) -> symusic.Score:
    """Voices: four close parts in long notes within their ranges, moving by step."""
    return score_of([[(2 * i, 2, base + int(s)) for i, s in enumerate(np.cumsum(rng.choice([-2, -1, 0, 1, 2], 16)))]
                     for base in (67, 60, 55, 48)])


def piano(rng) -> symusic.Score:
    """Keyboard: a fast right-hand line over wide left-hand broken chords, spanning five octaves."""
    right = [(i / 4, 0.25, 72 + int(p)) for i, p in enumerate(rng.integers(0, 24, 64))]
    left = [(i / 2, 0.5, 28 + int(p)) for i, p in enumerate(rng.choice([0, 7, 12, 16, 19], 32))]
    return score_of([right, left])


def make_pieces(tmp_path: Path, makers: dict, n: int, label: str, seed: int = 0) -> list[Piece]:
    rng = np.random.default_rng(seed)
    pieces = []
    for name, make in makers.items():
        for i in range(n):
            path = tmp_path / f"{name}_{i:02d}.mid"
            make(rng).dump_midi(str(path))
            pieces.append(Piece(path=path, rel_path=path.name, work=f"{name}-work{i // 2}", **{label: name}))
    return pieces


def test_features_are_transposition_invariant_and_see_the_key(tmp_path):
    line = [(i / 2, 0.5, 60 + p) for i, p in enumerate([0, 4, 7, 4, 0, 2, 4, 5, 7, 9, 11, 12, 7, 4, 0] * 2)]
    c = score_of([line])
    d = score_of([[(o, b, p + 2) for o, b, p in line]])
    assert F.estimate_key(c)[:2] == (0, "major") and F.estimate_key(d)[:2] == (2, "major")
    xc, xd = judge_features(c), judge_features(d)
    assert xc.shape == (len(FEATURE_NAMES),)
    hist = dict(zip(FEATURE_NAMES, xc))
    assert hist["pc_hist_0"] > hist["pc_hist_1"] == 0  # tonic present, no C# in C major
    pc = [i for i, n in enumerate(FEATURE_NAMES) if n.startswith(("pc_", "interval_"))]
    np.testing.assert_allclose(xc[pc], xd[pc])  # transposed up a tone: the same tonal features
    assert F.pitch_class_transitions(c).sum() == pytest.approx(1.0)
    assert F.interval_histogram(c)[12 + 4] > 0  # a major third up (C -> E)


@pytest.mark.parametrize("label, makers", [
    ("composer", {"scales": scale_runs, "clusters": clusters}),
    ("instrumentation", {"voices": chorale, "keyboard": piano}),
])
def test_judge_tells_obvious_classes_apart(tmp_path, label, makers):
    pieces = make_pieces(tmp_path, makers, 16, label)
    train, test = split_by_work(pieces, 0.5, seed=1, stratify=label)
    judge = Judge.fit(train, label)
    assert judge.classes == sorted(makers)
    assert judge.accuracy(test) >= 0.95
    m = judge.confusion(test)
    assert m.sum() == len(test) and np.trace(m) >= 0.95 * len(test)
    # controllability on "generated" pieces: asked for the other class, so the judge must disagree
    wrong = [sorted(makers)[1 - judge.classes.index(getattr(p, label))] for p in test]
    assert judge.accuracy(test, labels=wrong) <= 0.05


def test_split_by_work_is_disjoint_deterministic_and_stratified(tmp_path):
    pieces = [Piece(path=Path(f"/x/{c}{i}.mid"), rel_path=f"{c}{i}.mid", composer=c, work=f"{c}-w{i // 3}")
              for c in "ab" for i in range(12)]
    rest, chosen = split_by_work(pieces, 0.25, seed=3, stratify="composer")
    assert not {p.work for p in rest} & {p.work for p in chosen}
    assert len(rest) + len(chosen) == len(pieces) and set(rest).isdisjoint(chosen)
    assert {p.composer for p in chosen} == {p.composer for p in rest} == {"a", "b"}
    assert len(chosen) == 6  # one work of three pieces from each composer: 25% of 12
    assert split_by_work(pieces, 0.25, seed=3, stratify="composer") == (rest, chosen)
    assert split_by_work(pieces, 0.25, seed=4, stratify="composer") != (rest, chosen)
    with pytest.raises(ValueError, match="fraction"):
        split_by_work(pieces, 1.5)


def test_saved_judge_reloads_to_identical_predictions(tmp_path):
    pieces = make_pieces(tmp_path, {"scales": scale_runs, "clusters": clusters}, 6, "composer")
    judge = Judge.fit(pieces, "composer", steps=200)
    path = judge.save(tmp_path / "run")
    assert path.name == "judge_composer.json" and path.with_suffix(".npz").is_file()
    again = Judge.load(path)
    assert again.classes == judge.classes and again.label == "composer"
    np.testing.assert_array_equal(again.predict_proba(pieces), judge.predict_proba(pieces))
    assert again.info["train_counts"] == {"clusters": 6, "scales": 6}
    assert not list((tmp_path / "run").glob(".tmp-*"))


def test_judge_errors_are_clear(tmp_path):
    pieces = make_pieces(tmp_path, {"scales": scale_runs}, 3, "composer")
    with pytest.raises(ValueError, match="at least two values"):
        Judge.fit(pieces, "composer")
    with pytest.raises(ValueError, match="pitched notes"):
        judge_features(symusic.Score(480))
    unknown = [Piece(path=p.path, rel_path=p.rel_path) for p in pieces]  # composer None: left out, not guessed
    judge = Judge.fit(pieces + make_pieces(tmp_path, {"clusters": clusters}, 3, "composer") + unknown, "composer",
                      steps=50)
    assert judge.info["n_train"] == 6
    with pytest.raises(ValueError, match="not among the judge's classes"):
        judge.confusion(pieces, labels=["mozart"] * 3)


def test_confusion_picture(tmp_path):
    from tchaikovsky.evaluation.plots import plot_confusion

    fig = plot_confusion([[3, 1], [0, 4]], ["voices", "keyboard"], title="instrumentation", path=tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000
    assert fig.axes[0].get_title() == "instrumentation (accuracy 88%)"
    assert [t.get_text() for t in fig.axes[0].texts] == ["3", "1", "0", "4"]


def drums_only(path: Path) -> Path:
    """A real MIDI file whose only notes are drums: nothing pitched for the judge to hear."""
    score = symusic.Score(480)
    track = symusic.Track(name="drums", program=0, is_drum=True)
    track.notes.extend([symusic.Note(i * 240, 120, 36 + i % 3, 100) for i in range(16)])
    score.tracks.append(track)
    score.dump_midi(str(path))
    return path


def test_pieces_the_judge_cannot_hear_are_misses_in_the_denominator(tmp_path):
    pieces = make_pieces(tmp_path, {"scales": scale_runs, "clusters": clusters}, 8, "composer")
    judge = Judge.fit(pieces[::2], "composer", steps=200)
    test = pieces[1::2]
    silent = Piece(path=drums_only(tmp_path / "drums.mid"), rel_path="drums.mid", composer="scales", work="d")
    undecoded = SimpleNamespace(score=None, composer="clusters")  # a generated piece that failed to decode
    unknown = Piece(path=test[0].path, rel_path=test[0].rel_path)  # composer None: left out
    everything = test + [silent, None, undecoded, unknown]
    assert judge.predict(everything)[-4:] == [None, None, None, test[0].composer]
    proba = judge.predict_proba(everything)
    assert np.isnan(proba[len(test):-1]).all() and np.allclose(proba[:len(test)].sum(1), 1.0)
    assert judge.predict(test) == [judge.classes[k] for k in proba[:len(test)].argmax(1)]
    truth = [p.composer for p in test]
    assert judge.rate(test) == Rate(len(test), len(test))  # the obvious classes: every heard piece right
    # own labels: silent and undecoded are misses, in n; None has no label of its own and unknown's is None
    assert judge.rate(everything) == Rate(len(test), len(test) + 2)
    requested = truth + ["scales", "scales", "clusters", None]  # as asked of generated pieces
    r = judge.rate(everything, labels=requested)
    assert r == Rate(len(test), len(test) + 3) and judge.accuracy(everything, requested) == r.value
    m, failed = judge.confusion(everything, requested, with_failed=True)
    np.testing.assert_array_equal(m, judge.confusion(test))
    assert m.sum() == len(test) and np.trace(m) == len(test)
    assert dict(zip(judge.classes, failed.tolist())) == {"clusters": 1, "scales": 2}
    assert np.isnan(judge.accuracy([unknown]))
    with pytest.raises(ValueError, match="labels for"):
        judge.rate(test, labels=["scales"])


def _cv_pieces(tmp_path):
    """Two obvious classes of 6 two-piece works each, a class with a single work (not testable), a "solo" piece in
    a work of clusters (not testable either, its work held out with the clusters), a piece without known composer
    and a silent piece (drums only) of its own work labelled "scales"."""
    pieces = make_pieces(tmp_path, {"scales": scale_runs, "clusters": clusters}, 12, "composer")
    pieces += make_pieces(tmp_path, {"voices": chorale}, 2, "composer")  # one work: voices-work0
    piano(np.random.default_rng(8)).dump_midi(str(tmp_path / "solo.mid"))
    pieces.append(Piece(path=tmp_path / "solo.mid", rel_path="solo.mid", composer="solo", work="clusters-work0"))
    scale_runs(np.random.default_rng(9)).dump_midi(str(tmp_path / "unlabelled.mid"))
    pieces.append(Piece(path=tmp_path / "unlabelled.mid", rel_path="unlabelled.mid", work="u"))
    pieces.append(Piece(path=drums_only(tmp_path / "drums.mid"), rel_path="drums.mid", composer="scales", work="d"))
    return pieces


def test_cross_validate_holds_each_work_out_once(tmp_path, monkeypatch):
    pieces = _cv_pieces(tmp_path)
    # instrument the real fits and predictions: which pieces (known by their feature rows) each judge trained on
    # and which it predicted
    calls, fit, proba = [], Judge._fit.__func__, Judge._proba
    row_of = {feature_matrix([p]).tobytes(): k for k, p in enumerate(pieces) if p.rel_path != "drums.mid"}
    monkeypatch.setattr(Judge, "_fit", classmethod(lambda cls, label, X, *a, **kw: (
        calls.append(("fit", [row_of[x.tobytes()] for x in X])), fit(cls, label, X, *a, **kw))[1]))
    monkeypatch.setattr(Judge, "_proba", lambda self, X: (
        calls.append(("predict", [row_of[x.tobytes()] for x in X])), proba(self, X))[1])
    cv = cross_validate(pieces, "composer", folds=3, seed=1)
    assert [c for c, _ in calls] == ["fit", "predict"] * 3
    predicted_once = [k for (_, fitted), (_, held) in zip(calls[::2], calls[1::2]) for k in held]
    for (_, fitted), (_, held) in zip(calls[::2], calls[1::2]):
        assert not {pieces[k].work for k in fitted} & {pieces[k].work for k in held}
        assert {pieces[k].composer for k in held} == {"scales", "clusters"}  # stratified: both in every fold
        assert {"voices", "unlabelled.mid"} & {pieces[k].composer or pieces[k].rel_path for k in fitted} == {"voices"}
        assert all(pieces[k].composer in ("scales", "clusters") for k in held)
    testable = [k for k, p in enumerate(pieces) if p.composer in ("scales", "clusters") and p.rel_path != "drums.mid"]
    assert sorted(predicted_once) == testable  # every heard testable piece exactly once
    solo = next(k for k, p in enumerate(pieces) if p.composer == "solo")
    assert [k for _, fitted in calls[::2] for k in fitted].count(solo) == 2  # not when its work is held out
    # the returned fold assignment says the same: one fold per work, none for the untestable and unlabelled
    fold_of_work = {}
    for p, f in zip(pieces, cv["fold"]):
        assert f is None or fold_of_work.setdefault(p.work, f) == f
    assert [f for p, f in zip(pieces, cv["fold"]) if p.composer in (None, "voices", "solo")] == [None] * 4
    # the figures: the silent piece is a miss in n; voices and solo trained on but never tested
    assert cv["classes"] == ["clusters", "scales", "solo", "voices"]
    assert cv["not_testable"] == {"solo": 1, "voices": 2}
    assert cv["unlabelled"] == 1 and cv["n_pieces"] == 25 and cv["n_works"] == 13
    assert cv["accuracy"]["n"] == 25 and cv["accuracy"]["k"] >= 23 and cv["accuracy"]["lo"] < cv["accuracy"]["rate"]
    assert cv["failed"] == [0, 1, 0, 0] and np.sum(cv["confusion"]) == 24
    assert cv["majority_class"] == "scales" and cv["majority"] == Rate(13, 25).to_dict()
    assert {v: (r["n"]) for v, r in cv["recall"].items()} == {"clusters": 12, "scales": 13}
    assert sum(r["k"] for r in cv["recall"].values()) == cv["accuracy"]["k"] == np.trace(cv["confusion"])


def test_cross_validate_predicts_as_the_public_judge_and_is_deterministic(tmp_path):
    pieces = _cv_pieces(tmp_path)
    cv = cross_validate(pieces, "composer", folds=3, seed=1)
    out = {p.work for p, f in zip(pieces, cv["fold"]) if f == 0}
    train = [p for p in pieces if p.work not in out and p.composer and p.rel_path != "drums.mid"]
    held = [k for k, f in enumerate(cv["fold"]) if f == 0]
    assert Judge.fit(train, "composer").predict([pieces[k] for k in held]) == \
        [cv["predicted"][k] for k in held]
    assert cross_validate(pieces, "composer", folds=3, seed=1) == cv
    assert cross_validate(pieces, "composer", folds=3, seed=2)["fold"] != cv["fold"]
    with pytest.raises(ValueError, match="at least two values"):
        cross_validate([p for p in pieces if p.composer == "scales"], "composer", steps=10)
    with pytest.raises(ValueError, match="two works"):
        cross_validate(make_pieces(tmp_path, {"a": scale_runs, "b": clusters}, 2, "composer"), "composer", steps=10)
    with pytest.raises(ValueError, match="folds"):
        cross_validate(pieces, "composer", folds=1)


def test_spread_is_zero_for_copies_and_grows_with_variety(tmp_path):
    pieces = make_pieces(tmp_path, {"scales": scale_runs, "clusters": clusters}, 6, "composer")
    judge = Judge.fit(pieces, "composer")
    one = pieces[0]
    assert judge.spread([one, one, one]) == 0.0  # three copies: a collapse
    same_kind = judge.spread([p for p in pieces if p.composer == "scales"])
    mixed = judge.spread(pieces)
    assert 0.0 < same_kind < mixed  # two kinds of music spread wider than one
    assert judge.spread([one, None]) is None  # fewer than two pieces it can hear: no figure
