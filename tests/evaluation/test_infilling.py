"""Infilling measures on a tiny FIM-sized run: real shards with held-out works, the real tokenizer and a real
(untrained) model; the seam measure on a hand-built score."""

import dataclasses
import math

import jax
import pytest
import symusic

from tchaikovsky.config import ModelConfig
from tchaikovsky.data import shards as shards_lib
from tchaikovsky.data import tokenizer as tok_lib
from tchaikovsky.data.conditions import Conditions
from tchaikovsky.data.splits import held_out_roles
from tchaikovsky.evaluation.infill import (choose_order, infilling_table, measure_infilling, order_table, seam,
                                           suffix_sweep, suffix_table)
from tchaikovsky.model import build
from tchaikovsky.training.checkpoint import export_model


@pytest.fixture(scope="module")
def fim_run(bach, tmp_path_factory, work_names):
    """The fixture chorales as two composers' works with held-out validation and test works, conditioned shards,
    and an untrained model with the conditions' and the 4 fill sentinels' rows, saved as a run's weights."""
    works = work_names(["judge", "judge", "judge_test", "judge_test"] + [None] * 8)
    pieces = [dataclasses.replace(p, composer=["Johann Sebastian Bach", "Claudio Monteverdi"][i % 2],
                                  period="Baroque", instrumentation="voices", work=works[i])
              for i, p in enumerate(bach.pieces)]
    run = tmp_path_factory.mktemp("fim") / "run"
    cond = Conditions.build(len(bach.tok), pieces)
    tok_lib.save_tokenizer(bach.tok, run / "tokenizer.json")
    cond.save(run)
    shards_lib.build_shards(bach.tok, pieces, run / "shards", conditions=cond, held_out=held_out_roles(0.5))
    cfg = ModelConfig(vocab_size=cond.vocab_size + 4, context=256, d_model=32, n_layers=1, n_heads=2)
    meta = {"model_config": dataclasses.asdict(cfg), "tokenizer_hash": tok_lib.tokenizer_hash(bach.tok), "step": 0}
    export_model(run / "checkpoints" / "model.eqx", build(cfg, jax.random.key(0)), meta)
    return run


def test_seam_measures_the_top_line_across_a_bar_line():
    score = symusic.Score(480)
    track = symusic.Track("t", 0, False)
    for time, pitch in [(0, 60), (0, 67), (960, 64), (960, 72), (1920 + 240, 62), (2400, 65)]:
        track.notes.append(symusic.Note(time, 240, pitch, 80))
    score.tracks.append(track)
    assert seam(score, 1920) == (10.0, 2.5)  # top line 72 (beat 2) -> 62 (beat 4.5)
    assert all(math.isnan(x) for x in seam(score, 0)) and all(math.isnan(x) for x in seam(score, 9999))


def test_measure_infilling_gives_every_figure_with_its_n(fim_run):
    res = measure_infilling(fim_run, role="test", bars=(2, 2), of_bars=4, n_pieces=2, seeds=2, temperature=1.0,
                            num_tokens=96)
    n = res["n_pieces"]
    assert 1 <= n <= 2 and n + sum(res["skipped"].values()) <= 2  # the test works' pieces
    bits = res["bits_per_note"]
    assert bits["fim"]["n"] == bits["left_to_right"]["n"] == bits["difference"]["n"] == n
    assert math.isfinite(bits["fim"]["mean"]) and bits["fim"]["mean"] > 0 and bits["fim"]["lo"] <= bits["fim"]["hi"]
    assert bits["p_end"]["n"] == n and 0 < bits["p_end"]["mean"] < 1
    # the control: another piece's suffix in place of the real one (none with a single piece)
    assert bits["other_suffix"]["n"] == bits["suffix_read"]["n"] == (n if n > 1 else 0)
    if n > 1:
        assert math.isclose(bits["suffix_read"]["mean"], bits["other_suffix"]["mean"] - bits["fim"]["mean"])
    assert res["oa"]["n"] == 2 * n and set(res["oa"]["features"]) >= {"pitch_range", "duration_histogram"}
    assert res["ended"]["n"] == 2 * n
    for side in ("start", "end"):
        for measure in ("pitch_jump", "onset_gap"):
            m = res["seams"][side][measure]
            assert m["real"]["n"] <= n and m["regenerated"]["n"] <= 2 * n and m["difference"]["n"] <= 2 * n
    assert res["seams"]["start"]["pitch_jump"]["real"]["n"] == n  # every piece has notes on both sides of bar 2
    assert res["settings"]["num_tokens"] == 96 and res["settings"]["role"] == "test"
    # the suffix sweep: all that fits is the FIM figure above, no suffix at all the FIM order around an empty one
    sweep = suffix_sweep(fim_run, role="test", bars=(2, 2), of_bars=4, n_pieces=2, keep=(0, 1, None))
    assert [row["bars"] for row in sweep["rows"]] == [0, 1, None] and sweep["n_pieces"] == n
    assert math.isclose(sweep["rows"][-1]["fim"]["mean"], bits["fim"]["mean"], rel_tol=1e-6)
    assert math.isclose(sweep["left_to_right"]["mean"], bits["left_to_right"]["mean"], rel_tol=1e-6)
    assert sweep["rows"][0]["fim"]["mean"] != bits["fim"]["mean"]  # without its suffix the middle reads otherwise
    assert "| 1 bar(s) |" in suffix_table(sweep) and "| all that fits |" in suffix_table(sweep)
    assert all(len(row["by_bar"]) == 1 and row["by_bar"][0]["n"] == n for row in sweep["rows"])  # the span's 1 bar
    assert sweep["rows"][0]["by_bar"][0]["mean"] != sweep["rows"][-1]["by_bar"][0]["mean"]
    assert "| bar 2: minus left to right (bits) |" in suffix_table(sweep)
    assert res["settings"]["order"] == sweep["settings"]["order"] == "psm"  # the run's: trained without fim_spm
    # the same parts in SPM order: the same left-to-right figure, another FIM one; validation chooses between them
    spm = suffix_sweep(fim_run, role="test", bars=(2, 2), of_bars=4, n_pieces=2, keep=(None,), order="spm")
    assert math.isclose(spm["left_to_right"]["mean"], sweep["left_to_right"]["mean"], rel_tol=1e-6)
    assert spm["rows"][0]["fim"]["mean"] != sweep["rows"][-1]["fim"]["mean"]
    chosen = choose_order(fim_run, role="test", bars=(2, 2), of_bars=4, n_pieces=2)
    both = {o: chosen["orders"][o]["mean"] for o in ("psm", "spm")}
    assert chosen["chosen"] == min(both, key=both.get) and both["spm"] == spm["rows"][0]["fim"]["mean"]
    assert chosen["spm_minus_psm"]["mean"] == pytest.approx(both["spm"] - both["psm"])
    assert "| SPM - PSM (paired) |" in order_table(chosen)
    table = infilling_table(res)
    assert "| bits per note of the real middle |" in table and "another piece's suffix" in table and "Fill_end right after" in table and "at the first seam" in table and "Bar 2 of 4" in table


