"""Pictures and players for notebooks: piano rolls, loss curves, audio players, download links, sample grids.

Every player is a bounded preview (``preview.preview``: the first seconds, compactly encoded); whole pieces are
download links.

Figures are built as bare ``matplotlib.figure.Figure`` objects, not through pyplot, so nothing is shown twice and
nothing piles up in pyplot's figure registry when we draw dozens of rolls: a figure appears when it is the cell's
value or is passed to ``display``. We never choose a matplotlib backend (notebooks keep ``inline``).
"""

from __future__ import annotations

import base64
import html
import os
from io import BytesIO
from pathlib import Path

import numpy as np
import symusic
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from tchaikovsky import io
from tchaikovsky.render import audio
from tchaikovsky.render import preview as preview_lib

_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
PROMPT_COLOR, CONTINUATION_COLOR, DRUM_COLOR = "#4c72b0", "#ff7f0e", "#7f7f7f"


def pitch_name(pitch: int) -> str:
    """Scientific pitch name of a MIDI note number: 60 -> "C4", 61 -> "C#4", 21 -> "A0"."""
    return f"{_NAMES[pitch % 12]}{pitch // 12 - 1}"


def _axes(ax, figsize: tuple[float, float]):
    """The given axes, or a fresh one on a bare (non-pyplot) figure."""
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _bars(ax, notes: list[tuple[float, float, int, int]], color: str, label: str, height: float = 0.8):
    """One PolyCollection of (start, duration, pitch, velocity) bars; louder notes are more opaque."""
    if not notes:
        return None
    verts = [
        [(t, p - height / 2), (t + d, p - height / 2), (t + d, p + height / 2), (t, p + height / 2)]
        for t, d, p, _ in notes
    ]
    rgba = np.tile(np.array(to_rgba(color)), (len(notes), 1))
    rgba[:, 3] = 0.35 + 0.65 * np.array([v for *_, v in notes]) / 127
    coll = PolyCollection(verts, facecolors=rgba, edgecolors=color, linewidths=0.3, label=label)
    ax.add_collection(coll)
    return coll


