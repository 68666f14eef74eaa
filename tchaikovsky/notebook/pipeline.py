"""The notebooks' stages as functions over one run directory, so each notebook cell is a call, not a program.

    run_dir/data_report.json   every file considered (01, 02)
    run_dir/tokenizer.json     REMI + BPE (02)
    run_dir/shards/            token ids split by piece (02)
    run_dir/checkpoints/       training state + model.eqx (03)
    run_dir/history.jsonl      one record per logged step (03)
    run_dir/samples/           .mid, .wav, .png per sample (04)
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

import numpy as np

from tchaikovsky.data import corpus as corpus_lib
from tchaikovsky.data import tokenizer as tok_lib
from tchaikovsky.render import samples


def resolve_run_dir(run_dir: str = "") -> Path:
    """The run directory a notebook works in, always writable.

    ``""`` -> ``runs/default`` at the project root when run from the repo's notebooks/, else under the cwd
    (``/kaggle/working`` on Kaggle); on Kaggle, when that does not exist yet and exactly one attached input (another
    kernel's output, e.g. 04 attaching 03's) holds ``runs/default``, that run. A read-only run (one under
    ``/kaggle/input``, which Kaggle mounts read-only, or one this process cannot write) is copied to
    ``runs/<name>`` under the project root first, so the notebook can add to it; a copy made earlier is reused.
    Raises ValueError if several attached inputs hold a default run (set ``run_dir`` to one of them).
    """
    from tchaikovsky.notebook import kaggle

    cwd = Path.cwd()
    root = cwd.parent if cwd.name == "notebooks" and (cwd.parent / "tchaikovsky").is_dir() else cwd
    if run_dir:
        path = Path(run_dir).expanduser().resolve()
    else:
        path = root / "runs" / "default"
        attached = kaggle.attached_runs("default") if not path.exists() else []
        if len(attached) > 1:
            raise ValueError(f"several attached inputs hold a run: {[str(p) for p in attached]}; set run_dir to one")
        if not attached:
            return path
        path = attached[0]
    if path.is_dir() and (kaggle.is_kaggle_input(path) or not os.access(path, os.W_OK)):
        import shutil

        copy = root / "runs" / path.name
        if not copy.exists():
            shutil.copytree(path, copy)
            for item in (copy, *copy.rglob("*")):  # the copy keeps the source's read-only modes: lift them
                item.chmod(item.stat().st_mode | stat.S_IWUSR)
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
                 seed: int = 0, transpose_range: int = 0, progress: bool = True, conditions: bool = False,
                 judge_fraction: float = 0.0, tokenizer_from: str | Path | None = None) -> dict:
    """Train the tokenizer on the corpus (or take ``tokenizer_from``'s: another run, for a fine-tune), save it,
    and write the shards (with ``transpose_range`` = N, each training piece also transposed by -N..-1 and 1..N
    semitones). ``conditions``: pieces start with their period, composer and instrumentation tokens
    (``data.conditions``; with ``tokenizer_from``, that run's condition vocabulary extended by this corpus's
    values). ``judge_fraction``: that share of each composer's works becomes the ``judge`` split, never trained
    on. Returns a summary for the notebook."""
    from tchaikovsky.data import shards as shards_lib
    from tchaikovsky.data.augment import Augment
    from tchaikovsky.data.conditions import Conditions, load_conditions

    shifts = tuple(t for t in range(-transpose_range, transpose_range + 1) if t)
    augment = Augment(transpose=shifts) if shifts else None

    if tokenizer_from:
        source = find_run_dir(tokenizer_from)
        tok = tok_lib.load_tokenizer(source / "tokenizer.json")
        old = load_conditions(source, tok)
    else:
        tok, old = tok_lib.train_tokenizer([p.path for p in corpus.pieces], vocab_size, progress=progress), None
    tok_lib.save_tokenizer(tok, run_dir / "tokenizer.json")
    cond = (old or Conditions(len(tok))).extended(corpus.pieces) if conditions else None
    if cond is not None:
        cond.save(run_dir)
    shards_lib.build_shards(tok, corpus.pieces, run_dir / "shards", val_fraction=val_fraction, seed=seed,
                            progress=progress, augment=augment, conditions=cond,
                            held_out={"judge": judge_fraction} if judge_fraction else None)
    sh = shards_lib.Shards(run_dir / "shards")
    return {
        "vocab_size": sh.vocab_size,
        "pieces": {s: len(sh.pieces(s)) for s in sh.splits},
        "tokens": {s: sh.n_tokens(s) for s in sh.splits},
        **({"conditions": {k: len(cond.known(k)) for k in ("period", "composer", "instrumentation")}} if cond else {}),
        "skipped": sh.index.get("skipped", []),
    }


def find_run_dir(path: str | Path) -> Path:
    """The run directory of ``path`` (a run directory, its ``checkpoints/``, a ``step_*`` directory or a
    ``model.eqx`` file): the nearest of it and its parents holding ``tokenizer.json``."""
    path = Path(path).expanduser().resolve()
    for d in [path if path.is_dir() else path.parent, *path.parents][:4]:
        if (d / "tokenizer.json").is_file():
            return d
    raise FileNotFoundError(f"no run directory (with tokenizer.json) at or above {path}")


def load_conditions(run_dir: Path):
    """The run's condition vocabulary (``data.conditions.Conditions``), or None for a run trained without."""
    from tchaikovsky.data.conditions import load_conditions as load

    return load(run_dir, tok_lib.load_tokenizer(run_dir / "tokenizer.json"))


def ensure_data(run_dir: Path, data_dir: str, *, vocab_size: int, max_files, composers: str, seed: int,
                progress: bool = True, init_from: str = "", conditions: bool = False, judge_fraction: float = 0.0,
                transpose_range: int = 0):
    """The run's shards, built first (corpus -> tokenizer -> shards) if notebook 02 has not run for this run_dir. A
    fine-tune (``init_from``) builds them with the pretrained run's tokenizer and conditions (always on)."""
    from tchaikovsky.data import shards as shards_lib

    if not (run_dir / "shards" / "index.json").exists():
        corpus = load_data(data_dir, max_files=max_files, composers=composers, run_dir=run_dir, progress=progress)
        prepare_data(run_dir, corpus, vocab_size=vocab_size, seed=seed, progress=progress,
                     conditions=conditions or bool(init_from), judge_fraction=judge_fraction,
                     tokenizer_from=init_from or None, transpose_range=transpose_range)
    return shards_lib.Shards(run_dir / "shards")


def wandb_run_id(run_dir: Path) -> str:
    """The wandb run id of ``run_dir``, stable across processes and sessions: made on first use from the run's name
    and a digest of its resolved path, and kept in ``run_dir/wandb_id`` (so a copied run keeps rejoining it)."""
    path = Path(run_dir) / "wandb_id"
    if not path.exists():
        from tchaikovsky import io

        digest = hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:8]
        name = re.sub(r"[^A-Za-z0-9_-]", "-", Path(run_dir).resolve().name)[:48]
        io.atomic_write(path, f"{name}-{digest}\n")
    return path.read_text().strip()


