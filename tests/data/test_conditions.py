"""Condition tokens: the vocabulary, its files, and shards that carry conditions (real miditok, real MIDI)."""

import json
from dataclasses import replace

import numpy as np
import pytest

from tchaikovsky.config import TrainConfig
from tchaikovsky.data import shards as shards_lib
from tchaikovsky.data.conditions import UNKNOWN, Conditions, load_conditions
from tchaikovsky.data.corpus import Piece

BACH, PALESTRINA = "Johann Sebastian Bach", "Giovanni Pierluigi da Palestrina"


def _piece(rel, composer=None, period=None, instrumentation=None, work=None):
    return Piece(path=None, rel_path=rel, composer=composer, period=period, instrumentation=instrumentation, work=work)


PIECES = [_piece("a", BACH, "Baroque", "voices"), _piece("b", PALESTRINA, "Renaissance", "voices"),
          _piece("c", None, None, "keyboard")]


def test_vocabulary_ids_unknowns_and_prefixes():
    cond = Conditions.build(500, PIECES)
    assert cond.tokens[:3] == ("Period_unknown", "Composer_unknown", "Instrumentation_unknown")
    assert cond.vocab_size == 500 + len(cond.tokens)
    assert cond.known("composer") == [PALESTRINA, BACH]  # sorted, unknown left out
    ids = cond.ids()
    assert cond.encode(PIECES[0]) == [ids["Period_Baroque"], ids[f"Composer_{BACH}"], ids["Instrumentation_voices"]]
    assert cond.encode(PIECES[2]) == [500, 501, ids["Instrumentation_keyboard"]]  # unknown where not known
    # a user may name a composer by surname, any case, accents or not; "" is any
    assert cond.prefix(composer="bach") == [500, ids[f"Composer_{BACH}"], 502]
    assert cond.prefix(composer="PALESTRINA", period="renaissance") == cond.prefix(PIECES[1].period, PALESTRINA)
    assert cond.prefix() == [500, 501, 502]


def test_unknown_values_fail_listing_the_known_ones():
    cond = Conditions.build(500, PIECES)
    with pytest.raises(ValueError, match=r"composer 'chopin' is not known.*Giovanni Pierluigi da Palestrina, Johann"):
        cond.prefix(composer="chopin")
    with pytest.raises(ValueError, match="known period values: Baroque, Renaissance"):
        cond.prefix(period="Romantic")
    with pytest.raises(ValueError, match="unknown condition kind 'mood'"):
        cond.resolve("mood", "sad")
    two = Conditions.build(500, [_piece("a", "Johann Sebastian Bach"), _piece("b", "Carl Philipp Emanuel Bach")])
    with pytest.raises(ValueError, match="'bach' is ambiguous"):
        two.prefix(composer="bach")


def test_unseen_combinations_are_reported_not_refused():
    cond = Conditions.build(500, PIECES)
    assert cond.unseen(composer="bach") is None and cond.unseen(period="Baroque", instrumentation="voices") is None
    note = cond.unseen(composer="bach", instrumentation="keyboard")
    assert "has not seen this combination" in note and "keyboard" in note
    assert len(cond.prefix(composer="bach", instrumentation="keyboard")) == 3  # allowed all the same


def test_extending_keeps_every_id_and_growth_starts_from_unknown_rows(tmp_path):
    old = Conditions.build(500, PIECES[:1])
    new = old.extended([_piece("d", "Claudio Monteverdi", "Renaissance", "voices")])
    assert new.tokens[: len(old.tokens)] == old.tokens  # ids the model learned keep their meaning
    added = new.tokens[len(old.tokens):]
    assert set(added) == {"Period_Renaissance", "Composer_Claudio Monteverdi"}
    sources = new.sources(old)
    assert sources[: len(old.tokens)] == list(old.ids().values())  # every old token keeps its own rows
    assert sources[len(old.tokens):] == [new.unknown_id(t.split("_")[0].lower()) for t in added]
    assert new.sources(None) == [-1] * len(new.tokens)  # a model that never had conditions: mean rows
    rebuilt = Conditions.build(500, [_piece("d", "Claudio Monteverdi", "Renaissance", "voices")])
    with pytest.raises(ValueError, match="do not extend"):
        rebuilt.sources(old)
    assert new.combinations["Baroque|Johann Sebastian Bach|voices"] == 1
    # the file round-trips, and a tokenizer of another size is refused
    new.save(tmp_path)
    assert load_conditions(tmp_path) == new and load_conditions(tmp_path / "nothing") is None
    with pytest.raises(ValueError, match="tokenizer of 500 ids, this one has 3"):
        load_conditions(tmp_path, tok=[0, 1, 2])
    (tmp_path / "conditions.json").write_text("{}")
    with pytest.raises(ValueError, match="not a condition vocabulary"):
        load_conditions(tmp_path)