def piano_roll(
    midi: str | Path | symusic.Score,
    *,
    prompt_end: float | None = None,
    ax=None,
    title: str | None = None,
    max_seconds: float | None = None,
    drums: bool = True,
    figsize: tuple[float, float] = (12, 4),
) -> Figure:
    """Draw notes as horizontal bars on a seconds x pitch grid; returns the figure (not shown).

    With ``prompt_end`` (seconds), notes starting before it are the prompt (blue) and the rest the model's
    continuation (orange), with a legend and a dashed line at the boundary. Bar lines come from the time signatures
    and tempos. Drum notes (pitch = instrument, not pitch) are grey, or omitted with a note if ``drums=False``.
    """
    score = io.load_score(midi, "second")
    fig, ax = _axes(ax, figsize)
    limit = float("inf") if max_seconds is None else max_seconds
    cut = float("inf") if prompt_end is None else prompt_end
    prompt, cont, drum = [], [], []
    n_drum_tracks = 0
    for track in score.tracks:
        n_drum_tracks += bool(track.is_drum and len(track.notes))
        for n in track.notes:
            if n.time >= limit:
                continue
            note = (n.time, min(n.duration, limit - n.time), n.pitch, n.velocity)
            (drum if track.is_drum else prompt if n.time < cut else cont).append(note)
    if not drums:
        drum = []
    _bars(ax, prompt, PROMPT_COLOR, "prompt" if prompt_end is not None else "notes")
    _bars(ax, cont, CONTINUATION_COLOR, "continuation")
    _bars(ax, drum, DRUM_COLOR, "drums", height=0.5)
    everything = prompt + cont + drum
    end = max((t + d for t, d, *_ in everything), default=1.0)
    end = min(end, limit) if max_seconds is not None else end
    if hasattr(score, "get_downbeats"):
        for bar in score.get_downbeats():
            if 0 < bar < end:
                ax.axvline(float(bar), color="0.85", lw=0.6, zorder=0)
    if prompt_end is not None:
        ax.axvline(prompt_end, color="k", ls="--", lw=1.0, label="prompt end")
    lo = min((p for *_, p, _ in everything), default=60) - 2
    hi = max((p for *_, p, _ in everything), default=72) + 2
    ax.set_xlim(0, end * 1.01)
    ax.set_ylim(lo, hi)
    ticks = [p for p in range(lo, hi + 1) if p % 12 == 0] or [lo + (hi - lo) // 2]
    ax.set_yticks(ticks, [pitch_name(p) for p in ticks])
    ax.set_xlabel("time (s)")
    ax.set_ylabel("pitch")
    if title:
        ax.set_title(title)
    if n_drum_tracks and not drums:
        ax.text(0.99, 0.98, f"{n_drum_tracks} drum track(s) not shown", transform=ax.transAxes,
                ha="right", va="top", fontsize=8, color="0.4")
    if not everything:
        ax.text(0.5, 0.5, "no notes", transform=ax.transAxes, ha="center", va="center", color="0.4")
    if prompt_end is not None or (drum and (prompt or cont)):
        ax.legend(loc="upper right", fontsize=8)
    return fig


def _png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_piano_roll(midi: str | Path | symusic.Score, png_path: str | Path, **kw) -> Path:
    """Draw :func:`piano_roll` (same keywords) straight into a PNG file; returns its path."""
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    png_path.write_bytes(_png_bytes(piano_roll(midi, **kw)))
    return png_path


def _ema(x: np.ndarray, alpha: float) -> np.ndarray:
    """Exponential moving average with bias correction (so the first points are not pulled towards 0)."""
    out, acc = np.empty_like(x), 0.0
    for i, v in enumerate(x):
        acc = alpha * acc + (1 - alpha) * v
        out[i] = acc / (1 - alpha ** (i + 1))
    return out


def loss_curve(history: str | Path | list[dict], *, ax=None, logy: bool = False, smooth: float = 0.9) -> Figure:
    """Train loss against step (raw and EMA-smoothed with factor ``smooth``) and eval loss points if present."""
    records = io.read_jsonl(history)
    fig, ax = _axes(ax, (8, 4))
    train = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None and "step" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if r.get("eval_loss") is not None and "step" in r]
    if not train and not evals:
        ax.text(0.5, 0.5, "no history yet", transform=ax.transAxes, ha="center", va="center", fontsize=14)
        ax.set_xticks([])
        ax.set_yticks([])
        return fig
    if train:
        steps, loss = map(np.asarray, zip(*train))
        ax.plot(steps, loss, color="C0", alpha=0.3, lw=0.8, label="train loss")
        if len(loss) > 2:
            ax.plot(steps, _ema(loss.astype(float), smooth), color="C0", lw=1.8, label="train loss (smoothed)")
    if evals:
        steps, loss = zip(*evals)
        ax.plot(steps, loss, "o-", color="C3", ms=4, label="eval loss")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def audio_player(midi: str | Path | symusic.Score, seconds: float = preview_lib.SECONDS, *,
                 soundfont: str | Path | None = None):
    """An inline player of the first ``seconds`` of ``midi`` (a ``preview.Preview``: compact, bounded, no
    autoplay), or a Markdown note saying why there is none (FluidSynth or a soundfont missing, no notes)."""
    from IPython.display import Markdown  # optional: only inside a notebook kernel

    ok, why = audio.audio_available(soundfont)
    if not ok:
        return Markdown(f"*no audio: {why.splitlines()[0]}*")
    if io.load_score(midi).note_num() == 0:
        return Markdown("*no notes: nothing to play*")
    return preview_lib.preview(midi, seconds, soundfont=soundfont)


def _relative(path: str | Path) -> str:
    """Path relative to the notebook's working directory, which is how Jupyter and Kaggle resolve link targets."""
    try:
        return Path(os.path.relpath(Path(path).resolve(), Path.cwd())).as_posix()
    except ValueError:  # another drive on Windows
        return Path(path).as_posix()


def download_links(*paths: str | Path):
    """HTML download links (relative to the working directory, like ``FileLink``) for the files that exist."""
    from IPython.display import HTML  # optional: only inside a notebook kernel

    links = [
        f'<a href="{html.escape(_relative(p))}" download="{html.escape(Path(p).name)}" target="_blank">'
        f"{html.escape(Path(p).name)}</a>"
        for p in paths
        if Path(p).is_file()
    ]
    return HTML(" &nbsp;|&nbsp; ".join(links) if links else "<i>no files to download</i>")


