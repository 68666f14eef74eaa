"""The interactive sampler panel, driven without a browser: its Generate callback runs a real (tiny, untrained)
model, the real tokenizer, FluidSynth when present, and appends to the real Output widget."""

import datetime

import equinox as eqx
import ipywidgets as W
import jax
import numpy as np
import pytest
import symusic

from tchaikovsky.config import ModelConfig, SampleConfig
from tchaikovsky.data import tokenizer as tok_lib
from tchaikovsky.generate import prompts, scores
from tchaikovsky.model import GPT
from tchaikovsky.render import audio, widgets


@pytest.fixture(scope="module")
def model(bach):
    return GPT(ModelConfig(vocab_size=len(bach.tok), context=64, d_model=32, n_layers=1, n_heads=2),
               key=jax.random.key(0))


def upload(widget, name: str, data: bytes) -> None:
    """Put a file into a FileUpload as a browser upload does: ipywidgets 8 sets ``value`` (a tuple of dicts);
    ipywidgets 7 (Colab) sets ``metadata`` and ``data`` and bumps ``_counter``, which makes its read-only ``value``."""
    if int(W.__version__.split(".")[0]) >= 8:
        widget.value = ({"name": name, "type": "audio/midi", "size": len(data), "content": memoryview(data),
                         "last_modified": datetime.datetime.now(datetime.timezone.utc)},)
    else:
        widget.metadata = [{"name": name, "type": "audio/midi", "size": len(data), "lastModified": 0}]
        widget.data = [data]
        widget._counter += 1


def displayed(panel) -> list[dict]:
    return [o for o in panel.output.outputs if o["output_type"] == "display_data"]


def errors(panel) -> str:
    return "".join(o["text"] for o in panel.output.outputs if o.get("name") == "stderr")


def test_panel_builds_with_the_controls(model, bach, tmp_path):
    pieces = [p.path for p in bach.pieces[:2]]
    panel = widgets.sampler_panel(model, bach.tok, tmp_path, pieces=pieces, temperature=0.8,
                                  config=SampleConfig(num_tokens=256, min_tokens=32, top_p=0.9))
    assert isinstance(panel, W.VBox)
    c = panel.controls
    assert (c["temperature"].min, c["temperature"].max, c["temperature"].value) == (0.0, 2.0, 0.8)
    assert (c["top_p"].min, c["top_p"].max) == (0.5, 1.0)
    assert (c["length"].min, c["length"].max, c["length"].value) == (64, 4096, 256)
    assert (c["min_tokens"].min, c["min_tokens"].max, c["min_tokens"].value) == (0, 256, 32)
    assert c["top_p"].value == 0.9
    c["length"].value = 128
    assert c["min_tokens"].max == 128  # EOS is held back at most the whole length
    assert isinstance(c["seed"], W.IntText) and isinstance(panel.progress, W.IntProgress)
    assert isinstance(c["upload"], W.FileUpload) and c["upload"].accept == ".mid,.midi"
    assert c["chords"].value == "C G Am F"
    values = [v for _, v in c["prompt"].options]
    assert values == [widgets.UNCONDITIONAL, widgets.CHORDS, *pieces, widgets.UPLOAD]
    assert c["chords"].layout.display == "none"  # only the inputs the chosen prompt needs are shown
    c["prompt"].value = widgets.CHORDS
    assert c["chords"].layout.display is None and c["upload"].layout.display == "none"
    c["prompt"].value = pieces[0]
    assert c["prompt_bars"].layout.display is None


