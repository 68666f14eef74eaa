"""The notebooks themselves: paired with their .py sources, stripped, and executable headless with Papermill."""

import base64
import json
import os
import shutil
from pathlib import Path

import jupytext
import nbformat
import papermill as pm
import numpy as np
import pytest
import symusic

from tchaikovsky.notebook import params
from tchaikovsky.data import tokenizer
from tchaikovsky.data.splits import held_out_role, held_out_roles
from tchaikovsky.preference.evaluate import chosen_round
from tchaikovsky.notebook.runner import NOTEBOOK_DIR, NOTEBOOKS, run_all, run_notebook
from tchaikovsky.render import audio, preview

TINY = {"max_files": 10, "vocab_size": 700, "preset": "tiny", "max_steps": 20, "num_tokens": 80,
        "n_listen": 1, "seeds": [0, 1], "temperatures": [1.0]}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_ipynb_matches_py_and_is_stripped(name):
    py = jupytext.read(NOTEBOOK_DIR / f"{name}.py")
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    code = lambda n: [c.source for c in n.cells if c.cell_type == "code"]  # noqa: E731
    assert code(py) == code(nb), f"{name}.ipynb is out of sync with {name}.py: run `make sync`"
    assert [c.source for c in py.cells] == [c.source for c in nb.cells]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
    assert nb.metadata["kernelspec"]["name"] == "python3"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged parameters"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameters_cell_matches_contract(name):
    import papermill as pm

    declared = set(pm.inspect_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb")))
    assert declared == set(params.SPECS[name])


def _outputs(path: Path) -> list[dict]:
    nb = json.loads(path.read_text())
    return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]


def _embedded_audio(path: Path) -> list[bytes]:
    """Every audio file an executed notebook carries: <audio> data URIs in HTML outputs and the values of
    ipywidgets Audio models in the saved widget state."""
    found = []
    for o in _outputs(path):
        for part in "".join(o.get("data", {}).get("text/html", "")).split("data:audio/")[1:]:
            found.append(base64.b64decode(part.split(";base64,", 1)[1].split('"', 1)[0]))
    state = json.loads(path.read_text())["metadata"].get("widgets", {})
    for model in state.get("application/vnd.jupyter.widget-state+json", {}).get("state", {}).values():
        if model["model_name"] == "AudioModel":
            found += [base64.b64decode(b["data"]) for b in model.get("buffers", [])]
    return found


def _long_performance(sources: list[Path], minutes: float, path: Path) -> Path:
    """Real chorales played one after another, as one piece of at least ``minutes`` (a MAESTRO-length file)."""
    out, offset, voices = symusic.Score(480), 0, {}
    out.tempos.append(symusic.Tempo(0, 90.0))  # 90 quarters a minute
    while offset < minutes * 90 * 480:
        for src in sources:
            score = symusic.Score(str(src)).resample(480, min_dur=1)
            for i, track in enumerate(score.tracks):
                voice = voices.setdefault(i, symusic.Track(f"voice {i}", 0, False))
                for n in track.notes:
                    voice.notes.append(symusic.Note(n.time + offset, n.duration, n.pitch, n.velocity))
            offset += score.end() + 480
            if offset >= minutes * 90 * 480:
                break
    out.tracks.extend(voices.values())
    out.dump_midi(str(path))
    return path


