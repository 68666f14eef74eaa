"""The scorer: its roll of a piece (known answers), a tiny encoder trained on pieces of known classes, the reward,
copies, saving. The classes are the judge tests' made-up "composers" (real MIDI files written by the tests)."""

import copy

import numpy as np
import pytest
import symusic

from tchaikovsky import progress
from tchaikovsky.evaluation.judge import split_by_work
from tchaikovsky.evaluation.roll import N_CHANNELS, frames
from tchaikovsky.evaluation.scorer import Scorer, ScorerConfig, separation

from test_judge import clusters, make_pieces, scale_runs, score_of

TINY = ScorerConfig(labels=("composer",), window=32, width=16, dim=16, steps=200, batch=8)


def test_frames_known_answers():
    # C4 for a quarter, then E4 + G4 for a half note: 3 beats = 12 sixteenths
    x = frames(score_of([[(0, 1, 60), (1, 2, 64)], [(1, 2, 67)]]))
    assert x.shape == (12, N_CHANNELS) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:4, 0], 1)
    np.testing.assert_array_equal(x[4:, 0], 0)
    assert x[0, 12] == 1 and x[1:4, 12].sum() == 0  # C starts in frame 0 only
    assert x[4, 12 + 4] == x[4, 12 + 7] == 1 and x[5:, 12:24].sum() == 0
    assert x[0, 24] == x[0, 25] == 0  # lowest / highest sounding pitch: C4 = (60 - 60) / 24
    assert x[4, 24] == pytest.approx(4 / 24) and x[4, 25] == pytest.approx(7 / 24)
    assert x[4, 26] == pytest.approx(2 / 6) and x[4, 27] == pytest.approx(2 / 6) and x[5, 27] == 0
    assert x[:, 28].sum() == 0  # never silent
    up = frames(score_of([[(0, 1, 62), (1, 2, 66)], [(1, 2, 69)]]))  # the same a tone higher
    np.testing.assert_array_equal(up[:, :12], np.roll(x[:, :12], 2, axis=1))
    rest = frames(score_of([[(0, 1, 60), (2, 1, 60)]]))
    np.testing.assert_array_equal(rest[:, 28], [0] * 4 + [1] * 4 + [0] * 4)
    assert frames(symusic.Score(480)).shape == (1, N_CHANNELS)  # nothing to play: one silent frame, no error
    assert frames(score_of([[(0, 100, 60)]]), max_frames=64).shape == (64, N_CHANNELS)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    pieces = make_pieces(tmp_path_factory.mktemp("scorer"), {"scales": scale_runs, "clusters": clusters}, 10,
                         "composer")
    train, test = split_by_work(pieces, 0.4, seed=1, stratify="composer")
    return Scorer.fit(train, config=TINY, seed=0), train, test


def test_scorer_separates_held_out_pieces_and_rewards_the_prompt(fitted):
    scorer, train, test = fitted
    assert scorer.classes == {"composer": ["clusters", "scales"]}
    assert scorer.reference.shape == (len(train), TINY.dim)
    emb = scorer.embed_all(test)
    e = emb.label
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(scorer.score(test, {"composer": "scales"}, embedded=emb),
                               e @ scorer.centroid({"composer": "scales"}), rtol=1e-6)
    sep = separation(scorer, test, "composer")
    assert sep["n"] == len(test) and sep["n_classes"] == 2
    assert sep["nearest_centroid"] >= 0.9 and sep["within"] > sep["between"]
    own = [scorer.score([p], {"composer": p.composer})[0] for p in test]
    other = [scorer.score([p], {"composer": ({"scales", "clusters"} - {p.composer}).pop()})[0] for p in test]
    assert np.mean(np.greater(own, other)) >= 0.9
    assert scorer.count({"composer": "scales"}) == sum(p.composer == "scales" for p in train)
    with pytest.raises(ValueError, match="no real piece"):
        scorer.centroid({"composer": "mozart"})