def test_generate_writes_samples_and_appends_them(model, bach, tmp_path):
    panel = widgets.sampler_panel(model, bach.tok, tmp_path, pieces=[bach.pieces[0].path])
    c = panel.controls
    c["length"].value = 64
    c["prompt_bars"].value = 2
    midi = tmp_path / "upload.mid"
    scores.motif(["C4", "E4", "G4", "C5"], 1, repeat=2).dump_midi(str(midi))
    upload(c["upload"], "upload.mid", midi.read_bytes())
    has_audio = audio.audio_available()[0]
    cells = []
    for kind in (widgets.UNCONDITIONAL, widgets.CHORDS, widgets.UPLOAD, bach.pieces[0].path):
        c["prompt"].value = kind
        c["seed"].value += 1
        n_before = len(displayed(panel))
        cell = panel.generate()
        assert cell is not None, errors(panel)
        assert cell["midi_path"].is_file() and cell["midi_path"].parent == tmp_path / "samples"
        assert cell["png_path"].is_file()
        has_notes = symusic.Score(str(cell["midi_path"])).note_num() > 0  # an untrained model may write none
        assert has_notes or kind == widgets.UNCONDITIONAL
        if has_audio and has_notes:
            assert cell["wav_path"] is not None and cell["wav_path"].is_file()
        new = displayed(panel)[n_before:]  # show_sample: title, piano roll, player (if audio), links
        assert "image/png" in new[1]["data"] and "text/markdown" in new[0]["data"]
        assert any("<audio" in o["data"].get("text/html", "") for o in new) == (has_audio and has_notes)
        assert panel.progress.description == "done"
        cells.append(cell)
    assert cells[0]["prompt_end"] is None and all(cell["prompt_end"] > 0 for cell in cells[1:])
    assert len({cell["midi_path"] for cell in cells}) == 4 and panel.results == cells
    assert errors(panel) == ""


def test_errors_are_shown_in_the_output_not_raised(model, bach, tmp_path):
    panel = widgets.sampler_panel(model, bach.tok, tmp_path)
    c = panel.controls
    c["prompt"].value = widgets.CHORDS
    c["chords"].value = "C G Hm F"
    assert panel.generate() is None
    assert "unknown chord symbol 'Hm'" in errors(panel) and panel.progress.description == "failed"
    c["prompt"].value = widgets.UPLOAD
    panel.button.click()  # the button's own path: no exception escapes
    assert "no MIDI file uploaded" in errors(panel)
    upload(c["upload"], "broken.mid", b"MThd this is not a MIDI file")
    assert panel.generate() is None
    assert "broken.mid is not a readable MIDI file" in errors(panel)
    upload(c["upload"], "notes.txt", b"hello")
    assert panel.generate() is None
    assert "notes.txt is not a MIDI file" in errors(panel)
    assert not panel.button.disabled and not (tmp_path / "samples").exists()


def test_a_long_prompt_keeps_its_end_as_generate_does(model, bach, tmp_path):
    """The piece continues the LAST ``context`` tokens of a long prompt (what the model saw), and the piano roll's
    prompt boundary is where those end."""
    C = model.config.context
    piece = bach.pieces[0].path
    panel = widgets.sampler_panel(model, bach.tok, tmp_path, pieces=[piece], config=SampleConfig(num_tokens=64))
    panel.controls["prompt"].value = piece
    panel.controls["prompt_bars"].value = 32
    full = prompts.make_prompt(bach.tok, midi=piece, bars=32)
    assert len(full) > 2 * C
    cell = panel.generate()
    assert cell is not None, errors(panel)
    assert f"its last {C} tokens" in "".join(o.get("text", "") for o in panel.output.outputs)
    np.testing.assert_array_equal(cell["ids"][:C], full[-C:])
    kept = tok_lib.decode_ids(bach.tok, full[-C:])
    assert cell["prompt_end"] == pytest.approx(kept.to("second").end())
    notes = lambda score: {(n.time, n.pitch) for t in score.tracks for n in t.notes}  # noqa: E731
    saved = symusic.Score(str(cell["midi_path"]))
    assert notes(kept) and notes(kept) <= notes(saved)  # the piece opens with the prompt's end, not its start


def test_min_tokens_slider_holds_the_end_back(model, bach, tmp_path):
    eos = tok_lib.special_ids(bach.tok)["eos"]
    eager = eqx.tree_at(lambda m: m.head.bias, model, model.head.bias.at[eos].add(50.0))  # ends when it may
    panel = widgets.sampler_panel(eager, bach.tok, tmp_path)
    c = panel.controls
    c["length"].value = 64
    c["min_tokens"].value = 0
    short = panel.generate()
    c["min_tokens"].value = 48
    held = panel.generate()
    assert short is not None and held is not None, errors(panel)
    assert short["n_tokens"] - 1 < 48 <= held["n_tokens"] - 1  # new tokens after [BOS]
    assert held["ids"][-1] == eos and eos not in held["ids"][1:49]


