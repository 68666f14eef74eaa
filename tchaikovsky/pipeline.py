"""The notebooks' stages as functions over one run directory, so each notebook cell is a call, not a program.

    run_dir/data_report.json   every file considered (01, 02)
    run_dir/tokenizer.json     REMI + BPE (02)
    run_dir/shards/            token ids split by piece (02)
    run_dir/checkpoints/       training state + model.eqx (03)
    run_dir/history.jsonl      one record per logged step (03)
    run_dir/samples/           .mid, .wav, .png per sample (04)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import symusic

from . import corpus as corpus_lib
from . import tokenizer as tok_lib
from .params import parse_list


def resolve_run_dir(run_dir: str = "") -> Path:
    """``""`` -> ``runs/default`` at the project root when run from the repo's notebooks/, else under the cwd
    (``/kaggle/working`` on Kaggle). A read-only run_dir (another Kaggle notebook's output attached under
    /kaggle/input) is copied to ``runs/<name>`` under the cwd first, so this notebook can add to it."""
    cwd = Path.cwd()
    root = cwd.parent if cwd.name == "notebooks" and (cwd.parent / "tchaikovsky").is_dir() else cwd
    if not run_dir:
        return root / "runs" / "default"
    path = Path(run_dir).expanduser().resolve()
    if path.is_dir() and not os.access(path, os.W_OK):
        import shutil

        copy = root / "runs" / path.name
        if not copy.exists():
            shutil.copytree(path, copy)
        print(f"{path} is read-only: working on a copy in {copy}")
        return copy
    return path


def load_data(data_dir: str = "", *, max_files=None, composers: str = "bach", run_dir: Path | None = None,
              progress: bool = True) -> corpus_lib.Corpus:
    """The corpus (the embedded music21 one when ``data_dir`` is ""), with ``data_report.json`` written to run_dir."""
    names = [c.strip() for c in composers.split(",") if c.strip()]
    corpus = corpus_lib.load_corpus(data_dir, max_files=max_files, composers=names, progress=progress)
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        corpus.write_report(Path(run_dir) / "data_report.json")
    return corpus


def prepare_data(run_dir: Path, corpus: corpus_lib.Corpus, *, vocab_size: int, val_fraction: float = 0.1,
                 seed: int = 0, transpose_range: int = 0, progress: bool = True) -> dict:
    """Train the tokenizer on the corpus, save it, and write the shards (with ``transpose_range`` = N, each training
    piece also transposed by -N..-1 and 1..N semitones). Returns a summary for the notebook."""
    from . import shards as shards_lib

    shifts = tuple(t for t in range(-transpose_range, transpose_range + 1) if t)
    augment = shards_lib.Augment(transpose=shifts) if shifts else None

    files = [p.path for p in corpus.pieces]
    tok = tok_lib.train_tokenizer(files, vocab_size, progress=progress)
    tok_lib.save_tokenizer(tok, run_dir / "tokenizer.json")
    shards_lib.build_shards(tok, corpus.pieces, run_dir / "shards", val_fraction=val_fraction, seed=seed,
                            progress=progress, augment=augment)
    sh = shards_lib.Shards(run_dir / "shards")
    return {
        "vocab_size": len(tok),
        "pieces": {s: len(sh.pieces(s)) for s in sh.splits},
        "tokens": {s: sh.n_tokens(s) for s in sh.splits},
        "skipped": sh.index.get("skipped", []),
    }


def ensure_data(run_dir: Path, data_dir: str, *, vocab_size: int, max_files, composers: str, seed: int,
                progress: bool = True):
    """The run's shards, built first (corpus -> tokenizer -> shards) if notebook 02 has not run for this run_dir."""
    from . import shards as shards_lib

    if not (run_dir / "shards" / "index.json").exists():
        corpus = load_data(data_dir, max_files=max_files, composers=composers, run_dir=run_dir, progress=progress)
        prepare_data(run_dir, corpus, vocab_size=vocab_size, seed=seed, progress=progress)
    return shards_lib.Shards(run_dir / "shards")


