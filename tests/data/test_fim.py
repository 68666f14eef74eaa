"""Fill-in-the-middle training windows (``data.fim``, ``Shards.batch(fim_rate=...)``) on the real Bach shards: the
reorder keeps every token, cuts at bar lines of the window's first piece, and is a pure function of (seed, step)."""

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from tchaikovsky.config import TrainConfig
from tchaikovsky.data import fim
from tchaikovsky.data import shards as shards_lib
from tchaikovsky.data.conditions import Conditions
from tchaikovsky.data.tokenizer import base_tokens, special_ids

SEQ = 255  # windows of 256 tokens: several bars each, so most rows have two cut points


@pytest.fixture(scope="module")
def conditioned(bach, tmp_path_factory):
    pieces = [replace(p, composer=["Johann Sebastian Bach", None][i % 2], period="Baroque")
              for i, p in enumerate(bach.pieces)]
    cond = Conditions.build(len(bach.tok), pieces)
    return shards_lib.Shards(shards_lib.build_shards(bach.tok, pieces, tmp_path_factory.mktemp("fim") / "shards",
                                                     conditions=cond))


def parts(window, fill, rest=False):
    """(before, prefix, suffix, middle) of a reordered window (and what follows ``<Fill_end>``, with ``rest``)."""
    w = list(window)
    p, s, m, e = (w.index(t) for t in (fill.prefix, fill.suffix, fill.middle, fill.end))
    return (w[:p], w[p + 1 : s], w[s + 1 : m], w[m + 1 : e]) + ((w[e + 1 :],) if rest else ())


def check_window(row, plain, fill, opens_bar, eos, pinned):
    """``row`` is ``plain`` reordered as the module docstring of data.fim says."""
    W, n = len(plain), len(plain) - pinned - 4
    src = list(plain[pinned : pinned + n])
    assert len(row) == W
    assert Counter(row.tolist()) == Counter(plain[: pinned + n].tolist()) + Counter(fill.ids().tolist())
    assert list(fim.reading_order(row, fill)) == list(plain[: pinned + n])  # invertible
    before, prefix, suffix, middle, rest = parts(row, fill, rest=True)
    assert before == list(plain[:pinned])  # the conditions stay first
    i, j, k = len(prefix), len(prefix) + len(middle), len(prefix) + len(middle) + len(suffix)
    assert prefix == src[:i] and middle == src[i:j] and suffix == src[j:k] and rest == src[k:]
    assert not rest or opens_bar[src[k]] or src[k] == eos  # the suffix ends at a bar line, the EOS or the source's end
    assert opens_bar[src[i]] and middle  # the middle starts a bar: one or more whole bars
    after = plain[pinned + j]  # the token after the middle in the source (the suffix's first, or the first dropped)
    assert opens_bar[after] or after == eos  # the middle ends where a bar begins, or where the piece ends
    assert eos not in prefix + middle  # cut within the window's first piece


def test_fim_windows_hold_the_source_and_the_sentinels_cut_at_bar_lines(bach):
    sh, tok = bach.shards, bach.tok
    fill, eos = fim.Fill(sh.vocab_size), special_ids(tok)["eos"]
    plain = sh.batch(7, 32, SEQ, seed=3)
    mixed = sh.batch(7, 32, SEQ, seed=3, fim_rate=1.0, fill=fill)
    reordered = [r for r in range(32) if not np.array_equal(mixed[r], plain[r])]
    assert len(reordered) >= 24  # windows with fewer than two cut points stay as they are
    for r in range(32):
        if r in reordered:
            check_window(mixed[r], plain[r], fill, sh.opens_bar, eos, pinned=0)
        else:
            assert len(fim.cut_points(plain[r], SEQ + 1 - 4, sh.opens_bar, eos)) < 2
    # the table of bar openers is the tokenizer's: ids whose first base token is a Bar
    assert sh.opens_bar.tolist() == [bool(b) and b[0].startswith("Bar_") for b in base_tokens(tok)]
    some = [parts(mixed[r], fill) for r in reordered]
    assert any(p == [] for _, p, _, _ in some) or any(s for _, _, s, _ in some)  # prefixes and suffixes vary
    # <Fill_end> lands anywhere, not only last: the model learns to end a middle where its bars end
    ends = [list(mixed[r]).index(fill.end) for r in reordered]
    assert sum(e == SEQ for e in ends) < len(ends) // 2 and len(set(ends)) >= len(ends) // 3


