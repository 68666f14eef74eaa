"""The caption under a generated piece: what was asked and what the run's test-role judge hears, on the real tiny
conditioned run (its judge trained on the ``judge_test`` works, its pieces sampled by the real model)."""

import time

import numpy as np
import pytest

from tchaikovsky.config import SampleConfig
from tchaikovsky.data.conditions import load_conditions
from tchaikovsky.data.shards import Shards
from tchaikovsky.data.tokenizer import save_midi, special_ids
from tchaikovsky.evaluation import caption
from tchaikovsky.evaluation.views import decoded_split
from tchaikovsky.generate.sampling import generate
from tchaikovsky.training.checkpoint import load_run_model

BACH = {"composer": "bach", "period": "", "instrumentation": "voices"}


@pytest.fixture(scope="module")
def piece(conditioned_run, tmp_path_factory):
    """(ids, MIDI path) of one piece the conditioned run's model writes when asked for Bach's voices."""
    model, tok, _ = load_run_model(conditioned_run)
    cond = load_conditions(conditioned_run, tok)
    prompt = np.asarray(cond.prefix(**BACH) + [special_ids(tok)["bos"]], np.int32)
    ids = generate(model, prompt, SampleConfig(num_tokens=48, min_tokens=48), seeds=[0], tok=tok,
                   conditions=cond)[0]
    return ids, save_midi(tok, ids, tmp_path_factory.mktemp("caption") / "bach.mid")


def test_caption_names_the_request_and_the_judges_own_probability(conditioned_run, piece):
    ids, midi = piece
    t0 = time.perf_counter()
    text = caption.caption(conditioned_run, BACH, midi, min_pieces=1)  # the fixture holds out one piece a composer
    fit_s = time.perf_counter() - t0
    print(f"caption judges fitted in {fit_s:.2f} s")  # the once-per-run cost, kept out of every later caption
    assert text.startswith("asked: Johann Sebastian Bach, any period, voices. The judge hears ")
    judges = caption.judges(conditioned_run, min_pieces=1)
    assert sorted(judges) == ["composer", "period"]
    # the protocol's test judge: trained on the judge_test works (every one of them), nothing else
    sh, tok = Shards(conditioned_run / "shards"), load_run_model(conditioned_run)[1]
    test_works = sorted({p.work for p in decoded_split(sh, tok, "judge_test")})
    assert judges["composer"].info["train_works"] == test_works
    assert judges["composer"].classes == ["Claudio Monteverdi", "Johann Sebastian Bach"]
    verdict = caption.heard(conditioned_run, midi, min_pieces=1)
    for label, (value, p) in verdict.items():
        own = judges[label].predict_proba([midi])[0]
        assert 0.0 <= p <= 1.0 and p == own.max() and value == judges[label].classes[int(own.argmax())]
        assert f"{value} ({p:.2f})" in text
    assert text.index(verdict["composer"][0] + " (") < text.index(verdict["period"][0] + " (")
    # kept per run: the next caption reuses the judges, and token ids are heard as their decoded piece
    from_ids = caption.caption(conditioned_run, BACH, ids, min_pieces=1)
    assert caption.judges(conditioned_run, min_pieces=1)["composer"] is judges["composer"]
    assert from_ids.split(" The judge hears ")[0] == text.split(" The judge hears ")[0]
    # a piece without notes says so; an unknown value or kind is an error naming what the run knows
    bos = [special_ids(tok)["bos"]]
    assert caption.caption(conditioned_run, {}, bos, min_pieces=1) == (
        "asked: any composer, any period, any instrumentation. The judge cannot hear it (no notes).")
    with pytest.raises(ValueError, match="known composer values: .*Claudio Monteverdi"):
        caption.caption(conditioned_run, {"composer": "Chopin"}, midi, min_pieces=1)
    with pytest.raises(ValueError, match="condition kinds are period, composer, instrumentation"):
        caption.caption(conditioned_run, {"key": "C"}, midi, min_pieces=1)


def test_without_a_judge_the_caption_says_what_was_asked_and_why_once(conditioned_run, tiny_run, piece):
    _, midi = piece
    # the reported figures' default: a value needs two held-out pieces, and the fixture holds out one a composer
    why = caption.no_judge_reason(conditioned_run)
    assert "fewer than two composer values with >= 2 pieces" in why
    assert caption.caption(conditioned_run, BACH, midi) == "asked: Johann Sebastian Bach, any period, voices."
    cell = {"midi_path": midi}
    assert caption.describe(conditioned_run, BACH, cell) == why + "\nasked: Johann Sebastian Bach, any period, voices."
    assert caption.describe(conditioned_run, BACH, cell) == "asked: Johann Sebastian Bach, any period, voices."
    # an unconditioned run: nothing was asked, nothing to say
    assert caption.caption(tiny_run, {}, midi) == "" and caption.describe(tiny_run, {}, cell) == ""
    assert "no conditions" in caption.no_judge_reason(tiny_run)


def test_rerank_text_reports_the_kept_candidate():
    info = {"n": 3, "rank": 2, "scores": [0.5, -np.inf, 0.75]}
    assert caption.rerank_text(info) == "best of 3 by the scorer: candidate 2 kept (score 0.750; the others 0.500, -inf)"
    assert caption.rerank_text(None) == caption.rerank_text({"n": 1, "rank": 0, "scores": [np.nan]}) == ""
