"""Regenerated bars to look at and listen to: files in ``run_dir/samples``, a before/after piano roll with the span
shaded, and players of the same seconds around the span before and after.

    cells = regenerate(run_dir, model, tok, "piece.mid", "5-8", config, seeds=[0, 1], temperatures=[0.9])
    show_infilled("piece.mid", cells)                   # in a notebook: the rolls, the players, the links

``regenerate`` is ``generate.infill.infill`` over the grid seeds x temperatures, then ``write_infilled``: per piece the
``.mid``, the before/after roll's ``.png`` and the ``.wav`` in ``run_dir/samples``.

What a notebook shows stays bounded however long the piece: the roll draws a window of ``window_seconds`` around the
span (a fixed-size picture), and each player plays ``preview_seconds`` around it (``preview.preview`` of an excerpt).
"""

from __future__ import annotations

import html
import time
from pathlib import Path

import numpy as np
import symusic
from matplotlib.figure import Figure

from tchaikovsky import io
from tchaikovsky.config import SampleConfig, parse_list
from tchaikovsky.generate.infill import infill
from tchaikovsky.generate.bars import bars_label
from tchaikovsky.render import audio
from tchaikovsky.render import display as display_lib
from tchaikovsky.render import preview as preview_lib

__all__ = ["SPAN_COLOR", "around", "excerpt", "infill_roll", "regenerate", "write_infilled", "show_infilled"]

SPAN_COLOR = display_lib.CONTINUATION_COLOR


def around(span: tuple[float, float], seconds: float, end: float | None = None) -> tuple[float, float]:
    """A window of ``seconds`` (seconds of the piece) around ``span``: centred on it when it fits, else opening a
    little (up to 2 s) before it so that the first seam is heard; never before 0 or, with ``end``, past the piece."""
    s, e = span
    lead = max((seconds - (e - s)) / 2, min(2.0, seconds / 4))
    a = max(0.0, s - lead)
    if end is not None and a + seconds > end:
        a = max(0.0, min(a, end - seconds))
    return a, a + seconds


def excerpt(score: symusic.Score, start: float, end: float) -> symusic.Score:
    """The notes of ``score`` starting in ``[start, end)`` seconds, moved to start at 0 (a second-time Score)."""
    return io.load_score(score, "second").clip(start, end, clip_end=True).shift_time(-start)


def _window_notes(score, start: float, end: float) -> symusic.Score:
    """``score`` in seconds with only the notes sounding in [start, end) (tempos and metre kept, for the bar lines)."""
    out = io.load_score(score, "second").copy()
    for track in out.tracks:  # a new list, not ``notes.filter(inplace=True)``: that is a no-op on symusic 0.5
        track.notes = type(track.notes)([n for n in track.notes if n.time < end and n.time + n.duration > start])
    return out


