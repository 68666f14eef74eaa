"""The judge's check of a conditioned run under the evaluation protocol, on a real tiny run; its helpers: the full request ``typical`` makes of one value (from the training combinations of a
real ``Conditions``), and the training n-gram index ``training_index`` builds from real shards of real chorales."""

from dataclasses import replace

import numpy as np
import pytest

from tchaikovsky.data import shards as shards_lib
from tchaikovsky.data.conditions import Conditions
from tchaikovsky.data.tokenizer import music_ids
import json

from tchaikovsky.evaluation import control
from tchaikovsky.evaluation.control import typical
from tchaikovsky.evaluation.intervals import Rate
from tchaikovsky.evaluation.views import training_index
from tchaikovsky.evaluation.originality import flag_copies


def _pieces(n, period=None, composer=None, instrumentation=None):
    return [{"period": period, "composer": composer, "instrumentation": instrumentation}] * n


TRAINING = (_pieces(3, "Baroque", "Bach", "voices") + _pieces(1, "Baroque", "Bach", "keyboard")
            + _pieces(1, "Classical", "Mozart", "keyboard") + _pieces(2, "Classical", "Mozart")  # instrumentation unknown
            + _pieces(2, None, "Anon", "voices")  # period unknown
            + _pieces(1, "Classical", "Haydn", "strings") + _pieces(1, "Classical", "Haydn", "keyboard"))  # a tie


def test_typical_request_is_the_most_common_training_combination_with_the_value():
    cond = Conditions.build(500, TRAINING)
    assert typical(cond, "composer", "Bach") == {"period": "Baroque", "composer": "Bach", "instrumentation": "voices"}
    # any label: voices are Bach's (3) more often than Anon's (2)
    assert typical(cond, "instrumentation", "voices") == {"period": "Baroque", "composer": "Bach",
                                                          "instrumentation": "voices"}
    assert typical(cond, "period", "Classical")["composer"] == "Mozart"  # Mozart/unknown (2) beats every other (1)
    # an unknown value in the winning combination is asked as "any" (""), never as the literal "unknown"
    assert typical(cond, "composer", "Mozart") == {"period": "Classical", "composer": "Mozart", "instrumentation": ""}
    assert typical(cond, "composer", "Anon") == {"period": "", "composer": "Anon", "instrumentation": "voices"}
    # a tie: one of the tied combinations, the same one every time
    haydn = typical(cond, "composer", "Haydn")
    assert haydn in ({"period": "Classical", "composer": "Haydn", "instrumentation": i} for i in ("strings", "keyboard"))
    assert typical(cond, "composer", "Haydn") == haydn
    # no training combination has the value: just the value, the others left to the sampler's "any"
    assert typical(cond, "composer", "Chopin") == {"composer": "Chopin"}
    assert typical(Conditions.build(500), "period", "Baroque") == {"period": "Baroque"}
    # what a sampler is given: the request is one cond.prefix accepts, "" becoming the unknown token
    ids = cond.ids()
    assert cond.prefix(**typical(cond, "composer", "Mozart")) == [
        ids["Period_Classical"], ids["Composer_Mozart"], cond.unknown_id("instrumentation")]
    # a fine-tune's pieces count in: enough Mozart string quartets outnumber the earlier combinations
    grown = cond.extended(_pieces(3, "Classical", "Mozart", "strings"))
    assert typical(grown, "composer", "Mozart")["instrumentation"] == "strings"
    assert typical(grown, "composer", "Bach") == typical(cond, "composer", "Bach")


@pytest.fixture(scope="module")
def index(bach):
    return training_index(bach.shards, bach.tok)


def _music(shards, tok, split, i):
    return music_ids(tok, shards.piece_ids(split, i))


def test_training_index_finds_training_pieces_as_copies_and_not_held_out_ones(bach, index):
    sh, tok = bach.shards, bach.tok
    train = [_music(sh, tok, "train", i) for i in range(len(sh.pieces("train")))]
    val = [_music(sh, tok, "val", i) for i in range(len(sh.pieces("val")))]
    assert len(train) >= 2 and val
    # the music tokens of every training piece, and nothing else (BOS / EOS are not music)
    assert index.n_tokens == sum(map(len, train)) < sh.n_tokens("train")
    raw = sh.piece_ids("train", 1)
    assert index.longest_common_runs([raw])[0] == len(train[1]) == len(raw) - 2  # [BOS music EOS]: the music
    # a passage lifted from a training piece is a copy; a held-out piece is not, nor is most of it found
    lifted = train[0][40:140]
    assert len(lifted) == 100 and index.longest_common_runs([lifted]) == [100]
    flags = flag_copies([lifted, *val], index)
    assert flags[0]["copied"] and not any(f["copied"] for f in flags[1:])
    assert all(f["longest_run"] < f["length"] / 2 for f in flags[1:])
    # pieces are indexed apart: the end of one joined to the start of the next is not one run
    joined = np.r_[train[0][-30:], train[1][:30]]
    assert 30 <= index.longest_common_runs([joined])[0] < 60
    # the hash seed changes nothing found
    again = training_index(sh, tok, seed=7)
    assert again.longest_common_runs([lifted, joined, *val]) == index.longest_common_runs([lifted, joined, *val])


