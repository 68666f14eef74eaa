"""The interactive sampler of notebook 04: pick a prompt, set the controls, press Generate, listen.

    panel = sampler_panel(model, tok, run_dir, pieces=[...], soundfont=None)
    panel                      # shown as a cell's value (or display(panel))
    panel.generate()           # what the Generate button does, callable without a browser (tests, scripts)

Each press samples one piece with ``samples.write_samples`` (written to ``run_dir/samples``: .mid, piano-roll .png,
and the full-length .wav when FluidSynth is available) and appends it to the panel's output area as
``display.show_sample`` shows it (title, piano roll with the prompt in blue, a player of the first
``preview_seconds``, download links: the panel's output stays small however long the piece), and under a piece of a
conditioned run what was asked and what the run's judge hears (``evaluation.caption``). A bad chord text, a missing or
corrupt upload, or any other failure is written into the output area as a message: a widget callback never
raises into the event loop, where the error would vanish.
"""

from __future__ import annotations

import dataclasses
import re
import traceback
from collections.abc import Iterable
from pathlib import Path

import ipywidgets as W
import numpy as np
from symusic import Score

from tchaikovsky.config import SampleConfig
from tchaikovsky.data.conditions import KINDS, UNKNOWN
from tchaikovsky.data.fim import check_order
from tchaikovsky.evaluation import caption
from tchaikovsky.generate import prompts
from tchaikovsky.render import audio, infill_panel, preview, samples
from tchaikovsky.render import display as display_lib

UNCONDITIONAL = "unconditional"
CHORDS = "chord progression"
UPLOAD = "uploaded MIDI"
MAX_AUDIO_SECONDS = 30 * 60  # longer samples (an untrained model's runs of empty bars) are not rendered
_STEPS = ("prompt", "generating", "rendering", "done")  # progress bar phases (value = index)
DEFAULT_CONFIG = SampleConfig(num_tokens=512, top_p=0.95)


def _any(value: str) -> str:
    return "" if value == UNKNOWN else value


def _uploaded_file(value) -> tuple[str, bytes]:
    """(name, bytes) of the last file in a FileUpload value: ipywidgets 8 (a tuple of dicts with "name" and
    "content", a memoryview) or 7 (a dict name -> {"content": bytes})."""
    if isinstance(value, dict):
        value = [{"name": k, **v} for k, v in value.items()]
    if not value:
        raise ValueError("no MIDI file uploaded yet: press the Upload button and choose a .mid/.midi file")
    item = list(value)[-1]
    return str(item["name"]), bytes(item["content"])


def _read_upload(value):
    """The uploaded MIDI file as a tick-time Score, or ValueError naming the file."""
    name, data = _uploaded_file(value)
    if Path(name).suffix.lower() not in (".mid", ".midi"):
        raise ValueError(f"{name} is not a MIDI file: upload a .mid or .midi file")
    try:
        return name, Score.from_midi(data)
    except Exception as e:  # symusic raises RuntimeError on a corrupt file
        raise ValueError(f"{name} is not a readable MIDI file ({e})") from None


def _shell():
    """The running IPython shell (the notebook kernel's), or a plain one outside notebooks, as
    ``Output.append_display_data`` uses too; its history stays in memory so nothing is written to ~/.ipython."""
    from IPython.core.interactiveshell import InteractiveShell  # optional: only inside a notebook kernel
    from traitlets.config import Config  # optional: only inside a notebook kernel

    if InteractiveShell.initialized():
        return InteractiveShell.instance()
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    return InteractiveShell.instance(config=config)