def wandb_logger(mode: str, run_dir: Path, config: dict):
    """A ``record -> None`` logger for wandb, or None when disabled. The API key comes from WANDB_API_KEY or a
    Kaggle secret of that name, and is never printed."""
    if mode == "disabled":
        return None
    import wandb

    if mode == "online" and not os.environ.get("WANDB_API_KEY"):
        try:
            from kaggle_secrets import UserSecretsClient

            os.environ["WANDB_API_KEY"] = UserSecretsClient().get_secret("WANDB_API_KEY")
        except Exception:
            raise ValueError("wandb_mode='online' needs WANDB_API_KEY (environment variable or Kaggle secret)") from None
    run = wandb.init(project="tchaikovsky", name=run_dir.name, dir=str(run_dir), mode=mode, config=config,
                     resume="allow", id=f"{run_dir.name}-{abs(hash(str(run_dir))) % 10**8}")
    return lambda record: run.log(record, step=record["step"])


def train_run(run_dir: Path, shards, *, preset: str, seed: int = 0, max_steps=None, max_minutes=None,
              batch_size=None, learning_rate=None, resume: bool = True, wandb_mode: str = "disabled",
              sample_every: int = 0, progress: bool = True):
    """Train the named preset on the run's shards (see ``train.train``). With ``sample_every`` > 0, a short
    unconditional sample is written, rendered and shown (and logged to wandb) every that many steps."""
    from .config import preset as get_preset
    from .train import train

    p = get_preset(preset, vocab_size=shards.vocab_size, max_steps=max_steps, batch_size=batch_size,
                   learning_rate=learning_rate)
    logger = wandb_logger(wandb_mode, run_dir, {"preset": preset, **p.model.to_dict(), **p.train.to_dict()})
    on_log = _sampler_hook(run_dir, sample_every, wandb_mode != "disabled") if sample_every > 0 else None
    return train(run_dir, p.model, p.train, shards, seed=seed, resume=resume, max_minutes=max_minutes,
                 progress=progress, logger=logger, on_log=on_log, extra_meta={"preset": preset})


def _sampler_hook(run_dir: Path, every: int, to_wandb: bool, num_tokens: int = 256):
    """``on_log`` callback: every ``every`` steps, sample from the current weights, save, render and show it."""
    from . import audio, display

    tok = tok_lib.load_tokenizer(run_dir / "tokenizer.json")
    ok, _ = audio.audio_available()

    def hook(record: dict, state) -> None:
        step = record["step"]
        if step % every:
            return
        cell = sample_run(run_dir, state.model, tok, make_prompt(tok), num_tokens=num_tokens, seeds=[step],
                          temperatures=[1.0], render_audio=ok, name=f"train-step{step:06d}")[0]
        display.show_sample(cell["midi_path"], wav_path=cell["wav_path"], png_path=cell["png_path"],
                            title=f"sample at step {step}")
        if to_wandb and cell["wav_path"] is not None:
            import wandb

            wandb.log({"sample": wandb.Audio(str(cell["wav_path"]), caption=f"step {step}")}, step=step)

    return hook


def load_model(run_dir: Path, checkpoint: str = ""):
    """(model, tokenizer, meta) for sampling: the latest weights of the run, or an explicit checkpoint path."""
    from . import checkpoint as ckpt_lib

    path = Path(checkpoint) if checkpoint else run_dir / "checkpoints" / "model.eqx"
    model, meta = ckpt_lib.load_model(path)
    tok = tok_lib.load_tokenizer(run_dir / "tokenizer.json")
    if meta.get("tokenizer_hash") and meta["tokenizer_hash"] != tok_lib.tokenizer_hash(tok):
        raise ValueError(f"{path} was trained with another tokenizer than {run_dir / 'tokenizer.json'}")
    if model.config.vocab_size != len(tok):
        raise ValueError(f"model vocab {model.config.vocab_size} != tokenizer vocab {len(tok)}")
    return model, tok, meta


def make_prompt(tok, prompt_midi: str = "", prompt_tokens: int = 256, prompt_chords: str = "") -> np.ndarray:
    """[BOS] + the first ``prompt_tokens`` tokens of ``prompt_midi`` or of the chord progression ``prompt_chords``
    (e.g. "Dm7 G7 Cmaj7", see ``prompts.chord_progression``), or just [BOS] (unconditional)."""
    from . import prompts

    if prompt_midi and prompt_chords:
        raise ValueError("give prompt_midi or prompt_chords, not both")
    if prompt_chords:
        return prompts.to_prompt(tok, prompts.chord_progression(prompt_chords), max_tokens=prompt_tokens)
    if not prompt_midi:
        return np.array([tok_lib.special_ids(tok)["bos"]], np.int32)
    if not Path(prompt_midi).is_file():
        raise FileNotFoundError(f"prompt_midi={prompt_midi!r} is not a file")
    return tok_lib.prompt_from_midi(tok, prompt_midi, max_tokens=prompt_tokens)