def test_condition_dropdowns_put_the_conditions_in_front_of_the_prompt(bach, tmp_path):
    from tchaikovsky.data.conditions import Conditions

    cond = Conditions.build(len(bach.tok), [bach.pieces[0]]).extended(
        [type(bach.pieces[0])(path=None, rel_path="x", composer="Claudio Monteverdi", period="Renaissance",
                              instrumentation="voices")])
    model = GPT(ModelConfig(vocab_size=cond.vocab_size, context=64, d_model=32, n_layers=1, n_heads=2),
                key=jax.random.key(1))
    panel = widgets.sampler_panel(model, bach.tok, tmp_path, conditions=cond, composer="monteverdi",
                                  config=SampleConfig(num_tokens=32))
    c = panel.controls
    assert c["composer"].value == "Claudio Monteverdi" and c["period"].value == ""  # "" is "any"
    assert [v for _, v in c["composer"].options] == ["", *cond.known("composer")]
    c["instrumentation"].value = "voices"
    cell = panel.generate()
    assert cell is not None, panel.output.outputs
    assert list(cell["ids"][:4]) == cond.prefix(composer="monteverdi", instrumentation="voices") + [bach.tok["BOS_None"]]
    assert not cond.is_condition(cell["ids"][4:]).any()  # the grammar keeps conditions out of the music
    c["period"].value = "Baroque"  # Monteverdi was never Baroque in training: allowed, with a note
    assert panel.generate() is not None
    assert "not seen this combination" in "".join(o.get("text", "") for o in panel.output.outputs)
    # a run without conditions has no dropdowns
    plain = widgets.sampler_panel(GPT(ModelConfig(vocab_size=len(bach.tok), context=64, d_model=32, n_layers=1,
                                                  n_heads=2), key=jax.random.key(0)), bach.tok, tmp_path)
    assert "composer" not in plain.controls


def test_a_conditioned_runs_pieces_say_what_was_asked_and_why_no_judge_once(conditioned_run, tmp_path):
    """The panel of a real conditioned run: each piece captioned (``evaluation.caption``); the run's held-out works
    give the judge too few pieces a composer, and the panel says so once."""
    import shutil

    from tchaikovsky.data.conditions import load_conditions
    from tchaikovsky.training.checkpoint import load_run_model

    run = tmp_path / "run"
    shutil.copytree(conditioned_run, run)
    model, tok, _ = load_run_model(run)
    panel = widgets.sampler_panel(model, tok, run, conditions=load_conditions(run, tok), composer="bach",
                                  config=SampleConfig(num_tokens=32))
    assert panel.generate() is not None and panel.generate() is not None
    text = "".join(o.get("text", "") for o in panel.output.outputs if o.get("name") == "stdout")
    assert text.count("asked: Johann Sebastian Bach, any period, any instrumentation.") == 2
    assert text.count("no judge's verdict under the pieces: ") == 1 and "fewer than two composer values" in text


def test_guidance_slider_reaches_the_sampler(bach, tmp_path):
    import dataclasses

    from tchaikovsky.data.conditions import Conditions
    from tchaikovsky.generate.sampling import generate

    cond = Conditions.build(len(bach.tok), [bach.pieces[0]])
    model = GPT(ModelConfig(vocab_size=cond.vocab_size, context=64, d_model=32, n_layers=1, n_heads=2),
                key=jax.random.key(1))
    config = SampleConfig(num_tokens=64, top_p=0.9, guidance=1.5)
    panel = widgets.sampler_panel(model, bach.tok, tmp_path, conditions=cond, composer="bach", config=config,
                                  seed=3)
    c = panel.controls
    assert c["guidance"].value == 1.5 and c["guidance"] in panel.children  # starts from the config, is shown
    c["guidance"].value = 2.5
    cell = panel.generate()
    assert cell is not None, panel.output.outputs
    prompt = np.asarray(cond.prefix(composer="bach") + [bach.tok["BOS_None"]], np.int32)
    kw = dict(seeds=[3], temperatures=[c["temperature"].value], tok=bach.tok, conditions=cond)
    want = generate(model, prompt, dataclasses.replace(config, guidance=2.5), **kw)[0]
    np.testing.assert_array_equal(cell["ids"], want)
    unguided = generate(model, prompt, dataclasses.replace(config, guidance=1.0), **kw)[0]
    assert not np.array_equal(cell["ids"], unguided)  # the slider's value, not the default, reached the sampler
    plain = widgets.sampler_panel(GPT(ModelConfig(vocab_size=len(bach.tok), context=64, d_model=32, n_layers=1,
                                                  n_heads=2), key=jax.random.key(0)), bach.tok, tmp_path)
    assert "guidance" not in plain.controls  # without conditions there is nothing to guide