def test_conditioned_infilling_judges_the_regenerated_bars_against_measured_chance(fim_run):
    from tchaikovsky.evaluation.infill_judge import conditioned_infilling, conditioned_table
    from tchaikovsky.evaluation.intervals import Rate

    res = conditioned_infilling(fim_run, bars=(2, 2), of_bars=4, n_pieces=2, seeds=2, min_pieces=1)
    assert [t["value"] for t in res["table"]] == ["Claudio Monteverdi", "Johann Sebastian Bach"]
    n = 2 * res["n_pieces"]
    for t in res["table"]:  # every regenerated span is judged (no notes: a miss), asked and "any" alike
        asked, chance = Rate.from_dict(t["conditioned"]), Rate.from_dict(t["chance"])
        assert asked.n == chance.n == n and t["lift"]["diff"] == pytest.approx(asked.value - chance.value)
    chances = [Rate.from_dict(t["chance"]).value for t in res["table"]]
    assert sum(chances) <= 1.0 + 1e-9  # the "any" spans are heard as one composer each (or none)
    assert "| **all** |" in conditioned_table(res)
    with pytest.raises(ValueError, match="judge"):
        conditioned_infilling(fim_run, bars=(2, 2), of_bars=4, n_pieces=2, min_pieces=50)


@pytest.mark.filterwarnings("ignore:bars 2")
def test_best_of_n_infilling_is_chosen_on_validation_and_compared_seed_by_seed_on_test(fim_run):
    from tchaikovsky.evaluation.infill_lead import compare_rerank, lead_in_reference, lead_in_table

    kw = dict(bars=(2, 2), of_bars=4, n_pieces=2, seeds=1, temperature=1.0)
    plain = measure_infilling(fim_run, role="test", **kw)
    ranked = measure_infilling(fim_run, role="test", rerank=3, **kw)
    assert ranked["settings"]["rerank"] == 3 and ranked["n_pieces"] == plain["n_pieces"]
    res = lead_in_reference(fim_run, n=3, plain_test=plain, **kw)
    val = res["validation"]
    assert res["chosen"] == (3 if val["gap"]["ranked"] < val["gap"]["plain"] else 1) and val["role"] == "validation"
    assert res["test"] == compare_rerank(plain, ranked)  # the same pieces and seeds give the same figures
    last = res["test"]["seams"]["pitch jump (semitones) at the last seam"]
    p, r = (x["seams"]["end"]["pitch_jump"]["per_regeneration"] for x in (plain, ranked))
    pairs = [b - a for a, b in zip(p, r) if math.isfinite(a) and math.isfinite(b)]
    assert last["difference"]["n"] == len(pairs) and last["difference"]["mean"] == pytest.approx(
        sum(pairs) / len(pairs))  # ranked - plain, regeneration by regeneration
    assert last["plain"] == plain["seams"]["end"]["pitch_jump"]["regenerated"]
    closed = res["test"]["ended"]
    assert closed["difference"]["n"] == closed["plain"]["n"] == len(plain["ended"]["per_regeneration"])
    assert closed["difference"]["mean"] == pytest.approx(closed["ranked"]["rate"] - closed["plain"]["rate"])
    with pytest.raises(ValueError, match="rerank 1"):
        compare_rerank(ranked, plain)
    with pytest.raises(ValueError, match="same run, role, pieces and seeds"):
        compare_rerank(plain, {**ranked, "settings": {**ranked["settings"], "seeds": 2}})
    table = lead_in_table(res)
    assert "| pitch jump (semitones) at the last seam |" in table and "best of 3 - plain (paired)" in table
    assert "chosen" in table and "| middles closed by the model |" in table


def test_the_token_by_token_diagnosis_runs_on_a_run(fim_run, capsys):
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).parents[2] / "scripts" / "infill_where.py"
    argv, sys.argv = sys.argv, [str(script), "--run", str(fim_run), "--role", "test", "--pieces", "2", "--top", "2",
                           "--bars", "2-3", "--of-bars", "4"]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
    out = capsys.readouterr().out
    n = int(out.split(" pieces of the test role")[0].split()[-1])
    assert 1 <= n <= 2 and out.count("p(Fill_end) at the line opening") == 2  # bar 3, after bar 3
    assert "the token opening bar 3" in out and f"({n} tokens)" in out  # one opening token per piece
    assert len([line for line in out.splitlines() if line.startswith("| ") and line[2].isdigit()]) == 2
