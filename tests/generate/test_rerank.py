"""Best-of-N sampling on the real tiny conditioned run: its candidate seeds, plain sampling at n=1, the kept piece
the run's scorer (fitted on its training pieces, a few steps) ranks highest, and the lever measured by the judge."""

import shutil

import numpy as np
import pytest

from tchaikovsky.config import SampleConfig
from tchaikovsky.data.conditions import load_conditions
from tchaikovsky.data.shards import Shards
from tchaikovsky.data.tokenizer import special_ids, try_decode
from tchaikovsky.evaluation import reward
from tchaikovsky.evaluation.views import decoded_split
from tchaikovsky.generate import rerank
from tchaikovsky.generate.sampling import generate
from tchaikovsky.training.checkpoint import load_run_model

CONFIG = SampleConfig(num_tokens=32, min_tokens=32)
BACH = {"period": "", "composer": "Johann Sebastian Bach", "instrumentation": "voices"}


@pytest.fixture(scope="module")
def run(conditioned_run, tmp_path_factory):
    """A copy of the conditioned run (the scorer is written into it), with its model, tokenizer, conditions, the
    Bach prompt and the run's scorer fitted for 3 steps."""
    path = tmp_path_factory.mktemp("rerank") / "run"
    shutil.copytree(conditioned_run, path)
    model, tok, _ = load_run_model(path)
    cond = load_conditions(path, tok)
    prompt = np.asarray(cond.prefix(**BACH) + [special_ids(tok)["bos"]], np.int32)
    return path, model, tok, cond, prompt, reward.run_scorer(path, steps=3)


def test_candidate_seeds_are_distinct_from_every_requested_seed():
    assert rerank.candidate_seeds(7, 1) == [7]
    many = {s: rerank.candidate_seeds(s, rerank.MAX_RERANK) for s in (0, 1, 2, 1_000_000, rerank.MAX_SEED - 1)}
    flat = [c for cs in many.values() for c in cs]
    assert len(set(flat)) == len(flat)  # no two candidates of any requested seeds coincide
    assert all(cs[0] == s and min(cs[1:]) >= 2**31 for s, cs in many.items())  # above every requested seed
    assert max(flat) < 2**32  # generate's seeds are uint32
    with pytest.raises(ValueError, match="rerank n=0: use an integer from 1"):
        rerank.candidate_seeds(0, 0)
    with pytest.raises(ValueError, match="outside 0..33554431"):
        rerank.candidate_seeds(rerank.MAX_SEED, 2)


def test_rerank_1_is_plain_sampling(run):
    _, model, tok, cond, prompt, _ = run
    picks = rerank.best_of(model, tok, prompt, CONFIG, n=1, seeds=[3, 4], temperatures=0.9, conditions=cond,
                           asked=BACH, scorer=None)
    plain = generate(model, prompt, CONFIG, seeds=[3, 4], temperatures=0.9, tok=tok, conditions=cond)
    assert len(picks) == 2
    for pick, ids in zip(picks, plain):
        np.testing.assert_array_equal(pick.tokens, ids)
        assert np.isnan(pick.score) and pick.info["rank"] == 0 and pick.info["n"] == 1
    with pytest.raises(ValueError, match="needs a scorer"):
        rerank.best_of(model, tok, prompt, CONFIG, n=2, seeds=[3], conditions=cond, scorer=None)