def show_sample(
    midi_path: str | Path,
    *,
    wav_path: str | Path | None = None,
    png_path: str | Path | None = None,
    prompt_end: float | None = None,
    title: str | None = None,
    preview_seconds: float = preview_lib.SECONDS,
    soundfont: str | Path | None = None,
) -> None:
    """Display one piece: title, piano roll, a player of its first ``preview_seconds`` (``audio_player``) and
    download links to the MIDI and, when it exists, the full-length WAV (default: next to the MIDI).

    The player never needs the whole piece rendered: what the notebook embeds is bounded by ``preview_seconds``.
    An existing ``png_path`` (written by ``samples.write_samples``) is shown as is; otherwise the roll is drawn and,
    when ``png_path`` is given, saved there."""
    from IPython.display import Image, Markdown, display  # optional: only inside a notebook kernel

    midi_path = Path(midi_path)
    wav_path = Path(wav_path) if wav_path is not None else midi_path.with_suffix(".wav")
    display(Markdown(f"### {title or midi_path.stem}"))
    if png_path is not None and Path(png_path).is_file():
        png = Path(png_path).read_bytes()
    else:
        png = _png_bytes(piano_roll(midi_path, prompt_end=prompt_end))
        if png_path is not None:
            Path(png_path).parent.mkdir(parents=True, exist_ok=True)
            Path(png_path).write_bytes(png)
    display(Image(data=png, format="png"))
    display(audio_player(midi_path, preview_seconds, soundfont=soundfont))
    display(download_links(midi_path, wav_path))


def _thumbnail(midi_path: str | Path) -> bytes:
    """A small piano roll PNG for grid cells."""
    fig = piano_roll(midi_path, figsize=(3.2, 1.6))
    ax = fig.axes[0]
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.tick_params(labelsize=6)
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    return _png_bytes(fig, dpi=90)


def sample_grid(cells: list[dict], *, rows_key: str = "seed", cols_key: str = "temperature", widgets: bool = True,
                preview_seconds: float = preview_lib.SECONDS, soundfont: str | Path | None = None):
    """A rows x cols showcase (by default seed x temperature), each cell a small piano roll and a player of the
    piece's first ``preview_seconds`` (``preview.preview``; none when FluidSynth is missing).

    ``cells``: dicts with ``seed``, ``temperature`` and ``midi_path``. Returns an ipywidgets GridBox (players as
    ``ipywidgets.Audio``); with ``widgets=False`` or without ipywidgets, a static HTML table (images and players
    inline, for static viewers). Either way what is embedded is bounded by ``preview_seconds`` per cell.
    """
    rows = sorted({c[rows_key] for c in cells})
    cols = sorted({c[cols_key] for c in cells})
    by_key = {(c[rows_key], c[cols_key]): c for c in cells}
    try:
        import ipywidgets as W  # optional: only for the interactive widgets
    except ImportError:
        widgets = False
    playable = audio.audio_available(soundfont)[0]

    def player(cell: dict) -> preview_lib.Preview | None:
        return preview_lib.preview(cell["midi_path"], preview_seconds, soundfont=soundfont) if playable else None

    if not widgets:
        from IPython.display import HTML  # optional: only inside a notebook kernel

        head = "".join(f"<th>{cols_key} = {html.escape(str(c))}</th>" for c in cols)
        body = []
        for r in rows:
            tds = [f"<th>{rows_key} = {html.escape(str(r))}</th>"]
            for c in cols:
                cell = by_key.get((r, c))
                if cell is None:
                    tds.append("<td></td>")
                    continue
                img = base64.b64encode(_thumbnail(cell["midi_path"])).decode()
                p = player(cell)
                tds.append(f'<td><img src="data:image/png;base64,{img}">{p._repr_html_() if p else ""}</td>')
            body.append("<tr>" + "".join(tds) + "</tr>")
        return HTML(f"<table><tr><th></th>{head}</tr>{''.join(body)}</table>")

    items = [W.Label("")] + [W.Label(f"{cols_key} = {c}") for c in cols]
    for r in rows:
        items.append(W.Label(f"{rows_key} = {r}"))
        for c in cols:
            cell = by_key.get((r, c))
            if cell is None:
                items.append(W.Label(""))
                continue
            parts = [W.Image(value=_thumbnail(cell["midi_path"]), format="png", layout=W.Layout(width="288px"))]
            p = player(cell)
            if p is not None:
                parts += [p.widget(), W.HTML(f"<small>{html.escape(p.caption)}</small>")]
            items.append(W.VBox(parts))
    layout = W.Layout(grid_template_columns=f"auto repeat({len(cols)}, 300px)", grid_gap="6px")
    return W.GridBox(items, layout=layout)


