"""Regenerated bars on screen: the window around the span, the before/after roll, and the sampler panel's
"regenerate bars" mode driven without a browser (a real tiny FIM-sized model, the real tokenizer and chorales)."""

import jax
import numpy as np
import pytest
import symusic

from tchaikovsky.config import ModelConfig, SampleConfig
from tchaikovsky.generate.bars import piece_bars
from tchaikovsky.generate.infill import infill
from tchaikovsky.model import build
from tchaikovsky.render import infill_panel, infill_view, widgets


@pytest.fixture(scope="module")
def fim_model(bach):
    return build(ModelConfig(vocab_size=len(bach.tok) + 4, context=256, d_model=32, n_layers=1, n_heads=2),
                 jax.random.key(0))


def errors(panel) -> str:
    return "".join(o["text"] for o in panel.output.outputs if o.get("name") == "stderr")


def outside(score, n_tracks: int, lo: float, hi: float) -> list[tuple]:
    return sorted((i, n.time, n.duration, n.pitch, n.velocity) for i, t in enumerate(score.tracks[:n_tracks])
                  for n in t.notes if not lo <= n.time < hi)


def test_the_window_around_the_span_is_bounded():
    assert infill_view.around((10.0, 14.0), 30.0) == (0.0, 30.0)  # centred would start before 0
    assert infill_view.around((100.0, 104.0), 30.0) == (87.0, 117.0)  # centred
    assert infill_view.around((100.0, 200.0), 30.0) == (98.0, 128.0)  # a long span: opens 2 s before it
    assert infill_view.around((100.0, 104.0), 30.0, end=110.0) == (80.0, 110.0)  # not past the piece


def test_the_window_keeps_only_the_notes_sounding_in_it(bach):
    """The roll draws the window's notes only (a 30-minute piece must not draw all of them), on every symusic the
    requirements admit (``notes.filter(inplace=True)`` did nothing on 0.5)."""
    score = symusic.Score(bach.pieces[0].path).to("second")
    sounding = [(n.time, n.pitch) for t in score.tracks for n in t.notes if n.time < 8.0 and n.end > 4.0]
    window = infill_view._window_notes(bach.pieces[0].path, 4.0, 8.0)
    kept = [(n.time, n.pitch) for t in window.tracks for n in t.notes]
    assert 0 < len(kept) < score.note_num() and sorted(kept) == sorted(sounding)


@pytest.mark.filterwarnings("ignore:bar")
def test_the_roll_shows_the_same_window_before_and_after(bach, fim_model):
    (r,) = infill(fim_model, bach.tok, bach.pieces[0].path, (3, 4), SampleConfig(num_tokens=64))
    fig = infill_view.infill_roll(r.original, r, window_seconds=12.0)
    top, bottom = fig.axes
    assert top.get_xlim() == bottom.get_xlim() and np.isclose(np.diff(top.get_xlim())[0], 12.0)
    assert top.get_ylim() == bottom.get_ylim()
    start, end = r.seconds()
    assert top.get_xlim()[0] <= start < end <= top.get_xlim()[1]


@pytest.mark.filterwarnings("ignore:bar")
def test_the_panel_regenerates_bars_of_the_picked_or_last_piece(bach, fim_model, tmp_path):
    pieces = [p.path for p in bach.pieces[:2]]
    panel = widgets.sampler_panel(fim_model, bach.tok, tmp_path, pieces=pieces, preview_seconds=4.0,
                                  config=SampleConfig(num_tokens=128, top_p=0.95))
    c = panel.controls
    assert c["mode"].layout.display is None and c["bars"].layout.display == "none"
    c["mode"].value = infill_panel.REGENERATE
    assert c["bars"].layout.display is None and c["prompt_bars"].layout.display == "none"
    assert c["best_of"].layout.display is None and c["best_of"].value == 1
    assert panel.generate() is None and "nothing to regenerate yet" in errors(panel)  # nothing picked or made
    c["prompt"].value, c["bars"].value, c["length"].value = pieces[0], "2-3", 128
    cell = panel.generate()
    assert cell is not None and cell["bars"] == (2, 3), errors(panel)
    assert cell["midi_path"].exists() and cell["png_path"].exists() and panel.results[-1] is cell
    original, new = symusic.Score(str(pieces[0])), symusic.Score(str(cell["midi_path"]))
    pb = piece_bars(bach.tok, original)
    lo, hi = pb.lines[1] - pb.grid / 2, pb.lines[3] - pb.grid / 2
    assert outside(new, len(original.tracks), lo, hi) == outside(original, len(original.tracks), lo, hi)
    kinds = [k for o in panel.output.outputs if o["output_type"] == "display_data" for k in o["data"]]
    assert "image/png" in kinds and "text/html" in kinds
    n = pb.n_bars
    c["bars"].value = f"{n}-{n + 2}"
    assert panel.generate() is None and f"has {n} bar(s)" in errors(panel)
    c["prompt"].value, c["bars"].value = widgets.UNCONDITIONAL, "1"  # the last piece the panel made
    again = panel.generate()
    assert again is not None and again["bars"] == (1, 1) and len(again["result"].original.tracks) > len(
        original.tracks)  # the regenerated piece itself, with its regenerated track
    assert again["result"].prompt[0] == len(bach.tok)  # Fill_prefix first: the panel's default order, PSM
    assert np.isnan(again["result"].lead_bits)  # best of 1: plain sampling, nothing ranked
    c["prompt"].value, c["bars"].value, c["best_of"].value, c["seed"].value = pieces[0], "2-3", 3, 7
    best = panel.generate()
    assert best is not None and not np.isnan(best["result"].lead_bits), errors(panel)  # ranked (inf: none closed)
    want = infill(fim_model, bach.tok, pieces[0], "2-3", SampleConfig(num_tokens=128, top_p=0.95), seeds=7,
                  temperatures=c["temperature"].value, rerank=3)[0]
    assert best["result"].rank == want.rank and (best["result"].middle == want.middle).all()  # the panel's 3 reach it
    spm = widgets.sampler_panel(fim_model, bach.tok, tmp_path, pieces=pieces, preview_seconds=4.0,
                                config=SampleConfig(num_tokens=128, top_p=0.95), fim_order="spm")
    spm.controls["mode"].value, spm.controls["bars"].value = infill_panel.REGENERATE, "2-3"
    spm.controls["prompt"].value = pieces[0]
    cell = spm.generate()
    assert cell is not None and cell["result"].prompt[0] == len(bach.tok) + 1, errors(spm)  # Fill_suffix first
    with pytest.raises(ValueError, match="orders are psm, spm"):
        widgets.sampler_panel(fim_model, bach.tok, tmp_path, fim_order="suffix first")


def test_the_mode_is_hidden_for_a_model_without_the_sentinels(bach, tmp_path):
    plain = build(ModelConfig(vocab_size=len(bach.tok), context=64, d_model=32, n_layers=1, n_heads=2),
                  jax.random.key(0))
    panel = widgets.sampler_panel(plain, bach.tok, tmp_path)
    assert panel.controls["mode"].layout.display == "none" and panel.controls["bars"].layout.display == "none"