def test_fim_windows_are_a_pure_function_of_seed_and_step(bach):
    sh, fill = bach.shards, fim.Fill(bach.shards.vocab_size)
    a = sh.batch(5, 16, SEQ, seed=1, fim_rate=0.5, fill=fill)
    assert np.array_equal(a, sh.batch(5, 16, SEQ, seed=1, fim_rate=0.5, fill=fill))  # a resumed run sees the same
    assert not np.array_equal(a, sh.batch(6, 16, SEQ, seed=1, fim_rate=0.5, fill=fill))
    halves = [sh.batch(5, 16, SEQ, seed=1, fim_rate=0.5, fill=fill, process_index=i, process_count=2) for i in (0, 1)]
    assert np.array_equal(np.concatenate(halves), a)  # each process's rows are its share of the same batch
    n = sum(fill.prefix in row for row in a)
    assert 2 <= n <= 14  # about half, of 16
    assert np.array_equal(sh.batch(5, 16, SEQ, seed=1), sh.batch(5, 16, SEQ, seed=1, fim_rate=0.0, fill=fill))


def test_conditions_stay_first_in_fim_windows(bach, conditioned):
    sh, cond = conditioned, conditioned.conditions
    fill, eos = fim.Fill(cond.vocab_size), special_ids(bach.tok)["eos"]
    plain = sh.batch(2, 32, SEQ, seed=0)
    mixed = sh.batch(2, 32, SEQ, seed=0, fim_rate=1.0, fill=fill)
    changed = [r for r in range(32) if not np.array_equal(mixed[r], plain[r])]
    assert len(changed) >= 24
    for r in changed:
        assert cond.is_condition(plain[r][:3]).all() and not cond.is_condition(plain[r][3])
        check_window(mixed[r], plain[r], fill, sh.opens_bar, eos, pinned=3)
        assert mixed[r][3] == fill.prefix
    # condition dropout still reaches the conditions, wherever they sit
    dropped = sh.batch(2, 32, SEQ, seed=0, fim_rate=1.0, fill=fill, condition_dropout=1.0)
    assert not np.isin(dropped[:, :3], [cond.ids()["Composer_Johann Sebastian Bach"]]).any()


def test_psm_on_a_hand_made_window():
    opens = np.zeros(12, bool)
    opens[1] = True  # id 1 opens a bar; 2 is EOS; the sentinels are 12..15
    fill = fim.Fill(12)
    row = np.asarray([5, 1, 6, 7, 1, 8, 2, 9, 1, 9, 9, 9])  # W = 12: the source is the first 8 ids
    assert fim.cut_points(row, 8, opens, eos=2).tolist() == [1, 4, 6]  # up to the first EOS
    out = fim.psm(row, (0.0, 0.0), pinned=0, opens_bar=opens, eos=2, fill=fill)
    assert out.tolist() == [12, 5, 13, 1, 8, 2, 9, 14, 1, 6, 7, 15]
    out = fim.psm(row, (0.99, 0.99), pinned=0, opens_bar=opens, eos=2, fill=fill)  # cut 4 and the EOS
    assert out.tolist() == [12, 5, 1, 6, 7, 13, 2, 9, 14, 1, 8, 15]
    row = np.asarray([1, 6, 6, 6, 1, 6, 6, 6, 1, 9, 9, 9])  # position 8 opens a bar: an empty suffix
    out = fim.psm(row, (0.5, 0.5), pinned=0, opens_bar=opens, eos=2, fill=fill)  # cuts 4 and 8
    assert out.tolist() == [12, 1, 6, 6, 6, 13, 14, 1, 6, 6, 6, 15]
    out = fim.psm(row, (0.99, 0.0), pinned=0, opens_bar=opens, eos=2, fill=fill)  # cuts 0 and 8: both sides empty
    assert out.tolist() == [12, 13, 14, 1, 6, 6, 6, 1, 6, 6, 6, 15]
    row = np.asarray([5, 1, 6, 7, 1, 8, 2, 9, 1, 9, 9, 9])
    out = fim.psm(row, (0.0, 0.0, 0.0), pinned=0, opens_bar=opens, eos=2, fill=fill)  # cuts 1, 4; suffix to 4
    assert out.tolist() == [12, 5, 13, 14, 1, 6, 7, 15, 1, 8, 2, 9]  # the rest follows <Fill_end>
    assert fim.reading_order(out, fill).tolist() == row[:8].tolist()
    one = np.asarray([5, 1, 6, 7, 6, 8, 6, 9, 9, 9, 9, 9])
    assert np.array_equal(fim.psm(one, (0.5, 0.5), pinned=0, opens_bar=opens, eos=2, fill=fill), one)
    with pytest.raises(ValueError, match="once each, in PSM or SPM order"):
        fim.reading_order(one, fill)


