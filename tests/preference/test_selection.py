"""Selecting preference pairs on hand-made samples whose answers are known: filters, top/bottom, pairs, lengths."""

import math

import pytest

from tchaikovsky.preference.selection import SelectionConfig, length_report, select_pairs


def sample(i, score, *, length=100, invalid=0.0, sim=0.5):
    return {"id": i, "score": score, "length": length, "invalid_share": invalid, "max_similarity": sim}


def hand_made():
    bad = [sample(0, 0.99, sim=0.97), sample(1, 0.9, invalid=0.1), sample(2, 0.95, length=5),
           sample(3, float("nan"))]
    good = [sample(4 + j, s) for j, s in enumerate([0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])]
    return bad + good


def test_filters_drop_what_they_should_with_the_first_reason():
    sel = select_pairs(hand_made(), SelectionConfig(top_fraction=0.25, min_length=16))
    assert sel.dropped == {0: "copy", 1: "malformed", 2: "too short", 3: "no score"}
    assert sel.stats["n"] == 12 and sel.stats["n_kept"] == 8
    assert sel.stats["dropped"] == {"copy": 1, "malformed": 1, "too short": 1, "no score": 1}
    # a verbatim copy of training tokens (originality.flag_copies) is a copy whatever the scorer says
    assert select_pairs([{**sample(0, 0.9), "copied": True}]).dropped == {0: "copy"}
    # a malformed copy is dropped as malformed (the grammar check comes first)
    assert select_pairs([sample(0, 0.9, invalid=0.5, sim=0.99)]).dropped == {0: "malformed"}
    # the thresholds are inclusive of what they allow
    sel = select_pairs([sample(0, 0.9, invalid=0.02, sim=0.95, length=16), sample(1, 0.1, length=16)],
                       SelectionConfig(max_invalid_share=0.02, min_length=16, top_fraction=0.5))
    assert sel.dropped == {} and sel.pairs == [(0, 1)]


def test_top_and_bottom_and_pairs_on_a_hand_made_set():
    sel = select_pairs(hand_made(), SelectionConfig(top_fraction=0.25))
    assert sel.chosen == [4, 5] and sel.rejected == [11, 10]  # k = 0.25 * 8 kept; best first, worst first
    assert sel.pairs == [(4, 11), (4, 10), (5, 11), (5, 10)]  # every chosen and rejected before any repeats
    assert sel.stats["score_chosen"] == pytest.approx(0.75) and sel.stats["score_rejected"] == pytest.approx(0.15)
    capped = select_pairs(hand_made(), SelectionConfig(top_fraction=0.25, max_pairs=3))
    assert capped.pairs == [(4, 11), (4, 10), (5, 11)] and capped.stats["n_pairs"] == 3
    # NotaGen's 10%: k = round(0.8) = 1 of 8 kept
    assert select_pairs(hand_made()).pairs == [(4, 11)]


def test_few_samples_never_make_a_sample_both_chosen_and_rejected():
    assert select_pairs([sample(0, 0.5)], SelectionConfig(top_fraction=0.5)).pairs == []
    sel = select_pairs([sample(0, 0.5), sample(1, 0.9), sample(2, 0.1)], SelectionConfig(top_fraction=0.5))
    assert sel.chosen == [1] and sel.rejected == [2] and sel.pairs == [(1, 2)]  # k = min(2, 3 // 2)
    assert select_pairs([], SelectionConfig()).stats["n_pairs"] == 0


def test_length_matching_and_the_length_report():
    samples = hand_made()
    samples[5]["length"] = 200  # id 5, the second best, is twice as long as the rest
    matched = select_pairs(samples, SelectionConfig(top_fraction=0.25, length_tolerance=0.25))
    assert matched.pairs == [(4, 11), (4, 10)]  # 5 pairs with nothing within 25% of its length
    assert matched.stats["n_pairs_unmatched"] == 4
    assert matched.stats["len_chosen"] == 150 and matched.stats["len_pair_chosen"] == 100
    free = select_pairs(samples, SelectionConfig(top_fraction=0.25, length_tolerance=None))
    assert len(free.pairs) == 4 and free.pair_lengths[2] == (200, 100)
    report = length_report([free, matched])
    assert report["pairs"] == 6
    assert report["len_difference"] == pytest.approx((0 + 0 + 100 + 100 + 0 + 0) / 6)
    assert report["chosen_longer_share"] == pytest.approx(2 / 6)
    # score and length: only id 5 is long and it scores high: a positive rank correlation among the kept
    assert matched.stats["score_length_spearman"] > 0
    assert math.isnan(length_report([])["len_chosen"])


def test_config_is_checked():
    with pytest.raises(ValueError, match="top_fraction"):
        SelectionConfig(top_fraction=0.7)
    with pytest.raises(ValueError, match="length_tolerance"):
        SelectionConfig(length_tolerance=2.0)