def test_dropout_targets_map_conditions_to_their_unknown():
    cond = Conditions.build(500, PIECES)
    target = cond.dropout_targets()
    assert (target[:500] == np.arange(500)).all()
    for i, t in enumerate(cond.tokens):
        assert target[500 + i] == cond.unknown_id(t.split("_")[0])


@pytest.fixture(scope="module")
def labelled(bach, tmp_path_factory):
    """The fixture's 12 chorales, labelled as four works of three composers, in conditioned shards with a judge
    split."""
    composers = [BACH, BACH, "Claudio Monteverdi", PALESTRINA]
    pieces = [replace(p, composer=composers[i % 4], period="Baroque" if i % 4 < 2 else "Renaissance",
                      instrumentation="voices", work=f"work {i // 2}") for i, p in enumerate(bach.pieces)]
    cond = Conditions.build(len(bach.tok), pieces)
    out = shards_lib.build_shards(bach.tok, pieces, tmp_path_factory.mktemp("cond") / "shards",
                                  conditions=cond, held_out={"judge": 0.3})
    return pieces, cond, shards_lib.Shards(out)


def test_shards_start_each_piece_with_its_conditions(labelled, bach):
    pieces, cond, sh = labelled
    assert sh.vocab_size == cond.vocab_size and sh.conditions == cond
    assert json.loads((sh.path / "conditions.json").read_text())["tokens"] == list(cond.tokens)
    by_path = {p.rel_path: p for p in pieces}
    bos = bach.tok["BOS_None"]
    for split in sh.splits:
        for i, entry in enumerate(sh.pieces(split)):
            ids = sh.piece_ids(split, i)
            assert list(ids[:4]) == cond.encode(by_path[entry["rel_path"]]) + [bos] == entry["conditions"] + [bos]
    # the held-out loss predicts music, not the conditions it is given
    n_cond = sum(int(cond.is_condition(sh.piece_ids("val", i)).sum()) for i in range(len(sh.pieces("val"))))
    total = sum(float(mask.sum()) for _, mask in sh.eval_batches(4, 32))
    # (the split's first token is no target: it has nothing before it)
    assert n_cond == 3 * len(sh.pieces("val")) and total == sh.n_tokens("val") - 1 - (n_cond - 1)


def test_judge_split_is_whole_works_and_never_trained_on(labelled):
    pieces, _, sh = labelled
    works = {name: {p["work"] for p in sh.pieces(name)} for name in sh.splits}
    assert works["judge"] and not works["judge"] & (works["train"] | works["val"])
    assert sum(len(sh.pieces(s)) for s in sh.splits) == len(pieces)
    again = shards_lib.assign_splits(pieces, 0.1, 0, {"judge": 0.3})  # deterministic: a fine-tune gets the same
    assert {p.rel_path for p in again["judge"]} == {p["rel_path"] for p in sh.pieces("judge")}
    with pytest.raises(ValueError, match="held_out 'val'"):
        shards_lib.assign_splits(pieces, 0.1, 0, {"val": 0.3})


