"""The judge's check of a conditioned run under the evaluation protocol, on a real tiny run."""

import json

import pytest

from tchaikovsky.data.conditions import Conditions
from tchaikovsky.evaluation import control
from tchaikovsky.evaluation.intervals import Rate


def test_controllability_reports_rates_with_n_against_measured_chance(conditioned_run):
    report = control.controllability(conditioned_run, role="validation", n_per_value=3, num_tokens=24,
                                     min_pieces=1, progress=False)
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


def test_test_role_uses_other_works_and_seeds(conditioned_run):
    test = control.controllability(conditioned_run, role="test", n_per_value=2, num_tokens=24, min_pieces=1,
                                   write=False, progress=False)
    assert test["settings"]["seeds"] == [1_000_000, 1_000_001] and test["settings"]["held_out_split"] == "judge_test"
    with pytest.raises(ValueError, match="evaluation role 'train'"):
        control.controllability(conditioned_run, role="train", progress=False)
    with pytest.raises(ValueError, match="fewer than two composer values with >= 50"):
        control.controllability(conditioned_run, min_pieces=50, progress=False)


def test_typical_request_is_the_most_common_training_combination():
    pieces = [{"period": "Baroque", "composer": "Bach", "instrumentation": "voices"}] * 3 + \
        [{"period": "Baroque", "composer": "Bach", "instrumentation": "keyboard"}] + \
        [{"period": "Renaissance", "composer": "Palestrina", "instrumentation": "voices"}]
    cond = Conditions.build(100, pieces)
    assert control.typical(cond, "composer", "Bach") == {"period": "Baroque", "composer": "Bach",
                                                         "instrumentation": "voices"}
    assert control.typical(cond, "instrumentation", "keyboard")["composer"] == "Bach"
    assert control.typical(cond, "composer", "Mozart") == {"composer": "Mozart"}
