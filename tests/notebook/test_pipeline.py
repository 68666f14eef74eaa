"""The notebook stages as functions: run directories, wandb logging, samples during training and after."""

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import numpy as np

from tchaikovsky.config import SampleConfig
from tchaikovsky.generate.prompts import make_prompt
from tchaikovsky.notebook import pipeline
from tchaikovsky.render import samples


def test_training_logs_to_wandb_offline_and_renders_samples_as_it_goes(bach, tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(bach.tokenizer_path, run / "tokenizer.json")
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = pipeline.train_run(run, bach.shards, preset="tiny", max_steps=10, wandb_mode="offline",
                                sample_every=5)
    assert int(result.state.step) == 10
    assert list((run / "wandb").glob("offline-run-*")), "wandb offline run directory"
    mids = sorted((run / "samples").glob("train-step*.mid"))
    assert [m.name.split("-")[1] for m in mids] == ["step000005", "step000010"]
    assert all(m.with_suffix(".png").exists() for m in mids)


JOIN_WANDB = """
import sys
from pathlib import Path
import wandb
from tchaikovsky.notebook import pipeline
pipeline.wandb_logger("offline", Path(sys.argv[1]), {})
wandb.log({"loss": 1.0}, step=1)
wandb.finish()
"""


def test_a_resumed_run_rejoins_its_wandb_run(tmp_path):
    """Two processes (a run and its resume in a later session) log to the same wandb run id."""
    run = tmp_path / "run"
    run.mkdir()
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for _ in range(2):  # each process gets its own hash() salt
        subprocess.run([sys.executable, "-c", JOIN_WANDB, str(run)], env=env, check=True, timeout=300)
    ids = {p.name.rsplit("-", 1)[-1] for p in (run / "wandb").glob("offline-run-*")}
    assert len(list((run / "wandb").glob("offline-run-*"))) == 2 and len(ids) == 1, ids
    assert ids == {pipeline.wandb_run_id(run).rsplit("-", 1)[-1]} and pipeline.wandb_run_id(run).startswith("run-")


def test_online_wandb_without_a_key_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with pytest.raises(ValueError, match="WANDB_API_KEY"):
        pipeline.wandb_logger("online", tmp_path, {})


def test_read_only_run_dir_is_copied_before_use(tmp_path, monkeypatch):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere: read-only directories cannot be simulated")
    src = tmp_path / "input" / "myrun"
    src.mkdir(parents=True)
    (src / "tokenizer.json").write_text("{}")
    src.chmod(stat.S_IRUSR | stat.S_IXUSR)
    monkeypatch.chdir(tmp_path)
    run = pipeline.resolve_run_dir(str(src))
    assert run == tmp_path / "runs" / "myrun" and (run / "tokenizer.json").exists()


def test_default_run_dir_sits_at_the_project_root(tmp_path, monkeypatch):
    (tmp_path / "tchaikovsky").mkdir()
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    assert pipeline.resolve_run_dir("") == tmp_path / "runs" / "default"


def test_write_samples_writes_midi_png_wav_and_respects_limits(bach, trained, tmp_path):
    import symusic

    from tchaikovsky.generate import grammar

    tok = bach.tok
    prompt = make_prompt(tok, midi=bach.pieces[0].path, tokens=40)
    config = SampleConfig(num_tokens=150, max_bars=3, max_seconds=8.0)
    cells = samples.write_samples(tmp_path, trained.model, tok, prompt, config, seeds=[0, 1], temperatures="0.9")
    assert len(cells) == 2
    rules = grammar.Grammar(tok)
    for c in cells:
        np.testing.assert_array_equal(c["ids"][: len(prompt)], prompt)
        assert c["n_tokens"] == len(c["ids"]) and rules.invalid_share(c["ids"]) == 0.0
        assert c["midi_path"].exists() and c["png_path"].exists() and c["wav_path"].exists()
        score = symusic.Score(str(c["midi_path"]))
        assert score.to("second").end() <= 8.0 + 1e-6
        assert c["prompt_end"] is not None and c["prompt_end"] > 0
        assert len(score.get_downbeats()) <= rules.bars[prompt].sum() + 3


def test_musicxml_export_keeps_the_notes(bach, tmp_path):
    import music21
    import symusic

    midi = tmp_path / "piece.mid"
    source = symusic.Score(str(bach.pieces[0].path))
    source.dump_midi(str(midi))
    xml = samples.to_musicxml(midi)
    assert xml.suffix == ".musicxml" and xml.stat().st_size > 1000
    parsed = music21.converter.parse(str(xml))
    # notation splits notes across bar lines into tied notes: count each tied chain once
    heads = [n for n in parsed.recurse().notes if n.tie is None or n.tie.type == "start"]
    assert sum(len(n.pitches) for n in heads) == source.note_num()


def _kaggle(tmp_path, monkeypatch, inputs: dict[str, dict[str, str]]) -> Path:
    """An emulated /kaggle: inputs[slug] = {relative path: text}, cwd = <root>/working."""
    root = tmp_path / "kaggle"
    for slug, files in inputs.items():
        for rel, text in files.items():
            (root / "input" / slug / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / "input" / slug / rel).write_text(text)
    (root / "working").mkdir(parents=True)
    monkeypatch.setenv("TCHAIKOVSKY_KAGGLE_ROOT", str(root))
    monkeypatch.chdir(root / "working")
    return root


def test_a_run_under_kaggle_input_is_copied_even_when_writable(tmp_path, monkeypatch):
    """Kaggle mounts /kaggle/input read-only; as root os.access says writable, so the location decides."""
    root = _kaggle(tmp_path, monkeypatch, {"my-train": {"runs/default/tokenizer.json": "{}"}})
    src = root / "input" / "my-train" / "runs" / "default"
    for p in (src / "tokenizer.json", src):
        p.chmod(0o555 if p.is_dir() else 0o444)
    run = pipeline.resolve_run_dir(str(src))
    assert run == root / "working" / "runs" / "default" and (run / "tokenizer.json").read_text() == "{}"
    (run / "more.json").write_text("{}")  # the copy is writable (its modes were lifted)
    (run / "tokenizer.json").write_text("[]")
    assert pipeline.resolve_run_dir(str(src)) == run and (run / "tokenizer.json").read_text() == "[]"  # reused


def test_default_run_dir_on_kaggle_is_the_attached_kernels_run(tmp_path, monkeypatch):
    root = _kaggle(tmp_path, monkeypatch, {"tchaikovsky-03-train": {"runs/default/history.jsonl": "{}"},
                                           "giantmidi-piano": {"a.mid": ""}})
    run = pipeline.resolve_run_dir("")
    assert run == root / "working" / "runs" / "default" and (run / "history.jsonl").exists()


def test_default_run_dir_without_attached_run_is_a_fresh_one(tmp_path, monkeypatch):
    root = _kaggle(tmp_path, monkeypatch, {"giantmidi-piano": {"a.mid": ""}})
    run = pipeline.resolve_run_dir("")
    assert run == root / "working" / "runs" / "default" and not run.exists()


def test_two_attached_runs_ask_for_run_dir(tmp_path, monkeypatch):
    _kaggle(tmp_path, monkeypatch, {"a-train": {"runs/default/x": ""}, "b-train": {"deep/runs/default/x": ""}})
    with pytest.raises(ValueError, match="set run_dir"):
        pipeline.resolve_run_dir("")


def test_write_samples_keeps_every_temperature_in_its_own_files(bach, trained, tmp_path):
    """Temperatures 0.8 and 0.9 of one seed once both became "...-temp0.mid" (``with_suffix`` took ".8" and ".9" for
    suffixes), so the second piece overwrote the first."""
    cells = samples.write_samples(tmp_path, trained.model, bach.tok, make_prompt(bach.tok), SampleConfig(num_tokens=32),
                                  seeds=[0], temperatures=[0.8, 0.9], render_audio=False)
    names = sorted(p.name for p in tmp_path.glob("samples/*.mid"))
    assert len(names) == 2 and names[0].endswith("-seed0-temp0.8.mid") and names[1].endswith("-seed0-temp0.9.mid")
    assert {c["midi_path"].name for c in cells} == set(names)
    assert {c["png_path"].name for c in cells} == {n[:-4] + ".png" for n in names}


def _folder_of_60(bach, path: Path) -> Path:
    """60 distinct real MIDI files under ``path``: the fixture's 12 chorales, each also transposed 1-4 semitones up
    (as a copy of one chorale would be skipped as a duplicate), under names of a user's folder."""
    import symusic

    path.mkdir()
    for i, piece in enumerate(bach.pieces):
        score = symusic.Score(str(piece.path))
        for shift in range(5):
            score.shift_pitch(shift).dump_midi(str(path / f"piece {i:02d} up {shift}.mid"))
    return path


def test_a_users_folder_is_read_whole_by_default_and_a_cap_says_so(bach, corpus_cache, tmp_path, monkeypatch,
                                                                       capsys):
    """Notebooks 01-03's default max_files reads every file of one's own folder; a cap that leaves files unread is
    printed ("kept N of M files"), and the embedded corpus keeps its default size."""
    import ast

    import papermill as pm

    from tchaikovsky.data.embedded import DEFAULT_FILES, available_scores
    from tchaikovsky.notebook.runner import NOTEBOOK_DIR

    folder = _folder_of_60(bach, tmp_path / "my midi")
    defaults = {name: {k: ast.literal_eval(v["default"]) for k, v in
                       pm.inspect_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb")).items()}
                for name in ("01_explore_data", "02_train_tokenizer", "03_train")}
    assert {d["max_files"] for d in defaults.values()} == {None}
    run = tmp_path / "run"
    corpus = pipeline.load_data(str(folder), max_files=defaults["01_explore_data"]["max_files"],
                                composers=defaults["01_explore_data"]["composers"], run_dir=run)
    assert len(corpus) == 60 and corpus.cap_note() is None
    assert "kept" not in capsys.readouterr().out
    report = json.loads((run / "data_report.json").read_text())
    assert report["kept"] == 60 and report["found"] == 60 and "cap" not in report

    corpus = pipeline.load_data(str(folder), max_files=40, run_dir=run)
    assert len(corpus) == 40
    assert capsys.readouterr().out == "kept 40 of 60 files (max_files=40)\n"
    assert json.loads((run / "data_report.json").read_text())["cap"] == "kept 40 of 60 files (max_files=40)"
    pipeline.load_data(str(folder), max_files=60)  # a cap that leaves nothing unread: no note
    assert capsys.readouterr().out == ""

    monkeypatch.setenv("TCHAIKOVSKY_CACHE", str(corpus_cache))  # the embedded corpus: the default's 40 of Bach's
    corpus = pipeline.load_data("", max_files=None, composers="bach")
    n = available_scores(["bach"])
    assert len(corpus) == DEFAULT_FILES == 40 and n > 400
    assert capsys.readouterr().out.splitlines()[-1] == \
        f"kept 40 of {n} files (max_files=None: the embedded corpus's default, 40)"


def test_checkpoint_tuned_is_the_round_the_validation_judge_chose(bach, trained, tmp_path, capsys):
    """04's checkpoint="tuned": the model of the finished round of 05 that the validation judge prefers (not
    simply the last one); a clear error before any round has finished."""
    import json

    from tchaikovsky.preference.rounds import round_dir
    from tchaikovsky.training import checkpoint

    def done(r, val_k):  # what a finished round records, as far as the choice reads it
        rate = {"k": val_k, "n": 10}
        (round_dir(run, r) / "done.json").write_text(json.dumps(
            {"round": r, "judge_rate": rate, "scorer": 0.5, "validation": {"judge_rate": rate, "scorer": 0.5}}))

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(bach.tokenizer_path, run / "tokenizer.json")
    _, meta = checkpoint.load_model(trained.run_dir / "checkpoints" / "model.eqx")
    own = run / "checkpoints" / "model.eqx"
    checkpoint.export_model(own, trained.model, {**meta, "which": "fine-tuned"})
    for r in (0, 1, 2):
        (round_dir(run, r)).mkdir(parents=True)
    done(0, 5)  # round 0 is the fine-tuned model's evaluation, not a round
    with pytest.raises(ValueError, match='checkpoint="tuned": .* has no finished preference round'):
        pipeline.load_model(run, "tuned")
    for r in (1, 2):  # round 2 has weights but is not finished: round 1 is the only candidate
        checkpoint.export_model(round_dir(run, r) / "train" / "checkpoints" / "model.eqx", trained.model,
                                {**meta, "which": f"round {r}"})
    done(1, 8)
    model, tok, got = pipeline.load_model(run, "tuned")
    assert got["which"] == "round 1" and len(tok) == len(bach.tok)
    assert "preference round 1's model (the validation judge's choice)" in capsys.readouterr().out
    assert pipeline.load_model(run, "")[2]["which"] == "fine-tuned"
    done(2, 6)  # finished, but the validation judge liked round 1 better
    assert pipeline.load_model(run, "tuned")[2]["which"] == "round 1"


def test_run_preset_decides_the_vocabulary_and_the_fine_tune_learning_rate(bach, trained, tmp_path):
    T, tiny = len(bach.tok), pipeline.get_preset("tiny")
    assert pipeline.run_preset(tmp_path / "a", bach.shards, "tiny").model.vocab_size == T
    p = pipeline.run_preset(tmp_path / "a", bach.shards, "tiny", fim_rate=0.5, max_steps=None)
    assert p.model.vocab_size == T + 4 and p.train.fim_rate == 0.5 and p.train.max_steps == tiny.train.max_steps
    p = pipeline.run_preset(tmp_path / "b", bach.shards, "tiny", init_from=str(trained.run_dir), fim_rate=None)
    assert p.model.vocab_size == T and p.train.learning_rate == tiny.train.learning_rate / 4
    assert pipeline.run_preset(tmp_path / "b", bach.shards, "tiny", init_from=str(trained.run_dir),
                               learning_rate=1e-4).train.learning_rate == 1e-4