def test_a_real_piece_is_its_own_nearest_copy(fitted):
    scorer, train, _ = fitted
    assert scorer.max_similarity_to_real(train[:3]) == pytest.approx(1.0, abs=1e-5)
    transposed = []
    for p in train[:3]:  # a copy moved up a tone is still a copy
        s = symusic.Score(str(p.path))
        for n in s.tracks[0].notes:
            n.pitch += 2
        transposed.append(s)
    assert np.all(scorer.max_similarity_to_real(transposed) > 0.9)


def test_saved_scorer_reloads_to_identical_embeddings(fitted, tmp_path):
    scorer, _, test = fitted
    d = scorer.save(tmp_path / "run" / "scorer")
    assert sorted(p.name for p in d.iterdir()) == ["model.eqx", "reference.npz", "scorer.json"]
    again = Scorer.load(d)
    assert again.config == scorer.config and again.classes == scorer.classes
    np.testing.assert_array_equal(again.embed(test), scorer.embed(test))
    np.testing.assert_array_equal(again.reference, scorer.reference)
    np.testing.assert_array_equal(again.reference_windows, scorer.reference_windows)
    assert again.reference_labels == scorer.reference_labels and again.info["n_train"] == scorer.info["n_train"]
    assert not list((tmp_path / "run").glob(".tmp-*"))
    with pytest.raises(ValueError, match="no scorer"):
        Scorer.load(tmp_path)


def test_copy_threshold_is_a_quantile_of_held_out_similarity(fitted, tmp_path):
    scorer, train, test = fitted
    scorer = copy.copy(scorer)  # its own info: the module's fitted scorer stays as fit
    scorer.info = dict(scorer.info)
    sims = scorer.max_similarity_to_real(test)
    assert len(test) >= 4 and len(set(np.round(sims, 5))) > 1  # distinct values: the quantile is not trivial
    t = scorer.calibrate_copy_threshold(test, 0.75)
    assert t == pytest.approx(float(np.quantile(sims, 0.75)))
    assert 0.25 - 1 / len(test) <= np.mean(sims > t) <= 0.25  # about a quarter of the held-out pieces exceed it
    assert scorer.info["copy_threshold"] == t
    assert scorer.info["copy_threshold_from"] == {"n": len(test), "quantile": 0.75}
    assert np.all(scorer.max_similarity_to_real(train[:3]) > t)  # a reference piece itself is a copy
    # the ends: the largest and smallest similarity; recalibrating replaces the record
    assert scorer.calibrate_copy_threshold(test, 1.0) == pytest.approx(float(sims.max()))
    assert not np.any(sims > scorer.info["copy_threshold"])
    assert scorer.calibrate_copy_threshold(test, 0.0) == pytest.approx(float(sims.min()))
    assert scorer.info["copy_threshold_from"]["quantile"] == 0.0
    assert scorer.calibrate_copy_threshold(test) == pytest.approx(float(np.quantile(sims, 0.99)))  # the default
    again = Scorer.load(scorer.save(tmp_path / "scorer"))  # the threshold travels with the scorer
    assert again.info["copy_threshold"] == scorer.info["copy_threshold"]
    assert again.info["copy_threshold_from"] == {"n": len(test), "quantile": 0.99}


def test_training_shows_a_progress_bar_not_loose_lines(fitted, capsys):
    """Not quiet: one tqdm bar of the steps with the loss (on stderr), no line per 50 steps; quiet (as the whole test
    session is): nothing at all. The losses are recorded every 50 steps either way."""
    _, train, _ = fitted
    config = ScorerConfig(labels=("composer",), window=32, width=16, dim=16, steps=60, batch=8)
    with progress.quiet(False):
        shown = Scorer.fit(train, config=config, seed=0)
    out, err = capsys.readouterr()
    assert out == "" and "scorer step" not in err
    assert "scorer: 100%" in err and "60/60" in err and "loss=" in err
    quiet = Scorer.fit(train, config=config, seed=0)
    assert capsys.readouterr() == ("", "")
    assert len(shown.info["losses"]) == len(quiet.info["losses"]) == 3  # steps 0, 50 and the last
    assert shown.info["losses"] == quiet.info["losses"]