@pytest.mark.slow
def test_all_four_notebooks_run_on_the_embedded_corpus(tmp_path, corpus_cache, monkeypatch):
    monkeypatch.setenv("TCHAIKOVSKY_CACHE", str(corpus_cache))
    run = tmp_path / "run"
    run_all(run, **TINY)
    for name in NOTEBOOKS[:4]:
        assert (run / "notebooks" / f"{name}.ipynb").exists()
    report = json.loads((run / "data_report.json").read_text())
    assert report["kept"] == 10
    assert (run / "tokenizer.json").exists() and (run / "shards" / "index.json").exists()
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert history[-1]["step"] == 20 and history[-1]["loss"] < history[0]["loss"]
    mids = sorted((run / "samples").glob("sample-*.mid"))
    assert len(mids) == 2
    for mid in mids:
        score = symusic.Score(str(mid))
        assert score.note_num() > 0
        assert mid.with_suffix(".wav").stat().st_size > 44 and mid.with_suffix(".png").exists()
    executed = run / "notebooks" / "04_sample.ipynb"
    kinds = {k for o in _outputs(executed) for k in o.get("data", {})}
    assert "image/png" in kinds and "text/html" in kinds  # piano rolls and <audio> players inline
    # interactive=True by default: the widget grid and the sampler panel are saved as widget views
    views = ["".join(o["data"]["text/plain"]) for o in _outputs(executed)
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert any(v.startswith("GridBox(") for v in views) and any(v.startswith("SamplerPanel(") for v in views)
    clips = _embedded_audio(executed)
    assert len(clips) == 2 + 2  # show_sample's players, then the grid's (widget state)
    assert all(0 < preview.duration(c) <= preview.SECONDS + 0.05 for c in clips)


@pytest.mark.slow
def test_notebooks_run_on_a_users_folder_with_other_parameters(tmp_path, corpus_cache, monkeypatch):
    """A data_dir of the user's own files, broken ones among them, a MIDI prompt and top-k sampling."""
    from tchaikovsky.data import embedded

    monkeypatch.setenv("TCHAIKOVSKY_CACHE", str(corpus_cache))
    data = tmp_path / "my midi"
    (data / "sub").mkdir(parents=True)
    src = embedded.embedded_corpus(max_files=8, cache_dir=corpus_cache)
    for i, f in enumerate(sorted(src.rglob("*.mid"))[:8]):
        shutil.copy(f, data / ("sub" if i % 2 else "") / f"piece {i}.MID")
    (data / "broken.mid").write_bytes(os.urandom(300))
    (data / "empty.midi").write_bytes(b"")
    run = tmp_path / "run2"
    run_all(run, data_dir=str(data), seed=3, max_files=None, vocab_size=650, preset="tiny", max_steps=10,
            transpose_range=1, n_listen=1, notebooks=NOTEBOOKS[:3])
    report = json.loads((run / "data_report.json").read_text())
    assert report["kept"] == 8 and report["skipped"] == 2
    assert {r["reason"].split(":")[0] for r in report["files"] if r["status"] == "skipped"} == {"unreadable", "empty"}
    # rerun 03 with resume=True: it continues from step 10 instead of starting again; then a time limit ends a long
    # run cleanly with a checkpoint
    run_notebook("03_train", run, preset="tiny", max_steps=20, resume=True)
    steps = [json.loads(line)["step"] for line in (run / "history.jsonl").read_text().splitlines()]
    assert steps[0] == 5 and steps[-1] == 20 and steps == sorted(set(steps))
    out = run_notebook("03_train", run, preset="tiny", max_steps=100000, resume=True, max_minutes=0.05)
    assert "stopped: max_minutes" in out.read_text()
    index = json.loads((run / "shards" / "index.json").read_text())
    n_train = sum(1 for p in index["splits"]["train"]["pieces"] if "augment" not in p)
    assert len(index["splits"]["train"]["pieces"]) == 3 * n_train  # each piece also a semitone up and down
    prompt = data / "piece 0.MID"
    run_notebook("04_sample", run, prompt_midi=str(prompt), prompt_tokens=40, num_tokens=200, min_tokens=200,
                 top_k=20, top_p=1.0, temperatures="0.8,1.2", seeds=[5], evaluate=False)
    mids = sorted((run / "samples").glob("sample-*.mid"))
    assert len(mids) == 2
    tok = tokenizer.load_tokenizer(run / "tokenizer.json")
    for mid in mids:  # 3x the tiny model's context of 64 (min_tokens: the model may not end the piece earlier);
        # the MIDI re-encodes to about the tokens generated
        n = len(tokenizer.encode_file(tok, mid))
        assert 0.6 * 240 <= n <= 1.4 * 242, n


@pytest.mark.slow
@pytest.mark.skipif(not audio.audio_available()[0], reason="FluidSynth not installed")
def test_notebook_01_on_long_performances_stays_small(tmp_path, corpus_cache, monkeypatch):
    """Issue 14: a folder of 20-30 minute pieces made notebook 01 embed a 291 MB WAV. Now every player is a preview
    of ``preview_seconds``, nothing is rendered in full, and the executed notebook stays small."""
    from tchaikovsky.data import embedded

    monkeypatch.setenv("TCHAIKOVSKY_CACHE", str(corpus_cache))
    chorales = sorted(embedded.embedded_corpus(max_files=12, cache_dir=corpus_cache).rglob("*.mid"))
    data = tmp_path / "performances"
    data.mkdir()
    _long_performance(chorales, 25, data / "long one.mid")
    _long_performance(chorales[::-1], 20, data / "long two.mid")
    shutil.copy(chorales[0], data / "short.mid")
    lengths = sorted(symusic.Score(str(f)).to("second").end() / 60 for f in data.iterdir())
    assert lengths[0] < 2 and 20 <= lengths[1] < lengths[2] < 30
    run = tmp_path / "run"
    out = run_notebook("01_explore_data", run, data_dir=str(data), max_files=None, n_listen=3, preview_seconds=20)
    size = out.stat().st_size
    assert size < 1_500_000, f"executed notebook is {size / 1e6:.1f} MB"  # 3 players, 3 rolls, 4 charts
    clips = _embedded_audio(out)
    assert len(clips) == 3  # one player per piece
    assert [round(preview.duration(c), 1) for c in clips] == [20.0] * 3  # every piece lasts over 20 s: all cut
    html = "".join("".join(o.get("data", {}).get("text/html", "")) for o in _outputs(out))  # str or lines
    assert html.count("preview: the first 0:20 of ") == 3 and 'download="long one.mid"' in html
    assert not list(run.rglob("*.wav"))  # no full-length render happened just to show a player


def test_bad_parameter_fails_at_once_naming_it(tmp_path):
    with pytest.raises(ValueError, match="max_step"):
        run_notebook("03_train", tmp_path, max_step=10)  # typo: not a parameter of 03


@pytest.mark.slow
def test_conditioned_fine_tune_on_a_giantmidi_folder_then_sampling_by_composer(tmp_path, corpus_cache, monkeypatch):
    """Pretrain on the embedded corpus (two composers, conditions, a judge split), fine-tune on a user's folder of
    GiantMIDI-named files (composer labels from the names; a composer pretraining never saw), ask 04 for it."""
    from tchaikovsky.data import embedded
    from tchaikovsky.data.conditions import load_conditions
    from tchaikovsky.data.shards import Shards
    from tchaikovsky.evaluation import control
    from tchaikovsky.training import checkpoint

    monkeypatch.setenv("TCHAIKOVSKY_CACHE", str(corpus_cache))
    pre = tmp_path / "pre"
    run_all(pre, notebooks=NOTEBOOKS[1:3], composers="bach,palestrina", max_files=8, vocab_size=700, preset="tiny",
            max_steps=10, conditions=True, judge_fraction=0.3, condition_dropout=0.2)
    assert set(load_conditions(pre).known("composer")) == {"Johann Sebastian Bach", "Giovanni Pierluigi da Palestrina"}
    assert Shards(pre / "shards").pieces("judge")  # whole works set aside

    data = tmp_path / "giantmidi"
    data.mkdir()
    src = sorted(embedded.embedded_corpus(max_files=12, cache_dir=corpus_cache).rglob("*.mid"))[:12]
    # titles whose works hash into each role, so that both composers have training, validation and test works
    wanted = ["judge", "judge_test", "judge_test", None, None, None]
    for i, f in enumerate(src):
        surname, first, title = ("Chopin", "Frédéric", "Nocturne Op.") if i % 2 else ("Bach", "Johann Sebastian",
                                                                                     "Chorale ")
        title += str(next(k for k in range(1000) if held_out_role(f"{first} {surname}: {title}{k}",
                                                                   held_out_roles(0.5)) == wanted[i // 2]
                          and f"{title}{k}" not in str(list(data.iterdir()))))
        shutil.copy(f, data / f"{surname}, {first}, {title}, {'abcdefghijkl'[i]}{i:05d}XyZ.mid")
    ft = tmp_path / "ft"
    # the same chorales under other names: held-out copies of pieces pretraining trained on are refused ...
    with pytest.raises(pm.PapermillExecutionError, match="held-out pieces were trained or validated on by"):
        run_notebook("03_train", ft, data_dir=str(data), max_files=None, init_from=str(pre), preset="tiny",
                     max_steps=6, judge_fraction=0.5)
    # ... unless the user accepts it, and then every report says so
    run_notebook("03_train", ft, data_dir=str(data), max_files=None, init_from=str(pre), preset="tiny", max_steps=6,
                 judge_fraction=0.5, allow_overlap=True)
    cond = load_conditions(ft)
    assert "Frédéric Chopin" in cond.known("composer") and cond.tokens[: len(load_conditions(pre).tokens)] == \
        load_conditions(pre).tokens  # extended, never rebuilt
    meta = checkpoint.read_meta(checkpoint.latest(ft / "checkpoints"))
    assert meta["init_from"]["path"] == str(pre.resolve()) and meta["model_config"]["vocab_size"] == cond.vocab_size
    assert (ft / "tokenizer.json").read_text() == (pre / "tokenizer.json").read_text()

    out = run_notebook("04_sample", ft, composer="chopin", num_tokens=60, seeds=[0], temperatures=[1.0],
                       judge_samples=1, interactive=True)
    text = out.read_text()
    assert "no controllability check" not in text and "judge ceiling" in text and "recognised as asked" in text
    assert "held-out pieces were trained on by the parent run (allow_overlap)" in text
    mids = sorted((ft / "samples").glob("sample-*.mid"))
    assert len(mids) == 1 and symusic.Score(str(mids[0])).note_num() > 0
    views = ["".join(o["data"]["text/plain"]) for o in _outputs(out)
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert any(v.startswith("SamplerPanel(") for v in views)
    with pytest.raises(pm.PapermillExecutionError, match="composer 'liszt' is not known.*Frédéric Chopin"):
        run_notebook("04_sample", ft, composer="liszt", evaluate=False, interactive=False)

    # 05: preference rounds on the conditioned run, headless; interrupted by its time limit, then resumed
    tiny05 = dict(rounds=1, samples_per_prompt=4, top_fraction=0.25, steps_per_round=2, eval_samples=2,
                  scorer_steps=5, min_pieces=0, learning_rate=1e-3, num_tokens=40)
    first = run_notebook("05_preference_tuning", ft, max_minutes=1e-4, **tiny05)
    assert "stopped: max_minutes" in first.read_text()
    out5 = run_notebook("05_preference_tuning", ft, **tiny05)
    assert "stopped: done" in out5.read_text() and (ft / "preference" / "round_01" / "done.json").exists()
    kinds = {k for o in _outputs(out5) for k in o.get("data", {})}
    assert "image/png" in kinds and "text/markdown" in kinds
    assert len(_embedded_audio(out5)) == 4  # two pieces before and after, bounded players
    last = [c for c in json.loads(out5.read_text())["cells"] if c["cell_type"] == "code"][-1]
    assert not [o for o in last["outputs"] if o["output_type"] == "execute_result"]  # no list of paths echoed
    # 04 samples the tuned model by name: checkpoint="tuned" is the round the validation judge chose
    tuned = run_notebook("04_sample", ft, checkpoint="tuned", composer="chopin", num_tokens=40, min_tokens=0,
                         seeds=[0], temperatures=[1.0], evaluate=False, interactive=False)
    assert f"preference round {chosen_round(ft)}'s model (the validation judge's choice)" in tuned.read_text()

    report = control.controllability(ft, n_per_value=2, num_tokens=40, min_pieces=1)
    n = len(report["classes"])
    assert report["role"] == "test" and report["held_out_overlap"]
    assert np.asarray(report["confusion"]).shape == (n, n) and np.asarray(report["confusion"]).sum() <= 2 * n
    assert all(r["conditioned"]["n"] == 2 and r["chance"]["n"] == 2 for r in report["table"])  # failures count
    assert control.report_path(ft, "composer", "test").exists() and (ft / "judge" / "test" / "judge_composer.json").exists()


@pytest.mark.slow
def test_notebook_04_regenerates_bars_of_a_corpus_piece(bach, tmp_path):
    """``infill_midi`` on an embedded corpus chorale, with a run whose model has the fill sentinels (built here,
    untrained: the notebook's mechanics, not the music): the regenerated piece is written and shown, bounded, and
    every note outside the bars is the original's."""
    import dataclasses

    import jax

    from tchaikovsky.config import ModelConfig
    from tchaikovsky.generate.bars import piece_bars
    from tchaikovsky.model import build
    from tchaikovsky.training.checkpoint import export_model

    run = tmp_path / "run"
    tokenizer.save_tokenizer(bach.tok, run / "tokenizer.json")
    cfg = ModelConfig(vocab_size=len(bach.tok) + 4, context=256, d_model=32, n_layers=1, n_heads=2)
    export_model(run / "checkpoints" / "model.eqx", build(cfg, jax.random.key(0)),
                 {"model_config": dataclasses.asdict(cfg), "tokenizer_hash": tokenizer.tokenizer_hash(bach.tok)})
    piece = bach.pieces[0].path
    out = run_notebook("04_sample", run, infill_midi=str(piece), infill_bars="2-3", num_tokens=96, min_tokens=0,
                       seeds=[0], temperatures=[1.0], evaluate=False, interactive=False, preview_seconds=5.0,
                       infill_rerank=2)
    (mid,) = sorted((run / "samples").glob("infill-*-bars2-3-seed0-temp1.mid"))
    assert mid.with_suffix(".png").exists()
    text = out.read_text()
    assert "Bars 2-3, regenerated" in text and "before" in text and "after" in text
    assert "led best into the next bar" in text  # infill_rerank=2: the best of two middles
    original, new = symusic.Score(str(piece)), symusic.Score(str(mid))
    pb = piece_bars(bach.tok, original)
    lo, hi = pb.lines[1] - pb.grid / 2, pb.lines[3] - pb.grid / 2
    outside = lambda s: sorted((n.time, n.duration, n.pitch, n.velocity) for t in s.tracks[:len(original.tracks)]  # noqa: E731
                               for n in t.notes if not lo <= n.time < hi)
    assert outside(new) == outside(original) and len(new.tracks) >= len(original.tracks)
    if audio.audio_available()[0]:  # show_sample's player, the grid's, then before and after: each a few seconds
        clips = _embedded_audio(out)
        assert len(clips) == 4 and all(0 < preview.duration(c) <= 5.05 for c in clips)