def wandb_logger(mode: str, run_dir: Path, config: dict):
    """A training ``Hook`` that logs every history record to wandb (from process 0), or None when disabled. A
    resumed run rejoins its wandb run (``wandb_run_id``). The API key comes from WANDB_API_KEY or a Kaggle secret of
    that name, and is never printed."""
    if mode == "disabled":
        return None
    import jax
    import wandb

    from tchaikovsky.training.loop import Hook

    if mode == "online" and not os.environ.get("WANDB_API_KEY"):
        try:
            from kaggle_secrets import UserSecretsClient

            os.environ["WANDB_API_KEY"] = UserSecretsClient().get_secret("WANDB_API_KEY")
        except Exception:
            raise ValueError("wandb_mode='online' needs WANDB_API_KEY (environment variable or Kaggle secret)") from None
    run = wandb.init(project="tchaikovsky", name=run_dir.name, dir=str(run_dir), mode=mode, config=config,
                     resume="allow", id=wandb_run_id(run_dir))

    def log(record: dict, state) -> None:
        if jax.process_index() == 0:
            run.log(record, step=record["step"])

    return Hook(log)


def train_run(run_dir: Path, shards, *, preset: str, seed: int = 0, max_steps=None, max_minutes=None,
              batch_size=None, learning_rate=None, resume: bool = True, wandb_mode: str = "disabled",
              sample_every: int = 0, progress: bool = True, init_from: str = "", condition_dropout=None):
    """Train the named preset on the run's shards (see ``training.loop.train``). With ``sample_every`` > 0, a short
    unconditional sample is written, rendered and shown (and logged to wandb) every that many steps.

    ``init_from`` (another run, or one of its checkpoints): fine-tune its weights on these shards with a fresh
    optimizer and schedule; the learning rate defaults to a quarter of the preset's; the embedding and output layer
    grow when these shards' conditions extend the pretrained run's. ``condition_dropout``: see ``TrainConfig``."""
    from tchaikovsky.config import preset as get_preset
    from tchaikovsky.training.loop import train

    if init_from:
        source = find_run_dir(init_from)
        here_tok = tok_lib.load_tokenizer(run_dir / "tokenizer.json")
        their_tok = tok_lib.load_tokenizer(source / "tokenizer.json")
        if tok_lib.tokenizer_hash(here_tok) != tok_lib.tokenizer_hash(their_tok):
            raise ValueError(f"{run_dir} was tokenized with another tokenizer ({len(here_tok)} ids) than the run "
                             f"to fine-tune, {source} ({len(their_tok)} ids): use a new run_dir, and its data will "
                             "be tokenized with the pretrained run's tokenizer")
        if learning_rate is None:
            learning_rate = get_preset(preset).train.learning_rate / 4
    p = get_preset(preset, vocab_size=shards.vocab_size, max_steps=max_steps, batch_size=batch_size,
                   learning_rate=learning_rate, condition_dropout=condition_dropout)
    hooks = [wandb_logger(wandb_mode, run_dir, {"preset": preset, **p.model.to_dict(), **p.train.to_dict()})]
    if sample_every > 0:
        hooks.append(_sampler_hook(run_dir, sample_every, wandb_mode != "disabled"))
    return train(run_dir, p.model, p.train, shards, seed=seed, resume=resume, max_minutes=max_minutes,
                 progress=progress, hooks=[h for h in hooks if h is not None], extra_meta={"preset": preset},
                 init_from=init_from or None)