def test_spm_puts_the_suffix_first_and_the_prefix_against_the_middle():
    opens = np.zeros(12, bool)
    opens[1] = True
    fill = fim.Fill(12)
    row = np.asarray([5, 1, 6, 7, 1, 8, 2, 9, 1, 9, 9, 9])
    psm = fim.psm(row, (0.0, 0.0, 0.0), pinned=0, opens_bar=opens, eos=2, fill=fill)  # cuts 1, 4; suffix to 4
    spm = fim.psm(row, (0.0, 0.0, 0.0), pinned=0, opens_bar=opens, eos=2, fill=fill, spm=True)
    assert spm.tolist() == [13, 12, 5, 14, 1, 6, 7, 15, 1, 8, 2, 9]  # the same cuts, the sides swapped
    spm = fim.psm(row, (0.0, 0.0), pinned=0, opens_bar=opens, eos=2, fill=fill, spm=True)  # suffix to the end
    assert spm.tolist() == [13, 1, 8, 2, 9, 12, 5, 14, 1, 6, 7, 15]
    pinned = np.asarray([20, 21, 5, 1, 6, 7, 1, 8, 2, 9, 1, 9])  # two condition ids stay first
    spm = fim.psm(pinned, (0.0, 0.0, 0.0), pinned=2, opens_bar=np.append(opens, np.zeros(10, bool)), eos=2,
                  fill=fill, spm=True)
    assert spm.tolist()[:3] == [20, 21, 13]
    for window, source in ((psm, row[:8]), (spm, pinned[:8])):
        assert fim.reading_order(window, fill).tolist() == source.tolist()
    with pytest.raises(ValueError, match="PSM or SPM"):  # the middle before a side: neither order
        fim.reading_order(np.asarray([12, 5, 14, 1, 13, 6, 15]), fill)
    assert fim.order_of({"train_config": {"fim_rate": 0.5, "fim_spm": 0.5}}) == "spm"
    assert fim.order_of({"train_config": {"fim_rate": 0.5}}) == fim.order_of(None) == "psm"


def test_spm_windows_share_the_psm_cuts_and_keep_the_conditions_first(bach, conditioned):
    sh, cond = conditioned, conditioned.conditions
    fill, eos = fim.Fill(cond.vocab_size), special_ids(bach.tok)["eos"]
    plain = sh.batch(4, 32, SEQ, seed=1)
    psm = sh.batch(4, 32, SEQ, seed=1, fim_rate=0.5, fill=fill)
    both = sh.batch(4, 32, SEQ, seed=1, fim_rate=0.5, fim_spm=0.5, fill=fill)
    reordered = [r for r in range(32) if fill.middle in psm[r]]
    assert reordered == [r for r in range(32) if fill.middle in both[r]] and len(reordered) >= 8
    in_spm = [r for r in reordered if both[r][3] == fill.suffix]
    assert 0 < len(in_spm) < len(reordered)  # about half of them in SPM order, drawn apart from the cuts
    for r in reordered:
        assert cond.is_condition(both[r][:3]).all()
        assert fim.reading_order(both[r], fill).tolist() == fim.reading_order(psm[r], fill).tolist()
        if r in in_spm:  # the same cuts as the PSM window, its sides swapped
            check_window(psm[r], plain[r], fill, sh.opens_bar, eos, pinned=3)
            (p,), (s,), (m,) = (np.flatnonzero(both[r] == t) for t in (fill.prefix, fill.suffix, fill.middle))
            _, prefix, suffix, _ = parts(psm[r], fill)
            assert both[r][s + 1 : p].tolist() == suffix and both[r][p + 1 : m].tolist() == prefix
        else:
            assert np.array_equal(both[r], psm[r])


def test_bad_fim_settings_are_clear_errors(bach):
    sh = bach.shards
    with pytest.raises(ValueError, match=r"fim_rate=1.5 must be"):
        sh.batch(0, 4, 64, fim_rate=1.5, fill=fim.Fill(sh.vocab_size))
    with pytest.raises(ValueError, match="needs the model's sentinels"):
        sh.batch(0, 4, 64, fim_rate=0.5)
    with pytest.raises(ValueError, match="needs the model's sentinels"):
        sh.batch(0, 4, 64, fim_rate=0.5, fill=fim.Fill(sh.vocab_size + 3))
    with pytest.raises(ValueError, match="fim_rate=-0.1 must be a number in"):
        TrainConfig(fim_rate=-0.1)
    with pytest.raises(ValueError, match="fim_spm=2 must be a number in"):
        TrainConfig(fim_rate=0.5, fim_spm=2)
    with pytest.raises(ValueError, match=r"fim_spm=1.5 must be in \[0, 1\]"):
        sh.batch(0, 4, 64, fim_rate=0.5, fim_spm=1.5, fill=fim.Fill(sh.vocab_size))
