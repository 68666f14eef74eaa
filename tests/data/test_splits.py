"""The held-out split of the evaluation protocol: a function of each work's identity, recorded by content, and a
fine-tune whose held-out pieces its parent trained on is refused."""

from dataclasses import replace
from types import SimpleNamespace

import pytest

from tchaikovsky.data import shards as shards_lib
from tchaikovsky.data.splits import (TEST_WORKS, VALIDATION_WORKS, assign_splits, held_out_overlap, held_out_roles,
                                     work_key)
from tchaikovsky.notebook.pipeline import check_held_out


def _pieces(works, per_work=2, composer="A"):
    return [SimpleNamespace(rel_path=f"{w}/mvt{k}.mid", work=w, composer=composer, split=None)
            for w in works for k in range(per_work)]


def _roles(splits):
    return {work_key(p): name for name, ps in splits.items() for p in ps}


def test_a_works_role_does_not_depend_on_what_else_is_loaded():
    everything = _pieces([f"opus {i}" for i in range(400)]) + _pieces([f"song {i}" for i in range(100)], 1, "B")
    some = [p for p in everything if hash(p.work) % 3] + _pieces([f"new {i}" for i in range(50)], 3, "C")
    full, part = _roles(assign_splits(everything, 0.1, 0, held_out_roles(0.3))), \
        _roles(assign_splits(some[::-1], 0.1, seed=5, held_out=held_out_roles(0.3)))  # other order, other seed
    for w, role in part.items():
        if w in full and (role in (VALIDATION_WORKS, TEST_WORKS) or full[w] in (VALIDATION_WORKS, TEST_WORKS)):
            assert full[w] == role, w
    shares = {r: sum(v == r for v in full.values()) / len(full) for r in (VALIDATION_WORKS, TEST_WORKS)}
    assert all(0.10 < s < 0.20 for s in shares.values()), shares  # 0.15 each of 500 works (binomial: +-0.03)


def test_held_out_splits_are_whole_works_and_disjoint():
    pieces = _pieces([f"w{i}" for i in range(60)], per_work=3)
    splits = assign_splits(pieces, 0.2, 0, held_out_roles(0.4))
    works = {name: {p.work for p in ps} for name, ps in splits.items()}
    assert works[VALIDATION_WORKS] and works[TEST_WORKS]
    names = list(works)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if a in (VALIDATION_WORKS, TEST_WORKS) or b in (VALIDATION_WORKS, TEST_WORKS):
                assert not works[a] & works[b], (a, b)
    assert sum(map(len, splits.values())) == len(pieces)
    with pytest.raises(ValueError, match="leave nothing"):
        assign_splits(pieces, 0.1, 0, {"a": 0.6, "b": 0.5})
    with pytest.raises(ValueError):
        held_out_roles(1.0)


def test_overlap_matches_content_not_names():
    held = [{"rel_path": "x.mid", "content": "c1"}, {"rel_path": "y.mid", "content": "c2"}, {"rel_path": "z.mid"}]
    trained = [{"rel_path": "other name.mid", "content": "c1"}, {"rel_path": "z.mid"}]
    assert [e["rel_path"] for e in held_out_overlap(held, trained)] == ["x.mid", "z.mid"]


@pytest.fixture(scope="module")
def parent_and_copy(bach, tmp_path_factory):
    """A parent run trained on all 12 chorales (no held-out works), and a run of the same chorales copied under
    other names, with works held out."""
    root = tmp_path_factory.mktemp("leak")
    shards_lib.build_shards(bach.tok, bach.pieces, root / "parent" / "shards")
    copies = [replace(p, rel_path=f"copies/Bach, Johann Sebastian, Chorale {i}.mid", work=f"chorale copy {i}")
              for i, p in enumerate(bach.pieces)]
    child = shards_lib.Shards(shards_lib.build_shards(bach.tok, copies, root / "child" / "shards",
                                                      held_out=held_out_roles(0.5)))
    return root / "parent", child


def test_shards_record_a_content_hash_per_original_piece(parent_and_copy):
    parent, child = parent_and_copy
    parent_sh = shards_lib.Shards(parent / "shards")
    ours = {e["content"] for s in child.splits for e in child.pieces(s)}
    theirs = {e["content"] for s in parent_sh.splits for e in parent_sh.pieces(s)}
    assert len(ours) == 12 and ours == theirs  # the same music under other names hashes alike
    assert child.index["held_out"] == held_out_roles(0.5) and "sha256" in child.index["held_out_rule"]


def test_a_fine_tune_whose_held_out_pieces_the_parent_trained_on_is_refused(parent_and_copy):
    parent, child = parent_and_copy
    held = [e["rel_path"] for s in (VALIDATION_WORKS, TEST_WORKS) for e in child.pieces(s)]
    assert held  # the case is real: some copies are held out
    with pytest.raises(ValueError, match=r"held-out pieces were trained or validated on.*same judge_fraction"):
        check_held_out(child, parent)
    with pytest.warns(UserWarning, match="allow_overlap=True"):
        assert check_held_out(child, parent, allow_overlap=True) == sorted(held)
    assert check_held_out(child, parent.parent / "child") == []  # its own pieces: trained and held out apart
