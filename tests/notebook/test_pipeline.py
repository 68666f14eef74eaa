"""The notebook stages as functions: run directories, wandb logging, samples during training and after."""

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
                                sample_every=5, progress=False)
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