def infill_roll(original, result, *, window_seconds: float = 30.0, title: str | None = None) -> Figure:
    """Two piano rolls, the original above and ``result`` (``generate.infill.Infilled``) below, over the same window
    of ``window_seconds`` around the span, which is shaded on both."""
    span = result.seconds()
    a, b = around(span, window_seconds)
    fig = Figure(figsize=(12, 6), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    bars = bars_label(result.bars)
    for ax, score, label in ((axes[0], original, "before"), (axes[1], result.score, f"after: {bars} regenerated")):
        display_lib.piano_roll(_window_notes(score, a, b), ax=ax, title=label)
        ax.axvspan(*span, color=SPAN_COLOR, alpha=0.12, lw=0, label=bars)
        ax.set_xlim(a, b)
        ax.legend(loc="upper right", fontsize=8)
    lows, highs = zip(*(ax.get_ylim() for ax in axes))
    for ax in axes:  # one pitch scale for both
        ax.set_ylim(min(lows), max(highs))
    axes[0].set_xlabel("")
    if title:
        fig.suptitle(title)
    return fig


def write_infilled(run_dir: str | Path, results, *, name: str = "infill", render_audio: bool = True,
                   soundfont: str | None = None, window_seconds: float = 30.0) -> list[dict]:
    """Write, per result of ``generate.infill.infill``, the whole piece's ``.mid``, the before/after roll's ``.png``
    (``infill_roll`` against the result's ``original``) and, with
    ``render_audio`` when FluidSynth is available, the ``.wav`` into ``run_dir/samples``. Returns one dict per
    result: seed, temperature, bars, span (seconds), ended, n_bars, notes, midi_path, png_path, wav_path (or None),
    result."""
    out_dir = Path(run_dir) / "samples"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    can_render = render_audio and audio.audio_available(soundfont or None)[0]
    cells = []
    for r in results:
        stem = f"{name}-{stamp}-bars{r.bars[0]}-{r.bars[1]}-seed{r.seed}-temp{r.temperature:g}"
        midi = out_dir / f"{stem}.mid"
        r.score.dump_midi(str(midi))
        png = out_dir / f"{stem}.png"
        infill_roll(r.original, r, window_seconds=window_seconds, title=_title(r)).savefig(png, dpi=100)
        wav = audio.render(midi, out_dir / f"{stem}.wav", soundfont=soundfont or None) if can_render else None
        cells.append({"seed": r.seed, "temperature": r.temperature, "bars": r.bars, "span": r.seconds(),
                      "ended": r.ended, "n_bars": r.n_bars, "notes": r.notes, "midi_path": midi, "png_path": png,
                      "wav_path": wav, "result": r})
    return cells


def regenerate(run_dir: str | Path, model, tok, piece, bars, config: SampleConfig, *, seeds=(0,),
               temperatures=(1.0,), conditions=None, soundfont: str | None = None, order: str = "psm",
               rerank: int = 1, **asked) -> list[dict]:
    """Regenerate bars ``bars`` ("5-8") of ``piece`` once per (seed, temperature) of the grid ``seeds`` x
    ``temperatures`` (lists, or Papermill strings "0, 1"), in one batched call of ``generate.infill.infill`` with
    the run's ``conditions`` and the values ``asked`` (period, composer, instrumentation), the prompt in ``order``
    (``data.fim.order_of`` the model's metadata), each the best of ``rerank`` middles by how it leads into the bar
    after the span (1: plain sampling), and write each with ``write_infilled``; returns its dicts, in the grid's
    row-major order."""
    seeds, temps = parse_list(seeds, int), parse_list(temperatures, float)
    results = infill(model, tok, piece, bars, config, seeds=np.asarray(seeds)[:, None], temperatures=temps,
                     conditions=conditions, asked=asked, order=order, rerank=rerank)
    return write_infilled(run_dir, results, soundfont=soundfont)


def _title(r) -> str:
    how = "the model closed the middle" if r.ended else "the middle ran out of tokens"
    best = f"; candidate {r.rank} led best into the next bar" if r.lead_bits == r.lead_bits else ""  # not NaN
    return f"seed {r.seed}, temperature {r.temperature:g}: {r.n_bars} bar(s), {r.notes} notes; {how}{best}"


def _player(score, span, seconds: float, soundfont, label: str) -> str:
    """HTML: ``label`` and a player of ``seconds`` around ``span`` of ``score``, or why there is none."""
    ok, why = audio.audio_available(soundfont)
    a, b = around(span, seconds, io.load_score(score, "second").end())
    head = f"<b>{html.escape(label)}</b> <small>({preview_lib._clock(a)}-{preview_lib._clock(b)})</small>"
    if not ok:
        return f"{head} <i>no audio: {html.escape(why.splitlines()[0])}</i>"
    return head + preview_lib.preview(excerpt(score, a, b), seconds, soundfont=soundfont)._repr_html_()


def show_infilled(original, cells: list[dict], *, preview_seconds: float = preview_lib.SECONDS,
                  soundfont: str | Path | None = None) -> None:
    """Display regenerated bars (``write_infilled``'s cells): a player of the original around the span, then per
    cell its title, before/after roll, a player of the same seconds of the new piece and download links."""
    from IPython.display import HTML, Image, Markdown, display  # optional: only inside a notebook kernel

    if not cells:
        return
    original = io.load_score(original, "tick")
    span = cells[0]["span"]
    display(Markdown(f"### {bars_label(cells[0]['bars']).capitalize()}, regenerated"))
    display(HTML(_player(original, span, preview_seconds, soundfont, "before")))
    for c in cells:
        display(Markdown(f"#### {_title(c['result'])}"))
        display(Image(filename=str(c["png_path"])))
        display(HTML(_player(c["result"].score, span, preview_seconds, soundfont, "after")))
        display(display_lib.download_links(c["midi_path"], *([c["wav_path"]] if c["wav_path"] else [])))