def _sampler_hook(run_dir: Path, every: int, to_wandb: bool, num_tokens: int = 256):
    """A training ``Hook``: every ``every`` steps, sample from the current weights, save, render and show it."""
    from tchaikovsky.config import SampleConfig
    from tchaikovsky.generate.prompts import make_prompt
    from tchaikovsky.render import audio, display
    from tchaikovsky.training.loop import Hook

    tok = tok_lib.load_tokenizer(run_dir / "tokenizer.json")
    cond = load_conditions(run_dir)
    prompt = np.concatenate([np.asarray(cond.prefix() if cond else [], np.int32), make_prompt(tok)])
    ok, _ = audio.audio_available()

    def sample(record: dict, state) -> None:
        step = record["step"]
        cell = samples.write_samples(run_dir, state.model, tok, prompt, SampleConfig(num_tokens=num_tokens),
                                     seeds=[step], temperatures=[1.0], render_audio=ok, name=f"train-step{step:06d}",
                                     conditions=cond)[0]
        display.show_sample(cell["midi_path"], wav_path=cell["wav_path"], png_path=cell["png_path"],
                            title=f"sample at step {step}")
        if to_wandb and cell["wav_path"] is not None:
            import wandb

            wandb.log({"sample": wandb.Audio(str(cell["wav_path"]), caption=f"step {step}")}, step=step)

    return Hook(sample, every=every)


def load_model(run_dir: Path, checkpoint: str = ""):
    """(model, tokenizer, meta) for sampling: the latest weights of the run, or an explicit checkpoint path."""
    from tchaikovsky.training.checkpoint import load_run_model

    return load_run_model(run_dir, checkpoint)


def conditioned_prompt(run_dir: Path, prompt, *, period: str = "", composer: str = "", instrumentation: str = ""):
    """``(prompt with the run's condition tokens in front, conditions or None)``; a value "" is "any". Raises
    ValueError for a value the run does not know (listing the known ones) or when the run has no conditions but
    one is asked for; warns when the values were never seen together in training."""
    import warnings

    cond, asked = load_conditions(run_dir), {"period": period, "composer": composer, "instrumentation": instrumentation}
    if cond is None:
        if any(asked.values()):
            given = ", ".join(f"{k}={v!r}" for k, v in asked.items() if v)
            raise ValueError(f"{run_dir} was trained without conditions, so it cannot follow {given}: fine-tune it "
                             "with conditions (notebook 03 with init_from) or leave them empty")
        return np.asarray(prompt, np.int32), None
    if note := cond.unseen(**asked):
        warnings.warn(note, stacklevel=2)
    return np.concatenate([np.asarray(cond.prefix(**asked), np.int32), np.asarray(prompt, np.int32)]), cond