def test_condition_dropout_is_reproducible_and_touches_only_conditions(labelled):
    _, cond, sh = labelled
    plain = sh.batch(3, 8, 64, seed=1)
    dropped = sh.batch(3, 8, 64, seed=1, condition_dropout=0.5)
    assert (dropped == sh.batch(3, 8, 64, seed=1, condition_dropout=0.5)).all()  # a pure function of (seed, step)
    changed = plain != dropped
    assert cond.is_condition(plain[changed]).all()
    assert (dropped[changed] == cond.dropout_targets()[plain[changed]]).all()
    everything = sh.batch(3, 8, 64, seed=1, condition_dropout=1.0)
    is_cond = cond.is_condition(plain)
    assert is_cond.any() and (everything[is_cond] < cond.base + 3).all()  # all unknown
    # each process draws its rows of the same global batch
    halves = [sh.batch(3, 8, 64, seed=1, condition_dropout=0.5, process_index=i, process_count=2) for i in (0, 1)]
    assert (np.concatenate(halves) == dropped).all()
    assert UNKNOWN in cond.tokens[0]


def test_unconditional_rows_have_every_condition_unknown_and_the_rest_untouched(labelled):
    """``unconditional_rate``: whole windows asked for nothing (what guidance subtracts), reproducibly, on top of the
    per-token ``condition_dropout``; the music is never touched."""
    _, cond, sh = labelled
    plain = sh.batch(5, 64, 48, seed=2)
    rows = sh.batch(5, 64, 48, seed=2, unconditional_rate=0.5)
    assert (rows == sh.batch(5, 64, 48, seed=2, unconditional_rate=0.5)).all()  # a pure function of (seed, step)
    is_cond = cond.is_condition(plain)
    unknown = cond.dropout_targets()[plain]
    whole = np.array([(r[c] == u[c]).all() and c.any() for r, u, c in zip(rows, unknown, is_cond)])
    assert ((rows == plain) | whole[:, None]).all() and (rows[~is_cond] == plain[~is_cond]).all()
    assert 16 <= whole.sum() <= 48  # about half of 64 rows, every one either whole or untouched
    both = sh.batch(5, 64, 48, seed=2, unconditional_rate=0.5, condition_dropout=0.3)
    assert (both[whole] == rows[whole]).all()  # the whole rows stay whole; the others drop tokens one by one
    assert (both[~whole] == sh.batch(5, 64, 48, seed=2, condition_dropout=0.3)[~whole]).all()
    halves = [sh.batch(5, 64, 48, seed=2, unconditional_rate=0.5, process_index=i, process_count=2) for i in (0, 1)]
    assert (np.concatenate(halves) == rows).all()
    with pytest.raises(ValueError, match="unconditional_rate=2 must be a number in"):
        TrainConfig(unconditional_rate=2)


def test_every_training_window_opens_with_its_pieces_conditions(labelled):
    _, cond, sh = labelled
    pieces = sh.pieces("train")
    offsets = np.array([p["offset"] for p in pieces])
    data = np.asarray(sh._split("train"))
    for step in range(20):
        batch = sh.batch(step, 8, 64, seed=3)
        starts = np.random.default_rng([3, step]).integers(0, len(data) - 65 + 1, size=8)
        for row, s in zip(batch, starts):
            j = int(np.searchsorted(offsets, s, side="right")) - 1
            assert list(row[:3]) == pieces[j]["conditions"]  # the piece's conditions, always in view
            if s - offsets[j] > 3:  # then the piece from the window's start on
                assert (row[3:] == data[s : s + 62]).all()
            else:  # a window starting within the conditions starts at the piece's beginning
                assert (row == data[offsets[j] : offsets[j] + 65]).all()


def test_pinned_prompts_keep_their_conditions():
    from tchaikovsky.generate.sampling import kept_prompt, leading_conditions

    cond = Conditions.build(500, PIECES)
    prompt = np.array(cond.prefix(composer="bach") + [1] + list(range(10, 30)))
    assert leading_conditions(prompt, cond) == 3 and leading_conditions(prompt, None) == 0
    kept = kept_prompt(prompt, 10, pinned=3)
    assert list(kept) == list(prompt[:3]) + list(prompt[-7:])
    assert list(kept_prompt(prompt, 10)) == list(prompt[-10:]) and len(kept_prompt(prompt, 100, 3)) == len(prompt)