def test_best_of_keeps_the_candidate_the_scorer_ranks_highest(run):
    path, model, tok, cond, prompt, scorer = run
    picks = rerank.best_of(model, tok, prompt, CONFIG, n=3, seeds=[5, 6], temperatures=1.0, conditions=cond,
                           asked=BACH, scorer=scorer)
    # the same candidates drawn and scored here: one batch, the candidates of seed 5 then those of seed 6
    seeds = rerank.candidate_seeds(5, 3) + rerank.candidate_seeds(6, 3)
    seqs = generate(model, prompt, CONFIG, seeds=seeds, temperatures=1.0, tok=tok, conditions=cond)
    want = {"composer": "Johann Sebastian Bach", "instrumentation": "voices"}  # "" is any: not asked of the scorer
    assert scorer.count(want) > 0 and picks[0].info["prompt"] == want
    scores = np.array([scorer.score([try_decode(tok, s)], want)[0] for s in seqs])
    assert all(len(set(np.round(scores[i:i + 3], 6))) == 3 for i in (0, 3))  # a wrong pick could not pass unseen
    for i, pick in enumerate(picks):
        own = scores[3 * i:3 * i + 3]
        best = int(np.argmax(own))
        np.testing.assert_array_equal(pick.tokens, seqs[3 * i + best])
        np.testing.assert_allclose(pick.info["scores"], own, rtol=1e-5)
        assert pick.score == pytest.approx(own.max()) and pick.info["kept_seed"] == seeds[3 * i + best]
        assert pick.info["seeds"] == seeds[3 * i:3 * i + 3] and pick.info["rank"] == best
    again = rerank.best_of(model, tok, prompt, CONFIG, n=3, seeds=[5, 6], temperatures=1.0, conditions=cond,
                           asked=BACH, scorer=scorer)
    assert all(np.array_equal(a.tokens, b.tokens) and a.info == b.info for a, b in zip(picks, again))
    # an unseen combination is ranked by what the scorer knows of it: instrumentation, then period dropped
    assert rerank.scorer_prompt(scorer, {"composer": "Johann Sebastian Bach", "period": "Renaissance"}) == {
        "composer": "Johann Sebastian Bach"}


def test_run_scorer_is_fitted_on_training_pieces_once_and_reloaded(run):
    path, *_, scorer = run
    sh, tok = Shards(path / "shards"), load_run_model(path)[1]
    train = decoded_split(sh, tok, "train")
    assert scorer.info["n_train"] == len(train) and scorer.info["separation"]["n_train"] == len(train)
    assert sorted(scorer.reference_labels["composer"]) == sorted(p.composer for p in train)
    assert (path / "preference" / "scorer_report.json").is_file()
    assert reward.run_scorer(path) is scorer  # the process keeps it: no refit, no reload


def test_controllability_measures_the_rerank_lever(run):
    """The judge hears the kept pieces: its rates are those of best_of's picks, drawn here again."""
    from tchaikovsky.evaluation import control
    from tchaikovsky.evaluation.judge import Judge

    path, model, tok, cond, _, scorer = run
    report = control.controllability(path, role="validation", n_per_value=2, num_tokens=24, min_pieces=1, rerank=2)
    assert report["settings"]["rerank"] == 2 and report["conditioned"]["n"] == 4 and report["failed"]["n_any"] == 2
    judge = Judge.load(path / "judge" / "validation" / "judge_composer.json")
    bos, config = special_ids(tok)["bos"], SampleConfig(num_tokens=24, top_p=0.95)
    for row in report["table"]:
        prompt = np.asarray(cond.prefix(**row["request"]) + [bos], np.int32)
        picks = rerank.best_of(model, tok, prompt, config, n=2, seeds=[0, 1], temperatures=1.0, conditions=cond,
                               asked=row["request"], scorer=scorer)
        heard = judge.predict([try_decode(tok, p.tokens) for p in picks])
        assert row["conditioned"]["k"] == sum(h == row["value"] for h in heard)
    with pytest.raises(ValueError, match="rerank n=99"):
        control.controllability(path, role="validation", n_per_value=2, num_tokens=24, min_pieces=1, write=False,
                                rerank=99)


def test_write_samples_keeps_the_picks_and_says_so(run):
    """What notebook 04's Generate cell does with rerank: the written pieces are best_of's, each with its info."""
    from tchaikovsky.evaluation import caption
    from tchaikovsky.render import samples

    path, model, tok, cond, prompt, scorer = run
    cells = samples.write_samples(path, model, tok, prompt, CONFIG, seeds=[5, 6], temperatures=[1.0],
                                  render_audio=False, conditions=cond, rerank=3, scorer=scorer, asked=BACH)
    picks = rerank.best_of(model, tok, prompt, CONFIG, n=3, seeds=[5, 6], temperatures=1.0, conditions=cond,
                           asked=BACH, scorer=scorer)
    for cell, pick in zip(cells, picks):
        np.testing.assert_array_equal(cell["ids"], pick.tokens)
        assert cell["rerank"] == pick.info and cell["midi_path"].is_file()
        text = caption.describe(path, BACH, cell)
        assert f"best of 3 by the scorer: candidate {pick.info['rank']} kept (score {pick.score:.3f}" in text
