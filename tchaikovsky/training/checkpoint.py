"""Checkpoints that never lose work.

Layout under ``run_dir/checkpoints/``::

    step_00000200/state.eqx   # TrainState leaves (fp32 model, optimizer state, step, RNG), tree_serialise_leaves
    step_00000200/meta.json   # model + train config, tokenizer hash, seed, preset: what is needed to rebuild it
    model.eqx                 # latest weights alone, for sampling: one JSON line of metadata, then the leaves

A checkpoint is written into a hidden temporary directory and renamed into place, so a run killed mid-save leaves
the previous checkpoints untouched and never a half-written ``step_*``. Only the last ``keep`` are retained.

Why not orbax-checkpoint: it would add 15 packages (tensorstore, protobuf, uvloop, ...) to every notebook's
install on Kaggle/Colab, while a directory rename gives the same atomicity for our single writer (process 0, after
gathering sharded arrays) and a few hundred MB of state. Its import cost is not the reason (measured: 0.75-0.85 s
vs 0.63 s for jax + equinox alone). The weights file is plain Equinox serialisation either way.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from tchaikovsky import io
from tchaikovsky.config import ModelConfig, TrainConfig
from tchaikovsky.model import skeleton

_PREFIX = "step_"


def _to_host(tree):
    """Every array as a host numpy array; arrays sharded across hosts are gathered first (multi-host FSDP)."""

    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            from jax.experimental import multihost_utils

            return multihost_utils.process_allgather(x, tiled=True)
        return np.asarray(x) if isinstance(x, jax.Array) else x

    return jax.tree.map(get, tree)


def list_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary directories of interrupted saves are ignored)."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    found = [p for p in d.iterdir() if p.is_dir() and p.name.startswith(_PREFIX) and (p / "meta.json").exists()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX):]))


def latest(ckpt_dir: str | Path) -> Path | None:
    found = list_checkpoints(ckpt_dir)
    return found[-1] if found else None


def save(ckpt_dir: str | Path, state, meta: dict, *, keep: int = 2) -> Path | None:
    """Save a TrainState atomically as ``step_<step>``; keep the newest ``keep``. Only process 0 writes."""
    host_state = _to_host(state)  # every process takes part in gathers; only one writes
    if jax.process_index() != 0:
        return None
    ckpt_dir = Path(ckpt_dir)
    io.remove_stale_temporaries(ckpt_dir)  # left by a run killed mid-save (only process 0 ever writes here)
    step = int(host_state.step)
    meta = {**meta, "step": step, "saved_at": time.time()}

    def write(tmp: Path):
        eqx.tree_serialise_leaves(tmp / "state.eqx", host_state)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))

    path = io.atomic_dir(ckpt_dir / f"{_PREFIX}{step:08d}", write)
    export_model(ckpt_dir / "model.eqx", host_state.model, meta)
    for old in list_checkpoints(ckpt_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return path


def read_meta(path: str | Path) -> dict:
    path = Path(path)
    if not (path / "meta.json").exists():
        raise FileNotFoundError(f"{path} is not a checkpoint (no meta.json)")
    return json.loads((path / "meta.json").read_text())


def load(path: str | Path, like):
    """Load the TrainState saved at ``path`` into the structure of ``like`` (a freshly initialised state)."""
    try:
        return eqx.tree_deserialise_leaves(Path(path) / "state.eqx", like)
    except Exception as e:  # shape/dtype mismatch: a checkpoint of another configuration
        raise ValueError(f"checkpoint {path} does not match this model configuration: {e}") from e


def export_model(path: str | Path, model, meta: dict) -> Path:
    """Weights for sampling: one JSON line of metadata (with ``model_config``), then the serialised leaves."""

    def write(f):
        f.write((json.dumps(meta) + "\n").encode())
        eqx.tree_serialise_leaves(f, _to_host(model))

    return io.atomic_write(path, write, durable=True)


def load_model(path: str | Path):
    """Rebuild a GPT from a weights file written by ``export_model`` (or a ``step_*`` directory). Returns
    ``(model, meta)``."""

    path = Path(path)
    if path.is_dir():  # a step directory or a checkpoints directory
        if (path / "model.eqx").exists():
            path = path / "model.eqx"
        else:
            meta = read_meta(path)
            like = skeleton(ModelConfig(**meta["model_config"]))
            full = eqx.tree_deserialise_leaves(path / "state.eqx", _state_like(like))
            return full.model, meta
    if not path.exists():
        raise FileNotFoundError(f"no model weights at {path}: train first (notebook 03) or pass checkpoint=")
    with open(path, "rb") as f:
        meta = json.loads(f.readline())
        return eqx.tree_deserialise_leaves(f, skeleton(ModelConfig(**meta["model_config"]))), meta


def _state_like(model):
    from tchaikovsky.training.state import TrainState, make_optimizer

    opt = make_optimizer(TrainConfig(), model)
    return eqx.filter_eval_shape(TrainState.create, model, opt, 0)


def load_run_model(run_dir: str | Path, checkpoint: str | Path = ""):
    """(model, tokenizer, meta) for sampling: the latest weights of the run, or an explicit checkpoint path."""
    from tchaikovsky.data import tokenizer as tok_lib

    run_dir = Path(run_dir)
    path = Path(checkpoint) if checkpoint else run_dir / "checkpoints" / "model.eqx"
    model, meta = load_model(path)
    tok = tok_lib.load_tokenizer(run_dir / "tokenizer.json")
    if meta.get("tokenizer_hash") and meta["tokenizer_hash"] != tok_lib.tokenizer_hash(tok):
        raise ValueError(f"{path} was trained with another tokenizer than {run_dir / 'tokenizer.json'}")
    if model.config.vocab_size != len(tok):
        raise ValueError(f"model vocab {model.config.vocab_size} != tokenizer vocab {len(tok)}")
    return model, tok, meta