def sample_run(run_dir: Path, model, tok, prompt: np.ndarray, *, num_tokens: int, seeds=(0,), temperatures=(1.0,),
               top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0, grammar: bool = True,
               repetition_penalty: float = 1.0, max_bars: int | None = None, max_seconds: float | None = None,
               render_audio: bool = True, soundfont: str | None = None, name: str = "sample") -> list[dict]:
    """Generate one piece per (seed, temperature) pair in one batched call and write, for each, the ``.mid``, a
    piano-roll ``.png`` and (when FluidSynth is available) the ``.wav`` into ``run_dir/samples``.

    ``grammar`` masks tokens REMI cannot follow; ``max_bars`` stops each piece after that many new bars and
    ``max_seconds`` cuts it at that length."""
    from . import audio, display
    from .grammar import Grammar
    from .prompts import cut_score
    from .sample import generate

    seeds = parse_list(seeds, int)
    temps = parse_list(temperatures, float)
    grid_s, grid_t = [s for s in seeds for _ in temps], [t for _ in seeds for t in temps]
    special = tok_lib.special_ids(tok)
    rules = Grammar(tok) if grammar or max_bars is not None else None
    seqs = generate(model, prompt, num_tokens, seed=grid_s, temperature=grid_t, top_k=top_k, top_p=top_p,
                    min_p=min_p, eos_id=special["eos"], pad_id=special["pad"], grammar=rules if grammar else None,
                    repetition_penalty=repetition_penalty, max_bars=max_bars)
    out_dir = run_dir / "samples"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    prompt_end = None
    if len(prompt) > 1:
        prompt_end = float(tok_lib.decode_ids(tok, prompt).to("second").end())
    can_render, why = audio.audio_available(soundfont or None)
    if render_audio and not can_render:
        print(why)
    cells = []
    for s, t, ids in zip(grid_s, grid_t, seqs):
        stem = out_dir / f"{name}-{stamp}-seed{s}-temp{t:g}"
        midi = tok_lib.save_midi(tok, ids, stem.with_suffix(".mid"))
        if max_seconds is not None:
            cut_score(symusic.Score(str(midi)), seconds=max_seconds).dump_midi(str(midi))
        png = display.save_piano_roll(midi, stem.with_suffix(".png"), prompt_end=prompt_end,
                                      title=f"seed {s}, temperature {t:g}")
        wav = audio.render(midi, stem.with_suffix(".wav"), soundfont=soundfont or None) if render_audio and can_render else None
        cells.append({"seed": s, "temperature": t, "midi_path": midi, "png_path": png, "wav_path": wav,
                      "n_tokens": int(len(ids)), "prompt_end": prompt_end})
    return cells


def listen_to(corpus: corpus_lib.Corpus, out_dir: Path, *, n: int = 3, seed: int = 0,
              soundfont: str | None = None) -> list[tuple[Path, Path | None]]:
    """Render ``n`` pieces of the corpus picked at random (by ``seed``) to WAV; returns (midi, wav or None) pairs."""
    from . import audio

    rng = np.random.default_rng(seed)
    picks = rng.choice(len(corpus.pieces), size=min(n, len(corpus.pieces)), replace=False) if corpus.pieces else []
    ok, why = audio.audio_available(soundfont)
    if not ok:
        print(why)
    out = []
    for i in sorted(int(i) for i in picks):
        midi = corpus.pieces[i].path
        wav = audio.render(midi, Path(out_dir) / f"{midi.stem}.wav", soundfont=soundfont) if ok else None
        out.append((midi, wav))
    return out


def to_musicxml(midi_path: str | Path, out: str | Path | None = None, *, divisions: tuple[int, ...] = (4, 3)) -> Path:
    """MusicXML of a MIDI file (for MuseScore and other notation software), written next to it by default.

    music21 quantises onsets and durations to the nearest 1/4 or 1/3 of a quarter note (``divisions``): a model's
    slightly-off timings become readable notation, so the score is a reading aid and the MIDI stays the exact
    record of what was generated."""
    from music21 import converter

    midi_path = Path(midi_path)
    out = Path(out) if out else midi_path.with_suffix(".musicxml")
    score = converter.parse(str(midi_path), quantizePost=True, quarterLengthDivisors=divisions)
    score.write("musicxml", fp=str(out))
    return out
