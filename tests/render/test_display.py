"""Figures, players and widgets, exercised in a plain (non-notebook) process."""

import base64
import json

import numpy as np
import pytest
import symusic as sm
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from tchaikovsky.render import audio
from tchaikovsky.render import display

TPQ = 480


def write_midi(path, n_notes=8, drums=0):
    """n_notes consecutive quarter notes from C4 upwards (two octaves, then again) at 120 bpm (0.5 s each), plus
    optional drum hits."""
    score = sm.Score(TPQ)
    track = sm.Track("piano", 0, False)
    for i in range(n_notes):
        track.notes.append(sm.Note(i * TPQ, TPQ, 60 + i % 24, 90))
    score.tracks.append(track)
    if drums:
        kit = sm.Track("drums", 0, True)
        for i in range(drums):
            kit.notes.append(sm.Note(i * TPQ, TPQ // 4, 38, 100))
        score.tracks.append(kit)
    score.tempos.append(sm.Tempo(0, 120.0))
    score.time_signatures.append(sm.TimeSignature(0, 4, 4))
    score.dump_midi(str(path))
    return path


def bars(fig: Figure) -> dict[str, int]:
    """Note bars per legend label."""
    return {c.get_label(): len(c.get_paths()) for c in fig.axes[0].collections if isinstance(c, PolyCollection)}


def test_pitch_name():
    assert display.pitch_name(60) == "C4"
    assert display.pitch_name(61) == "C#4"
    assert display.pitch_name(21) == "A0"
    assert display.pitch_name(36) == "C2"


def test_piano_roll_bars_and_labels(tmp_path):
    fig = display.piano_roll(write_midi(tmp_path / "a.mid"), title="scale")
    assert isinstance(fig, Figure)
    assert bars(fig) == {"notes": 8}
    ax = fig.axes[0]
    assert "C4" in [t.get_text() for t in ax.get_yticklabels()]
    assert ax.get_title() == "scale" and ax.get_xlim()[1] == pytest.approx(4.0, rel=0.05)  # seconds, not ticks
    assert len(ax.lines) >= 1  # bar lines (at 2 s for 4/4 at 120 bpm)


def test_piano_roll_prompt_colours(tmp_path):
    fig = display.piano_roll(write_midi(tmp_path / "a.mid"), prompt_end=1.5)
    assert bars(fig) == {"prompt": 3, "continuation": 5}  # notes start at 0, 0.5, 1.0 | 1.5, ...
    colls = {c.get_label(): c for c in fig.axes[0].collections}
    prompt_rgb = colls["prompt"].get_facecolor()[0][:3]
    cont_rgb = colls["continuation"].get_facecolor()[0][:3]
    assert not np.allclose(prompt_rgb, cont_rgb)
    legend = fig.axes[0].get_legend()
    assert legend is not None and {"prompt", "continuation"} <= {t.get_text() for t in legend.get_texts()}


def test_piano_roll_drums_and_limits(tmp_path):
    midi = write_midi(tmp_path / "d.mid", drums=4)
    assert bars(display.piano_roll(midi)) == {"notes": 8, "drums": 4}
    fig = display.piano_roll(midi, drums=False, max_seconds=1.2)
    assert bars(fig) == {"notes": 3}
    assert any("drum" in t.get_text() for t in fig.axes[0].texts)
    png = display.save_piano_roll(midi, tmp_path / "out" / "d.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loss_curve(tmp_path):
    history = tmp_path / "history.jsonl"
    lines = [json.dumps({"step": s, "loss": 5.0 / (1 + s), "lr": 1e-3}) for s in range(50)]
    lines += [json.dumps({"step": 49, "loss": 0.1, "eval_loss": 0.2}), '{"step": 50, "lo']  # truncated last line
    history.write_text("\n".join(lines))
    fig = display.loss_curve(history, logy=True)
    labels = [line.get_label() for line in fig.axes[0].lines]
    assert labels == ["train loss", "train loss (smoothed)", "eval loss"]
    assert fig.axes[0].get_yscale() == "log"
    for empty in ([], tmp_path / "missing.jsonl"):
        texts = [t.get_text() for t in display.loss_curve(empty).axes[0].texts]
        assert texts == ["no history yet"]


def test_show_sample_plain_process(tmp_path, capsys):
    midi = write_midi(tmp_path / "s.mid")
    display.show_sample(midi, png_path=tmp_path / "s.png", prompt_end=1.0, title="seed 0")  # no wav: no error
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "Markdown" in out and "Image" in out
    html = display.download_links(midi, tmp_path / "absent.wav").data
    assert 's.mid"' in html and "absent" not in html


@pytest.mark.skipif(not audio.audio_available()[0], reason="FluidSynth not installed")
def test_players_and_grid_embed_bounded_previews(tmp_path):
    import ipywidgets as W

    from tchaikovsky.render import preview

    cells = []
    for seed in (0, 1):
        for temp in (0.8, 1.0):  # 2 s and 20 s pieces: the longer ones are cut to the 3 s preview
            midi = write_midi(tmp_path / f"s{seed}_t{temp}.mid", n_notes=4 + 36 * seed)
            cells.append({"seed": seed, "temperature": temp, "midi_path": midi})
    player = display.audio_player(cells[2]["midi_path"], 3)
    assert isinstance(player, preview.Preview) and player.seconds == pytest.approx(3.0) and player.cut
    grid = display.sample_grid(cells, preview_seconds=3)
    assert isinstance(grid, W.GridBox)
    assert len(grid.children) == 3 * 3  # header row + 2 rows, header column + 2 columns
    players = [w for box in grid.children for w in getattr(box, "children", ()) if isinstance(w, W.Audio)]
    assert len(players) == 4 and not players[0].autoplay and not players[0].loop
    assert {p.format for p in players} == {"mp3"}
    assert sorted(round(preview.duration(p.value), 1) for p in players) == [3.0, 3.0, 3.0, 3.0]
    static = display.sample_grid(cells, widgets=False, preview_seconds=3).data
    assert static.count("<audio") == 4 and static.count("data:image/png") == 4
    assert static.count("data:audio/mpeg;base64,") == 4  # embedded, so static viewers play them too


def test_show_sample_of_a_long_piece_embeds_a_preview_and_links_the_whole(tmp_path):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    from tchaikovsky.render import preview

    InteractiveShell.instance()
    midi = write_midi(tmp_path / "long.mid", n_notes=600)  # 5 minutes
    wav = tmp_path / "long.wav"
    wav.write_bytes(b"RIFF")  # a full-length file written elsewhere: linked, never read or embedded
    with capture_output() as captured:
        display.show_sample(midi, preview_seconds=2, title="long")
    html = "".join(o.data.get("text/html", "") for o in captured.outputs)
    if audio.audio_available()[0]:
        assert html.count("<audio") == 1 and "the first 0:02 of 5:01" in html
        b64 = html.split("data:audio/mpeg;base64,")[1].split('"')[0]
        assert preview.duration(base64.b64decode(b64)) == pytest.approx(2.0, abs=0.05)
    else:
        assert "<audio" not in html
    assert 'download="long.mid"' in html and 'download="long.wav"' in html
    assert len(html) < 200_000


def test_corpus_and_shard_pictures(bach):
    from matplotlib.figure import Figure

    from tchaikovsky.data import corpus as corpus_lib
    from tchaikovsky.data.stats import corpus_stats
    from tchaikovsky.render import display

    c = corpus_lib.Corpus(root=bach.pieces[0].path.parent, pieces=list(bach.pieces),
                          report=[{"path": p.rel_path, "status": "kept"} for p in bach.pieces]
                          + [{"path": "bad.mid", "status": "skipped", "reason": "unreadable: not MIDI"}])
    stats = corpus_stats(c)
    fig = display.corpus_overview(stats)
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    assert sum(p.get_height() for p in fig.axes[2].patches) == stats["n_notes"]  # every note in the pitch histogram
    composers = c.summary()["labels"]["composer"]
    chart = display.counts_chart(composers, title="composers")
    assert len(chart.axes[0].patches) == len(composers)
    html = display.report_table(c.summary(), c.report).data
    assert "bad.mid" in html and "unreadable" in html
    lengths = display.sequence_lengths(bach.shards, context=64)
    n_pieces = sum(len(bach.shards.pieces(s)) for s in bach.shards.splits)
    assert sum(p.get_height() for p in lengths.axes[0].patches) == n_pieces
