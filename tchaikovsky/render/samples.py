"""Generated pieces as files a person can use: MIDI, piano-roll PNG, WAV, MusicXML; and corpus pieces to listen to.

``write_samples`` generates a batch of continuations of one prompt in one call and writes, per piece, the ``.mid``,
the piano roll (prompt in blue, continuation in orange) and, when FluidSynth is available, the ``.wav`` into
``run_dir/samples``: the full-length files a user keeps. Notebooks play only previews of them (``preview``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import symusic

from tchaikovsky.config import SampleConfig, parse_list
from tchaikovsky.data import corpus as corpus_lib
from tchaikovsky.data import tokenizer as tok_lib
from tchaikovsky.generate.prompts import cut_score
from tchaikovsky.generate.rerank import best_of
from tchaikovsky.generate.sampling import generate, kept_prompt, leading_conditions
from tchaikovsky.render import audio, display, preview


def write_samples(run_dir: Path, model, tok, prompt, config: SampleConfig, *, seeds=(0,), temperatures=(1.0,),
                  render_audio: bool = True, soundfont: str | None = None, name: str = "sample",
                  conditions=None, rerank: int = 1, scorer=None, asked: dict | None = None) -> list[dict]:
    """Generate one piece per (seed, temperature) pair of the grid ``seeds`` x ``temperatures`` in one batched call
    (``sampling.generate`` with ``config``, ``tok`` and the run's ``conditions``, if any) and write, for each, the ``.mid``, a piano-roll ``.png`` and
    (with ``render_audio``, when FluidSynth is available) the ``.wav`` into ``run_dir/samples``; a piece is cut at
    ``config.max_seconds`` seconds. ``seeds`` and ``temperatures`` are lists or Papermill strings ("0, 1").

    Returns one dict per piece: seed, temperature, ids (the tokens: the kept prompt, then the new tokens), n_tokens,
    midi_path, png_path, wav_path (or None), prompt_end (seconds at which the kept prompt ends; None for [BOS]).
    With ``rerank`` > 1 each piece is the best of that many candidates under ``scorer`` for the request ``asked``
    (``generate.rerank.best_of``: ``rerank`` x the sampling), and its dict has ``rerank`` (the Pick's info)."""
    seeds = parse_list(seeds, int)
    temps = parse_list(temperatures, float)
    grid_s, grid_t = [s for s in seeds for _ in temps], [t for _ in seeds for t in temps]
    picks = None
    if rerank > 1:
        picks = best_of(model, tok, prompt, config, n=rerank, seeds=grid_s, temperatures=grid_t,
                        conditions=conditions, asked=asked, scorer=scorer)
    seqs = [p.tokens for p in picks] if picks else generate(model, prompt, config, seeds=grid_s,
                                                             temperatures=grid_t, tok=tok, conditions=conditions)
    out_dir = run_dir / "samples"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kept = kept_prompt(prompt, model.config.context, leading_conditions(prompt, conditions))  # each piece's start
    prompt_end = float(tok_lib.decode_ids(tok, kept).to("second").end()) or None  # None: no notes in the prompt
    can_render, why = audio.audio_available(soundfont or None)
    if render_audio and not can_render:
        print(why)
    cells = []
    for s, t, ids in zip(grid_s, grid_t, seqs):
        stem = f"{name}-{stamp}-seed{s}-temp{t:g}"  # "temp0.9": never Path.with_suffix, which would eat ".9"
        midi = tok_lib.save_midi(tok, ids, out_dir / f"{stem}.mid")
        if config.max_seconds is not None:
            cut_score(symusic.Score(str(midi)), seconds=config.max_seconds).dump_midi(str(midi))
        png = display.save_piano_roll(midi, out_dir / f"{stem}.png", prompt_end=prompt_end,
                                      title=f"seed {s}, temperature {t:g}")
        wav = None
        if render_audio and can_render:
            wav = audio.render(midi, out_dir / f"{stem}.wav", soundfont=soundfont or None)
        cells.append({"seed": s, "temperature": t, "ids": ids, "n_tokens": int(len(ids)), "midi_path": midi,
                      "png_path": png, "wav_path": wav, "prompt_end": prompt_end})
        if picks:
            cells[-1]["rerank"] = picks[len(cells) - 1].info
    return cells


def listen_to(corpus: corpus_lib.Corpus, *, n: int = 3, seed: int = 0, preview_seconds: float = preview.SECONDS,
              soundfont: str | None = None) -> list[Path]:
    """Show ``n`` pieces of the corpus picked at random (by ``seed``) with ``display.show_sample``: piano roll, a
    player of the first ``preview_seconds`` and a link to the MIDI file. Nothing is rendered beyond the previews
    (a 30-minute performance costs what its first seconds cost) and nothing is written. Returns the MIDI paths."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(corpus.pieces), size=min(n, len(corpus.pieces)), replace=False) if corpus.pieces else []
    paths = [corpus.pieces[int(i)].path for i in sorted(picks)]
    for midi in paths:
        display.show_sample(midi, title=midi.stem, preview_seconds=preview_seconds, soundfont=soundfont)
    return paths


def to_musicxml(midi_path: str | Path, out: str | Path | None = None, *, divisions: tuple[int, ...] = (4, 3)) -> Path:
    """MusicXML of a MIDI file (for MuseScore and other notation software), written next to it by default.

    music21 quantises onsets and durations to the nearest 1/4 or 1/3 of a quarter note (``divisions``): a model's
    slightly-off timings become readable notation, so the score is a reading aid and the MIDI stays the exact
    record of what was generated."""
    from music21 import converter  # heavy (~2 s): only when the embedded corpus is exported

    midi_path = Path(midi_path)
    out = Path(out) if out else midi_path.with_suffix(".musicxml")
    score = converter.parse(str(midi_path), quantizePost=True, quarterLengthDivisors=divisions)
    score.write("musicxml", fp=str(out))
    return out