def corpus_overview(stats: dict) -> Figure:
    """Six histograms of a corpus (``corpus.corpus_stats``): notes per piece, piece durations, pitches (named),
    velocities, note durations in beats, tempos."""
    fig = Figure(figsize=(13, 6.5), layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    panels = [
        ("notes per piece", stats["notes_per_piece"], 30),
        ("piece duration (s)", stats["duration_s"], 30),
        ("pitch", stats["pitches"], np.arange(20.5, 109.5, 1.0)),
        ("velocity", stats["velocities"], np.arange(0, 129, 4)),
        ("note duration (beats)", np.clip(stats["durations_beats"], 0, 8), 32),
        ("tempo (quarter notes / min)", np.asarray(stats["tempos"]), 30),
    ]
    for ax, (label, values, bins) in zip(axes, panels):
        ax.hist(np.asarray(values), bins=bins, color=PROMPT_COLOR)
        ax.set_title(label)
    ticks = [p for p in range(24, 109, 12)]
    axes[2].set_xticks(ticks, [pitch_name(p) for p in ticks])
    fig.suptitle(f"{stats['n_pieces']} pieces, {stats['n_notes']:,} notes, "
                 f"{stats['total_duration_s'] / 3600:.2f} h")
    return fig


def counts_chart(counts: dict, *, title: str, top: int = 15) -> Figure:
    """A horizontal bar chart of the ``top`` largest counts (composers, time signatures, programs, skip reasons)."""
    items = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)[:top][::-1]
    fig = Figure(figsize=(6, 0.3 * max(len(items), 3) + 1), layout="constrained")
    ax = fig.add_subplot()
    ax.barh([str(k) for k, _ in items], [v for _, v in items], color=PROMPT_COLOR)
    ax.set_title(title)
    return fig


def report_table(summary: dict, report: list[dict], *, max_rows: int = 20):
    """HTML: files kept and skipped by reason, then the first skipped files with their reasons."""
    from IPython.display import HTML  # optional: only inside a notebook kernel

    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in summary["by_reason"].items())
    skipped = [r for r in report if r["status"] == "skipped"][:max_rows]
    detail = "".join(f"<tr><td>{html.escape(r['path'])}</td><td>{html.escape(r['reason'])}</td></tr>" for r in skipped)
    return HTML(
        f"<p><b>{summary['kept']}</b> files kept, <b>{summary['skipped']}</b> skipped.</p>"
        + (f"<table><tr><th>skip reason</th><th>files</th></tr>{rows}</table>" if rows else "")
        + (f"<table><tr><th>skipped file</th><th>reason</th></tr>{detail}</table>" if detail else "")
    )


def sequence_lengths(shards, *, context: int | None = None) -> Figure:
    """Histogram of piece lengths in tokens per split (after BPE), with the model's context marked: pieces longer
    than it are learned in windows."""
    fig = Figure(figsize=(8, 3.5), layout="constrained")
    ax = fig.add_subplot()
    for split in shards.splits:
        lengths = [p["length"] for p in shards.pieces(split)]
        if lengths:
            ax.hist(lengths, bins=30, alpha=0.6, label=f"{split} ({len(lengths)} pieces)")
    if context:
        ax.axvline(context, color="k", ls="--", label=f"context {context}")
    ax.set_xlabel("tokens per piece")
    ax.set_ylabel("pieces")
    ax.legend()
    return fig