def test_training_index_leaves_out_condition_tokens(bach, tmp_path):
    """In conditioned shards a piece is [conditions, BOS, music, EOS]: only the music is indexed."""
    pieces = [replace(p, composer="Bach" if i % 2 else "Anon") for i, p in enumerate(bach.pieces[:6])]
    cond = Conditions.build(len(bach.tok), pieces)
    sh = shards_lib.Shards(shards_lib.build_shards(bach.tok, pieces, tmp_path / "shards",
                                                   conditions=cond, val_fraction=0.2))
    index = training_index(sh, bach.tok)
    raw = sh.piece_ids("train", 0)
    assert cond.is_condition(raw[:3]).all() and len(raw) > 5
    assert index.n_tokens == sum(len(_music(sh, bach.tok, "train", i)) for i in range(len(sh.pieces("train"))))
    assert index.longest_common_runs([raw])[0] == len(raw) - 5  # 3 conditions, BOS, EOS


def test_controllability_reports_rates_with_n_against_measured_chance(conditioned_run):
    report = control.controllability(conditioned_run, role="validation", n_per_value=3, num_tokens=24,
                                     min_pieces=1)
    assert report["role"] == "validation" and report["settings"]["seeds"] == [0, 2]
    assert report["settings"]["held_out_split"] == "judge" and len(report["values"]) == 2
    for row in report["table"]:
        cond, chance = Rate.from_dict(row["conditioned"]), Rate.from_dict(row["chance"])
        assert cond.n == chance.n == 3 and 0 <= row["failed"] <= 3  # failures stay in n
        assert row["lift"]["diff"] == pytest.approx(cond.value - chance.value)
        assert row["lift"]["lo"] <= row["lift"]["diff"] <= row["lift"]["hi"]
    chances = [Rate.from_dict(r["chance"]).value for r in report["table"]]
    assert report["pooled"]["chance_mean"] == pytest.approx(sum(chances) / len(chances))
    assert report["conditioned"]["n"] == 6 and report["held_out_overlap"] == []
    saved = json.loads(control.report_path(conditioned_run, "composer", "validation").read_text())
    assert saved["table"][0]["conditioned"] == report["table"][0]["conditioned"]
    text = control.summary_table(report)
    assert "(validation)" in text and "/3)" in text and "**all**" in text


def test_an_outside_judge_hears_the_same_pieces(conditioned_run):
    """The outside check: a second judge's verdict on the very pieces the role's judge heard. Given the role's own
    judge as the outsider, both verdicts must agree row by row; a value the outsider does not know gets None."""
    from tchaikovsky.evaluation.judge import Judge

    kw = dict(role="validation", n_per_value=3, num_tokens=24, min_pieces=1, write=False)
    first = control.controllability(conditioned_run, **{**kw, "write": True})  # saves the judge
    saved = Judge.load(conditioned_run / "judge" / "validation" / "judge_composer.json")
    report = control.controllability(conditioned_run, outside=saved, **kw)
    for row in report["table"]:
        assert row["outside"]["conditioned"] == row["conditioned"] and row["outside"]["chance"] == row["chance"]
        assert row["diversity_real"] is None or row["diversity_real"] >= 0.0
    assert [r["conditioned"] for r in report["table"]] == [r["conditioned"] for r in first["table"]]
    saved.classes = ["someone else", "nobody"]  # an outsider that knows none of the asked composers
    assert all(r["outside"] is None for r in control.controllability(conditioned_run, outside=saved, **kw)["table"])


def test_test_role_uses_other_works_and_seeds(conditioned_run):
    test = control.controllability(conditioned_run, role="test", n_per_value=2, num_tokens=24, min_pieces=1,
                                   write=False)
    assert test["settings"]["seeds"] == [1_000_000, 1_000_001] and test["settings"]["held_out_split"] == "judge_test"
    with pytest.raises(ValueError, match="evaluation role 'train'"):
        control.controllability(conditioned_run, role="train")
    with pytest.raises(ValueError, match="fewer than two composer values with >= 50"):
        control.controllability(conditioned_run, min_pieces=50)


def test_decoded_split_is_the_originals_decoded_with_their_labels(conditioned_run):
    from tchaikovsky.data.shards import Shards
    from tchaikovsky.data.tokenizer import load_tokenizer
    from tchaikovsky.evaluation.views import decode_samples, decoded_split

    sh, tok = Shards(conditioned_run / "shards"), load_tokenizer(conditioned_run / "tokenizer.json")
    for split in sh.splits:
        got = decoded_split(sh, tok, split)
        entries = [e for e in sh.pieces(split) if not e.get("augment")]
        assert [d.rel_path for d in got] == [e["rel_path"] for e in entries]
        assert all(d.score.note_num() == e["n_notes"] and d.composer == e["composer"] and d.work == e["work"]
                   for d, e in zip(got, entries))
    scores, failed = decode_samples(tok, [sh.piece_ids("train", 0), [], [len(tok) + 1]])
    assert scores[0].note_num() > 0 and failed == {"decode_error": 0, "no_notes": 2}  # kept in place, counted


def test_guidance_reaches_the_sampler_and_the_report(conditioned_run):
    kw = dict(role="validation", n_per_value=2, num_tokens=24, min_pieces=1, write=False)
    plain = control.controllability(conditioned_run, **kw)
    guided = control.controllability(conditioned_run, guidance=3.0, **kw)
    assert plain["settings"]["guidance"] == 1.0 and guided["settings"]["guidance"] == 3.0
    # the pieces asked for "any" are the same at every guidance (unknown in both halves): chance is unchanged ...
    assert [t["chance"] for t in guided["table"]] == [t["chance"] for t in plain["table"]]
    assert guided["failed"]["any"] == plain["failed"]["any"]
    # ... while the pieces asked for a composer are others
    assert [t["mean_notes"] for t in guided["table"]] != [t["mean_notes"] for t in plain["table"]]
    with pytest.raises(ValueError, match="guidance"):
        control.controllability(conditioned_run, guidance=-1.0, **kw)
