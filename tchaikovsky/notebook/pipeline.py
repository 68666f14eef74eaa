"""The notebooks' stages as functions over one run directory, so each notebook cell is a call, not a program.

    run_dir/data_report.json   every file considered (01, 02)
    run_dir/tokenizer.json     REMI + BPE (02)
    run_dir/shards/            token ids split by piece (02)
    run_dir/checkpoints/       training state + model.eqx (03)
    run_dir/history.jsonl      one record per logged step (03)
    run_dir/samples/           .mid, .wav, .png per sample (04)
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import stat
import warnings
from pathlib import Path

import jax
import numpy as np

from tchaikovsky import io
from tchaikovsky.config import SampleConfig
from tchaikovsky.config import preset as get_preset
from tchaikovsky.data import conditions as cond_lib
from tchaikovsky.data import corpus as corpus_lib
from tchaikovsky.data import shards as shards_lib
from tchaikovsky.data import tokenizer as tok_lib
from tchaikovsky.data.augment import Augment
from tchaikovsky.data.shards import Shards
from tchaikovsky.data.spec import DataSpec
from tchaikovsky.data.splits import assign_splits, held_out_overlap, held_out_roles
from tchaikovsky.generate.prompts import make_prompt
from tchaikovsky.notebook import kaggle
from tchaikovsky.preference.evaluate import chosen_round
from tchaikovsky.preference.rounds import round_model
from tchaikovsky.render import audio, display, samples
from tchaikovsky.training import checkpoint
from tchaikovsky.training.checkpoint import load_run_model
from tchaikovsky.training.loop import Hook, train
from tchaikovsky.training.restore import model_vocab


def resolve_run_dir(run_dir: str = "") -> Path:
    """The run directory a notebook works in, always writable.

    ``""`` -> ``runs/default`` at the project root when run from the repo's notebooks/, else under the cwd
    (``/kaggle/working`` on Kaggle); on Kaggle, when that does not exist yet and exactly one attached input (another
    kernel's output, e.g. 04 attaching 03's) holds ``runs/default``, that run. A read-only run (one under
    ``/kaggle/input``, which Kaggle mounts read-only, or one this process cannot write) is copied to
    ``runs/<name>`` under the project root first, so the notebook can add to it; a copy made earlier is reused.
    Raises ValueError if several attached inputs hold a default run (set ``run_dir`` to one of them).
    """
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
        copy = root / "runs" / path.name
        if not copy.exists():
            shutil.copytree(path, copy)
            for item in (copy, *copy.rglob("*")):  # the copy keeps the source's read-only modes: lift them
                item.chmod(item.stat().st_mode | stat.S_IWUSR)
        print(f"{path} is read-only: working on a copy in {copy}")
        return copy
    return path


def load_data(data_dir: str = "", *, max_files=None, composers: str = "bach",
              run_dir: Path | None = None) -> corpus_lib.Corpus:
    """The corpus (the embedded music21 one when ``data_dir`` is ""), with ``data_report.json`` written to run_dir.
    ``max_files``: keep at most this many pieces; None: every file of ``data_dir``, or the embedded corpus's default
    number (``embedded.DEFAULT_FILES``). When the cap leaves files unread, says so: "kept N of M files (max_files=...)"."""
    names = [c.strip() for c in composers.split(",") if c.strip()]
    corpus = corpus_lib.load_corpus(data_dir, max_files=max_files, composers=names)
    if (note := corpus.cap_note()) is not None:
        print(note)
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        corpus.write_report(Path(run_dir) / "data_report.json")
    return corpus


def prepare_data(run_dir: Path, corpus: corpus_lib.Corpus, spec: DataSpec) -> dict:
    """Train the tokenizer on the corpus's training pieces (or take ``spec.tokenizer_from``'s: another run, for a
    fine-tune), save it, and write the shards, which keep ``spec`` in their index (``data.spec``). With
    ``transpose_range`` = N, each training piece is also transposed by -N..-1 and 1..N semitones. ``conditions``:
    pieces start with their period, composer and instrumentation tokens (``data.conditions``; with
    ``tokenizer_from``, that run's condition vocabulary extended by this corpus's values). ``judge_fraction``: that
    share of the works (chosen by a hash of each work's key, so the same works in every run with this fraction) is
    held out, never trained on: half as the ``judge`` split (validation: for choices), half as ``judge_test``
    (test: for reported figures). BPE merges and the condition combinations are learned from the training pieces
    only. Returns a summary for the notebook."""
    augment = Augment(transpose=spec.transpositions) if spec.transpositions else None
    held_out = held_out_roles(spec.judge_fraction)
    train_pieces = assign_splits(corpus.pieces, spec.val_fraction, spec.seed, held_out)["train"]
    if spec.tokenizer_from:
        source = find_run_dir(spec.tokenizer_from)
        tok = tok_lib.load_tokenizer(source / "tokenizer.json")
        old = cond_lib.load_conditions(source, tok)
    else:
        tok = tok_lib.train_tokenizer([p.path for p in train_pieces], spec.vocab_size)
        old = None
    tok_lib.save_tokenizer(tok, run_dir / "tokenizer.json")
    cond = None
    if spec.conditions:
        cond = (old or cond_lib.Conditions(len(tok))).extended(corpus.pieces, counted=train_pieces)
        cond.save(run_dir)
    shards_lib.build_shards(tok, corpus.pieces, run_dir / "shards", val_fraction=spec.val_fraction, seed=spec.seed,
                            augment=augment, conditions=cond, held_out=held_out or None, data_spec=spec.to_dict())
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
    return cond_lib.load_conditions(run_dir, tok_lib.load_tokenizer(run_dir / "tokenizer.json"))


def ensure_data(run_dir: Path, spec: DataSpec):
    """The run's shards, built first (corpus -> tokenizer -> shards) if notebook 02 has not run for this run_dir. A
    fine-tune (``spec.tokenizer_from``) builds them with the pretrained run's tokenizer and conditions (always on).
    Shards that exist are used as they are; when they were made with another spec, a note says what differs."""
    if spec.tokenizer_from and not spec.conditions:
        spec = dataclasses.replace(spec, conditions=True)
    if not (run_dir / "shards" / "index.json").exists():
        corpus = load_data(spec.data_dir, max_files=spec.max_files, composers=spec.composers, run_dir=run_dir)
        prepare_data(run_dir, corpus, spec)
    shards = shards_lib.Shards(run_dir / "shards")
    made = DataSpec.of_shards(shards)
    if made is not None and (diff := spec.differences(made)):
        print(f"{run_dir / 'shards'} already exists and is used as it is; it was made with other data settings ("
              + "; ".join(diff) + "). Delete it, or use a new run_dir, to rebuild.")
    return shards


def wandb_run_id(run_dir: Path) -> str:
    """The wandb run id of ``run_dir``, stable across processes and sessions: made on first use from the run's name
    and a digest of its resolved path, and kept in ``run_dir/wandb_id`` (so a copied run keeps rejoining it)."""
    path = Path(run_dir) / "wandb_id"
    if not path.exists():
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
    import wandb  # optional: only when logging to wandb


    if mode == "online" and not os.environ.get("WANDB_API_KEY"):
        try:
            from kaggle_secrets import UserSecretsClient  # exists on Kaggle only

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
              sample_every: int = 0, init_from: str = "", condition_dropout=None, fim_rate=None,
              allow_overlap: bool = False, unconditional_rate=None, fim_spm=None, condition_lr=None):
    """Train the named preset on the run's shards (see ``training.loop.train``). With ``sample_every`` > 0, a short
    unconditional sample is written, rendered and shown (and logged to wandb) every that many steps.

    ``init_from`` (another run, or one of its checkpoints): fine-tune its weights on these shards with a fresh
    optimizer and schedule; the learning rate defaults to a quarter of the preset's; the embedding and output layer
    grow when these shards' conditions extend the pretrained run's. A fine-tune whose held-out pieces (judge,
    judge_test) the pretrained run (or its own parents) trained or validated on is refused (``check_held_out``)
    unless ``allow_overlap``, and then the overlap is recorded in the checkpoints' meta, where the judge's report
    finds it. ``condition_dropout``, ``unconditional_rate``, ``fim_rate``, ``fim_spm``, ``condition_lr``: see ``TrainConfig``; the
    model's vocabulary is ``run_preset``'s."""
    extra_meta: dict = {"preset": preset}
    if init_from:
        source = find_run_dir(init_from)
        here_tok = tok_lib.load_tokenizer(run_dir / "tokenizer.json")
        their_tok = tok_lib.load_tokenizer(source / "tokenizer.json")
        if tok_lib.tokenizer_hash(here_tok) != tok_lib.tokenizer_hash(their_tok):
            raise ValueError(f"{run_dir} was tokenized with another tokenizer ({len(here_tok)} ids) than the run "
                             f"to fine-tune, {source} ({len(their_tok)} ids): use a new run_dir, and its data will "
                             "be tokenized with the pretrained run's tokenizer")
        leaked = check_held_out(shards, source, allow_overlap=allow_overlap)
        if leaked:
            extra_meta["held_out_overlap"] = leaked
    p = run_preset(run_dir, shards, preset, init_from=init_from, max_steps=max_steps, batch_size=batch_size,
                   learning_rate=learning_rate, condition_dropout=condition_dropout, fim_rate=fim_rate,
                   unconditional_rate=unconditional_rate, fim_spm=fim_spm, condition_lr=condition_lr)
    hooks = [wandb_logger(wandb_mode, run_dir, {"preset": preset, **p.model.to_dict(), **p.train.to_dict()})]
    if sample_every > 0:
        hooks.append(_sampler_hook(run_dir, sample_every, wandb_mode != "disabled"))
    return train(run_dir, p.model, p.train, shards, seed=seed, resume=resume, max_minutes=max_minutes,
                 hooks=[h for h in hooks if h is not None], extra_meta=extra_meta,
                 init_from=init_from or None)


def run_preset(run_dir: Path, shards, preset: str, *, init_from: str = "", **overrides):
    """The named preset (``config.preset``) as a run on ``shards`` trains it: the model's vocabulary is the shards'
    ids, plus the fill-in-the-middle sentinels when ``fim_rate`` > 0 or when the model it continues (the run's own
    checkpoint, else ``init_from``'s) has them (``training.restore.model_vocab``: a FIM-capable model never loses
    them); with ``init_from``, the learning rate defaults to a quarter of the preset's. ``None`` overrides keep
    the preset's values."""
    if init_from and overrides.get("learning_rate") is None:
        overrides["learning_rate"] = get_preset(preset).train.learning_rate / 4
    vocab = model_vocab(shards, overrides.get("fim_rate") or 0.0, run_dir, init_from or None)
    return get_preset(preset, vocab_size=vocab, **overrides)


def check_held_out(shards, parent: Path, *, allow_overlap: bool = False) -> list[str]:
    """The rel_paths of ``shards``' held-out pieces (every split but train and val) that ``parent`` (a run
    directory) or the runs it was itself fine-tuned from trained or validated on, matched by content hash.
    Raises ValueError naming them unless ``allow_overlap`` (then warns); [] when there is no overlap."""
    held = [e for name in shards.splits if name not in ("train", "val") for e in shards.pieces(name)
            if not e.get("augment")]
    leaked: dict[str, dict] = {}
    for run in _lineage(parent):
        if held and (run / "shards" / "index.json").is_file():
            theirs = Shards(run / "shards")
            trained = [e for name in ("train", "val") if name in theirs.splits for e in theirs.pieces(name)]
            leaked.update({e["rel_path"]: e for e in held_out_overlap(held, trained)})
    if not leaked:
        return []
    names = sorted(leaked)
    what = (f"{len(names)} of this run's {len(held)} held-out pieces were trained or validated on by {parent} "
            f"(or a run it was fine-tuned from): {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}")
    ours = DataSpec.of_shards(shards)
    theirs = DataSpec.of_shards(Shards(parent / "shards")) if (parent / "shards" / "index.json").is_file() else None
    if ours and theirs and (diff := ours.differences(theirs, ["judge_fraction"], "here", f"in {parent.name}")):
        what += f" ({diff[0]})"
    if not allow_overlap:
        raise ValueError(f"{what}. Their judge and test figures would not be about unseen music. Rebuild the "
                         "pretrained run with the same judge_fraction (held-out works are a function of each work's "
                         "identity, so it then holds the same works out), or pass allow_overlap=True to fine-tune "
                         "anyway: the overlap is then recorded and the judge's report shows it")
    warnings.warn(f"{what}; allowed (allow_overlap=True) and recorded in the checkpoints' meta", stacklevel=2)
    return names


def _lineage(run: Path, depth: int = 8) -> list[Path]:
    """``run`` and the runs it was fine-tuned from (its checkpoints' ``init_from``), nearest first."""
    out = [Path(run)]
    while len(out) < depth:
        try:
            meta = checkpoint.read_meta(checkpoint.latest(out[-1] / "checkpoints"))
            out.append(find_run_dir((meta.get("init_from") or {})["path"]))
        except (FileNotFoundError, KeyError, TypeError, ValueError):
            break
    return out


def _sampler_hook(run_dir: Path, every: int, to_wandb: bool, num_tokens: int = 256):
    """A training ``Hook``: every ``every`` steps, sample from the current weights, save, render and show it."""
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
            import wandb  # optional: only when logging to wandb

            wandb.log({"sample": wandb.Audio(str(cell["wav_path"]), caption=f"step {step}")}, step=step)

    return Hook(sample, every=every)


def load_model(run_dir: Path, checkpoint: str = ""):
    """(model, tokenizer, meta) for sampling: the latest weights of the run (``""``), an explicit checkpoint path, or
    ``"tuned"``: the model of the run's last finished preference round (notebook 05). Raises ValueError for
    "tuned" when no round has finished."""
    if checkpoint == "tuned":
        checkpoint = str(tuned_checkpoint(run_dir))
    return load_run_model(run_dir, checkpoint)


def tuned_checkpoint(run_dir: Path) -> Path:
    """The weights of the preference round the validation judge chose among ``run_dir``'s finished rounds
    (``preference.evaluate.chosen_round``; round 0 is the fine-tuned model itself), said aloud; ValueError when no
    round has finished."""
    r = chosen_round(run_dir)
    if r is None:
        raise ValueError(f'checkpoint="tuned": {run_dir} has no finished preference round (no '
                         "preference/round_<r>/done.json): run notebook 05 on this run_dir first, or leave checkpoint "
                         '"" for the run\'s own model')
    path = round_model(run_dir, r)
    print(f'checkpoint="tuned": preference round {r}\'s model (the validation judge\'s choice), {path}')
    return path


def conditioned_prompt(run_dir: Path, prompt, *, period: str = "", composer: str = "", instrumentation: str = ""):
    """``(prompt with the run's condition tokens in front, conditions or None)``; a value "" is "any". Raises
    ValueError for a value the run does not know (listing the known ones) or when the run has no conditions but
    one is asked for; warns when the values were never seen together in training."""
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