class SamplerPanel(W.VBox):
    """The sampler (an ``ipywidgets.VBox``). ``generate()`` does what the button does and returns the new sample's
    dict (``samples.write_samples``'s: seed, temperature, midi_path, png_path, wav_path, ...) or None after a failure
    (shown in ``output``). ``controls`` maps names to the input widgets: prompt, chords, upload, prompt_bars,
    temperature, top_p, length, min_tokens, seed, mode and bars (``infill_panel``: shown for a model with the fill
    sentinels), and period, composer, instrumentation and guidance with ``conditions``; ``config`` is the
    ``SampleConfig`` the sliders start from and override (num_tokens, min_tokens, top_p, guidance); ``output``,
    ``progress``, ``button`` and ``results`` (every sample so far) are attributes."""

    def __init__(self, model, tok, run_dir, *, pieces: Iterable[str | Path] = (), soundfont: str | Path | None = None,
                 config: SampleConfig = DEFAULT_CONFIG, temperature: float = 1.0, seed: int = 0,
                 chords: str = "C G Am F", prompt_bars: int = 4, preview_seconds: float = preview.SECONDS,
                 conditions=None, period: str = "", composer: str = "", instrumentation: str = "",
                 fim_order: str = "psm"):
        if not preview_seconds > 0:
            raise ValueError(f"preview_seconds must be > 0, got {preview_seconds!r}")
        self.model, self.tok, self.run_dir, self.config = model, tok, Path(run_dir), config
        self.conditions, self.fim_order = conditions, check_order(fim_order)
        self.preview_seconds = float(preview_seconds)
        self.soundfont = str(soundfont) if soundfont else None
        self.results: list[dict] = []
        self._count = 0
        style = {"description_width": "110px"}
        wide = lambda: W.Layout(width="420px")  # noqa: E731 - one Layout per widget: display is toggled per widget
        pieces = [Path(p) for p in pieces]
        options = [(UNCONDITIONAL, UNCONDITIONAL), (CHORDS, CHORDS)]
        options += [(f"piece: {p.stem}", p) for p in pieces] + [(UPLOAD, UPLOAD)]
        self.controls = {
            "prompt": W.Dropdown(options=options, value=UNCONDITIONAL, description="prompt", style=style,
                                 layout=wide()),
            "chords": W.Text(value=chords, description="chords", style=style, layout=wide(),
                             placeholder="C G Am F  |  Dm7 G7 Cmaj7  |  F#m Bb/D E7sus4"),
            "upload": W.FileUpload(accept=".mid,.midi", multiple=False, description="Upload MIDI"),
            "prompt_bars": W.IntSlider(value=prompt_bars, min=1, max=32, description="prompt bars", style=style,
                                       layout=wide()),
            "temperature": W.FloatSlider(value=temperature, min=0.0, max=2.0, step=0.05, description="temperature",
                                         style=style, layout=wide()),
            "top_p": W.FloatSlider(value=config.top_p, min=0.5, max=1.0, step=0.01, description="top-p",
                                   style=style, layout=wide()),
            "length": W.IntSlider(value=int(np.clip(config.num_tokens, 64, 4096)), min=64, max=4096, step=64,
                                  description="length (tokens)", style=style, layout=wide()),
            "min_tokens": W.IntSlider(value=0, min=0, max=4096, step=16, description="at least (tokens)",
                                      style=style, layout=wide()),
            "seed": W.IntText(value=seed, description="seed", style=style, layout=W.Layout(width="220px")),
        }
        asked = {"period": period, "composer": composer, "instrumentation": instrumentation}
        for kind in (KINDS if conditions is not None else ()):  # one dropdown per condition the run knows
            self.controls[kind] = W.Dropdown(options=[("any", "")] + [(v, v) for v in conditions.known(kind)],
                                             value=_any(conditions.resolve(kind, asked[kind])),
                                             description=kind, style=style, layout=wide())
        if conditions is not None:  # classifier-free guidance: > 1 follows the conditions more strongly
            self.controls["guidance"] = W.FloatSlider(value=float(np.clip(config.guidance, 0.0, 4.0)), min=0.0,
                                                      max=4.0, step=0.25, description="guidance", style=style,
                                                      layout=wide())
        self.controls.update(infill_panel.controls(style, wide()))  # "regenerate bars" (fill-in-the-middle models)
        self.controls["mode"].layout.display = None if infill_panel.capable(model, tok, conditions) else "none"
        self.button = W.Button(description="Generate", button_style="primary", icon="music")
        self.progress = W.IntProgress(value=0, min=0, max=len(_STEPS) - 1, description="ready",
                                      style={"description_width": "80px"})
        self.output = W.Output(layout=W.Layout(border="1px solid #ddd", padding="4px"))
        c = self.controls
        c["min_tokens"].max = c["length"].value  # EOS may be held back at most the whole length
        c["min_tokens"].value = min(config.min_tokens, c["length"].value)
        c["length"].observe(lambda change: setattr(c["min_tokens"], "max", change["new"]), names="value")
        self.button.on_click(lambda _: self.generate())
        c["prompt"].observe(lambda _: self._show_prompt_controls(), names="value")
        c["mode"].observe(lambda _: self._show_prompt_controls(), names="value")
        self._show_prompt_controls()
        wanted = [c[k] for k in (*KINDS, "guidance") if k in c]
        super().__init__([
            *([W.HTML("<b>Conditions</b>"), *wanted] if wanted else []),
            W.HTML("<b>Prompt</b>"), c["mode"], c["prompt"], c["chords"], W.HBox([c["upload"]]), c["prompt_bars"],
            c["bars"], c["best_of"],
            W.HTML("<b>Sampling</b>"), c["temperature"], c["top_p"], c["length"], c["min_tokens"],
            W.HBox([c["seed"], self.button, self.progress]),
            self.output,
        ])

    def _show_prompt_controls(self) -> None:
        """Only the inputs the chosen prompt uses are visible."""
        kind, regenerate = self.controls["prompt"].value, self.controls["mode"].value == infill_panel.REGENERATE
        visible = {"chords": kind == CHORDS and not regenerate, "upload": kind == UPLOAD, "bars": regenerate,
                   "best_of": regenerate,
                   "prompt_bars": (kind == UPLOAD or isinstance(kind, Path)) and not regenerate}
        for name, on in visible.items():
            self.controls[name].layout.display = None if on else "none"

    def _step(self, i: int, style: str = "") -> None:
        self.progress.value, self.progress.description, self.progress.bar_style = i, _STEPS[i], style

    def _prompt(self) -> tuple[np.ndarray, str]:
        """(prompt ids, a label for titles and file names) from the prompt controls."""
        kind, bars = self.controls["prompt"].value, self.controls["prompt_bars"].value
        if kind == UNCONDITIONAL:
            ids, label = prompts.make_prompt(self.tok), "unconditional"
        elif kind == CHORDS:
            text = self.controls["chords"].value
            ids, label = prompts.make_prompt(self.tok, chords=text), f"chords {text.strip()}"
        elif kind == UPLOAD:
            name, score = _read_upload(self.controls["upload"].value)
            ids, label = prompts.make_prompt(self.tok, midi=score, bars=bars), f"{Path(name).stem}, {bars} bar(s)"
        else:
            ids, label = prompts.make_prompt(self.tok, midi=kind, bars=bars), f"{Path(kind).stem}, {bars} bar(s)"
        if self.conditions is not None:  # [conditions..., BOS, ...]
            asked = {k: self.controls[k].value for k in KINDS}
            warning = self.conditions.unseen(**asked)
            if warning:
                self.output.append_stdout(f"Note: {warning}.\n")
            ids = np.concatenate([np.asarray(self.conditions.prefix(**asked), np.int32), ids])
            label = ", ".join([v for v in asked.values() if v] + [label])
        context = self.model.config.context
        if len(ids) > context:  # generate keeps the end; the piano roll marks where that ends
            self.output.append_stdout(f"The prompt ({len(ids)} tokens) is longer than the model's context: the piece "
                                      f"continues its last {context} tokens.\n")
        return ids, label

    def _piece(self) -> tuple[object, str]:
        """(the piece "regenerate bars" works on, a label): the picker's piece, the upload, or the last piece made."""
        kind = self.controls["prompt"].value
        if kind == UPLOAD:
            name, score = _read_upload(self.controls["upload"].value)
            return score, Path(name).stem
        return (kind, kind.stem) if isinstance(kind, Path) else infill_panel.last_piece(self.results)

    def _append_sample(self, cell: dict, title: str) -> None:
        """Append ``display.show_sample``'s output (title, roll, player, links) to the output area."""
        self._append(lambda: display_lib.show_sample(
            cell["midi_path"], wav_path=cell["wav_path"], prompt_end=cell["prompt_end"], title=title,
            preview_seconds=self.preview_seconds, soundfont=self.soundfont))

    def _append(self, show) -> None:
        """Append what ``show()`` displays to the output area."""
        from IPython.utils.capture import capture_output  # optional: only inside a notebook kernel

        _shell()
        with capture_output(stdout=False, stderr=False, display=True) as captured:
            show()
        self.output.outputs += tuple(
            {"output_type": "display_data", "data": o.data, "metadata": o.metadata or {}} for o in captured.outputs
        )

    def generate(self) -> dict | None:
        """Sample one piece with the current controls, save it, render it and append it to the output area.
        Returns its dict, or None when something failed (the message is in the output area, never raised)."""
        self.button.disabled = True
        try:
            return self._generate()
        except Exception as e:  # noqa: BLE001 - documented: shown, not raised into the widget event loop
            self._step(0, "danger")
            self.progress.description = "failed"
            expected = isinstance(e, (ValueError, FileNotFoundError))
            detail = "" if expected else "\n" + traceback.format_exc()
            self.output.append_stderr(f"Could not generate: {e}{detail}\n")
            return None
        finally:
            self.button.disabled = False

    def _generate(self) -> dict:
        c = self.controls
        self._step(0)
        if c["mode"].value == infill_panel.REGENERATE:
            return infill_panel.regenerate(self, *self._piece())
        prompt, label = self._prompt()
        self._count += 1
        seed, temp, top_p = int(c["seed"].value), float(c["temperature"].value), float(c["top_p"].value)
        config = dataclasses.replace(self.config, num_tokens=int(c["length"].value), top_p=top_p,
                                     min_tokens=min(int(c["min_tokens"].value), int(c["length"].value)))
        if "guidance" in c:
            config = dataclasses.replace(config, guidance=float(c["guidance"].value))
        name = f"panel{self._count:03d}-" + (re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-")[:40] or "sample")
        self._step(1)
        cell = samples.write_samples(self.run_dir, self.model, self.tok, prompt, config, seeds=[seed],
                                     temperatures=[temp], render_audio=False, name=name,
                                     conditions=self.conditions)[0]
        self._step(2)
        piece = Score(str(cell["midi_path"])).to("second")
        if audio.audio_available(self.soundfont)[0] and piece.note_num() > 0:  # the full-length file kept on disk
            if piece.end() <= MAX_AUDIO_SECONDS:
                cell["wav_path"] = audio.render(cell["midi_path"], soundfont=self.soundfont)
            else:
                self.output.append_stdout(f"The sample lasts {piece.end() / 60:.0f} min: no full-length WAV "
                                          f"written (limit {MAX_AUDIO_SECONDS / 60:.0f} min); the player below "
                                          f"plays its opening.\n")
        self._append_sample(cell, f"{label}: seed {seed}, temperature {temp:g}, top-p {top_p:g} "
                                  f"({cell['n_tokens']} tokens)")
        if text := caption.describe(self.run_dir, {k: c[k].value for k in KINDS if k in c}, cell):
            self.output.append_stdout(text + "\n")  # what was asked, what the run's judge hears (evaluation.caption)
        self._step(3, "success")
        self.results.append(cell)
        return cell


def sampler_panel(model, tok, run_dir, *, pieces: Iterable[str | Path] = (), soundfont: str | Path | None = None,
                  config: SampleConfig = DEFAULT_CONFIG, **defaults) -> SamplerPanel:
    """The interactive sampler for notebook 04: a ``SamplerPanel`` (an ``ipywidgets.VBox``).

    Controls: a prompt picker ("unconditional", "chord progression" from the chords text, one entry per file in
    ``pieces``, "uploaded MIDI" from the upload button; pieces and uploads are cut to "prompt bars" bars), sliders
    for temperature (0-2), top-p (0.5-1), length (64-4096 new tokens) and the least number of new tokens before the
    piece may end (0-length), a seed, the Generate button and a progress bar (prompt -> generating -> rendering ->
    done). ``panel.generate()`` runs the button's callback directly. ``config`` (a ``SampleConfig``) sets every other
    sampling control and the sliders' initial values; ``defaults`` the rest: temperature, seed, chords, prompt_bars,
    preview_seconds (the length of each player; the full WAV is a download link). With the run's ``conditions``,
    a dropdown per condition kind ("any" or a value the run knows; ``period``/``composer``/``instrumentation`` pick
    the first value) puts the condition tokens in front of every prompt, and a "guidance" slider (0-4, from
    ``config.guidance``) sets the classifier-free guidance: > 1 follows the conditions more strongly, at twice the
    compute per token. A model trained with fill-in-the-middle also gets a "regenerate bars" mode
    (``infill_panel``): Generate then rewrites the bars given ("5-8") of the picked or uploaded piece, or of the
    last piece made, prompting the model in ``fim_order`` ("psm" or "spm": ``data.fim.order_of`` its metadata).
    """
    return SamplerPanel(model, tok, run_dir, pieces=pieces, soundfont=soundfont, config=config, **defaults)
