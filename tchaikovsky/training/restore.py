"""Where a training run starts: its own latest checkpoint (resume), another run's weights (``init_from``, the
vocabulary remapped when the shards' conditions extend it or the fill-in-the-middle sentinels join), or fresh
weights; and how many ids its model has (``model_vocab``).

Every refusal (a checkpoint of another model configuration or tokenizer, other frozen arrays, an existing run
without ``resume``) is raised before anything in the run directory changes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import equinox as eqx
import numpy as np

from tchaikovsky import io
from tchaikovsky.config import ModelConfig, TrainConfig
from tchaikovsky.data.conditions import load_conditions
from tchaikovsky.data.fim import SENTINELS, Fill, vocab_base, vocab_sources
from tchaikovsky.model import remap_vocab
from tchaikovsky.training import checkpoint
from tchaikovsky.training.schedule import next_plans, plan, planned_schedule
from tchaikovsky.training.state import Setup, TrainState, setup


class Start(NamedTuple):
    """What ``restore_or_init`` gives the loop."""
    setup: Setup  # mesh, optimizer, shardings; ``setup.state`` is the state to continue from, placed on the mesh
    schedule: Callable  # the learning rate by step (``planned_schedule(plans)``), which the optimizer follows
    plans: list[dict]  # the learning-rate plans (``training.schedule``), saved in every checkpoint's meta
    history: list[dict]  # the history records up to the resumed step ([] for a new run)
    origin: dict | None  # where the weights came from (the meta's ``init_from``), kept across resumes
    resumed: Path | None  # the checkpoint the run continues from (None for a new run)


def restore_or_init(run_dir: Path, model_cfg: ModelConfig, tc: TrainConfig, shards, *, seed: int, resume: bool,
                    init_from: str | Path | None, trainable, devices) -> Start:
    """The state a run in ``run_dir`` starts from: its latest checkpoint (with the history logged up to it and the
    learning-rate plans re-planned for ``tc``), else ``init_from``'s weights with a fresh optimizer, else a fresh
    model from ``seed``. Arguments as ``training.loop.train`` takes them. Raises ValueError when a checkpoint exists
    and not ``resume``, or when the checkpoint or ``init_from`` does not fit ``model_cfg``, the shards' tokenizer or
    ``trainable``, or when ``model_cfg.vocab_size`` is not ``model_vocab``'s; FileNotFoundError when ``init_from``
    holds no weights. Reads only; writes nothing."""
    if hasattr(shards, "vocab_size"):  # token shards (preference pairs train the model's vocabulary as it is)
        need = model_vocab(shards, tc.fim_rate, run_dir, init_from)
        if model_cfg.vocab_size != need:
            why = (f" + the {len(SENTINELS)} fill-in-the-middle sentinels (fim_rate > 0, or the model it continues "
                   "has them)") if need > shards.vocab_size else ""
            raise ValueError(f"the model has {model_cfg.vocab_size} ids; this run needs {need}: the shards' "
                             f"{shards.vocab_size}{why}. training.restore.model_vocab (or notebook.pipeline.run_preset) "
                             "gives the size")
    last = checkpoint.latest(run_dir / "checkpoints")
    saved, plans = {}, [plan(tc)]
    if last is not None:
        if not resume:
            raise ValueError(f"{run_dir} already holds checkpoints (latest {last.name}); set resume=True to continue "
                             f"it, or choose a new run_dir")
        saved = checkpoint.read_meta(last)
        check_compatible(saved, model_cfg, shards.tokenizer_hash, last, "resume from",
                         "Use the same preset, or a new run_dir, or resume=False.")
        plans = next_plans(saved.get("lr_plans") or [plan(saved.get("train_config", {}))], tc, saved["step"])
    schedule = planned_schedule(plans)
    conditions = getattr(shards, "conditions", None)
    s = setup(model_cfg, tc, seed=seed, devices=devices, trainable=trainable, schedule=schedule,
              condition_rows=None if conditions is None else (conditions.base, conditions.vocab_size))
    state, history, origin = s.state, [], saved.get("init_from")
    if last is not None:
        state = _resume(last, saved, state)
        history = io.read_jsonl(run_dir / "history.jsonl", upto_step=int(state.step))
    elif init_from:
        state, origin = _init_from(Path(init_from), state, model_cfg, shards)
    return Start(s._replace(state=eqx.filter_shard(state, s.shardings)), schedule, plans, history, origin, last)


def _resume(last: Path, saved: dict, fresh: TrainState) -> TrainState:
    """The state saved in ``last`` (meta ``saved``), in the structure of ``fresh``; the same arrays must train."""
    if saved.get("frozen", []) != fresh.frozen():
        raise ValueError(f"cannot resume from {last}: it froze {saved.get('frozen', [])}, this run freezes "
                         f"{fresh.frozen()}. Pass the same trainable, or start a new run_dir with init_from.")
    return checkpoint.load(last, fresh)


def _init_from(path: Path, fresh: TrainState, model_cfg: ModelConfig, shards) -> tuple[TrainState, dict]:
    """``fresh`` with the weights of the run at ``path`` (grown to the shards' vocabulary), and the meta's record of
    where they came from."""
    model, src = checkpoint.load_model(path)
    model, src, grown = grow_vocab(model, src, model_cfg, shards, path)
    check_compatible(src, model_cfg, shards.tokenizer_hash, path, "initialise from",
                     "Use the preset (and vocab_size) that run was trained with.")
    origin = {"path": str(path.resolve()), "step": src.get("step"), **grown}
    return eqx.tree_at(lambda s: s.model, fresh, model), origin


def check_compatible(meta: dict, model_cfg: ModelConfig, tok_hash: str | None, path: Path, what: str, hint: str):
    """ValueError unless the checkpoint's ``meta`` has ``model_cfg`` and the tokenizer of hash ``tok_hash``."""
    saved = meta.get("model_config", {})
    diff = {k: (saved.get(k), v) for k, v in model_cfg.to_dict().items() if saved.get(k) != v}
    if diff:
        raise ValueError(f"cannot {what} {path}: it was trained with another model configuration "
                         f"(checkpoint vs now: {diff}). {hint}")
    if tok_hash and meta.get("tokenizer_hash") and meta["tokenizer_hash"] != tok_hash:
        raise ValueError(f"cannot {what} {path}: it was trained with another tokenizer "
                         f"(hash {meta['tokenizer_hash']} vs {tok_hash}). Retokenize with its tokenizer or use a new "
                         f"run_dir.")


def grow_vocab(model, src: dict, model_cfg: ModelConfig, shards, path: Path):
    """``(model, meta, grown)``: a pretrained model remapped to the fine-tune's vocabulary of ``model_cfg.vocab_size``
    ids (``model.remap_vocab``, rows by name: ``data.fim.vocab_sources``; the shards' conditions may extend the old
    ones, the sentinels may be new or move after them), its meta ``src`` updated to match, and
    ``{"grown_from_vocab": old size}``; all unchanged (and ``{}``) when the layouts agree, or for data that is not
    token shards (preference pairs). The pretrained run's ``conditions.json`` is looked for next to its weights, up
    to the run directory."""
    if not hasattr(shards, "vocab_size"):
        return model, src, {}
    old_vocab, (tok_len, cond) = model.config.vocab_size, _layout(shards)
    old = source_conditions(path)
    if old is None and old_vocab not in (tok_len, tok_len + len(SENTINELS)):
        raise ValueError(f"cannot initialise from {path}: its model has {old_vocab} ids, its tokenizer "
                         f"{tok_len}, and no conditions.json was found beside it to say what the others mean")
    new_fill = model_cfg.vocab_size == vocab_base(tok_len, cond) + len(SENTINELS)
    sources = vocab_sources(tok_len, cond, Fill(vocab_base(tok_len, cond)) if new_fill else None, old,
                            Fill.of_model(old_vocab, tok_len, old))
    if len(sources) == old_vocab and np.array_equal(sources, np.arange(old_vocab)):
        return model, src, {}
    model = remap_vocab(model, sources)
    src = {**src, "model_config": {**src.get("model_config", {}), "vocab_size": model.config.vocab_size}}
    return model, src, {"grown_from_vocab": old_vocab}


def source_conditions(path: Path):
    """The condition vocabulary of the run whose weights are at ``path`` (``conditions.json`` next to them, up to
    the run directory), None when it has none."""
    here = path if path.is_dir() else path.parent
    olds = [c for d in (here, here.parent, here.parent.parent) if (c := load_conditions(d)) is not None]
    return olds[0] if olds else None


def _layout(shards) -> tuple[int, object]:
    """(the tokenizer's size, the conditions or None) of token shards."""
    cond = getattr(shards, "conditions", None)
    return (cond.base if cond is not None else shards.vocab_size), cond


def model_vocab(shards, fim_rate: float, run_dir: str | Path, init_from: str | Path | None = None) -> int:
    """The vocabulary size of the model a run on ``shards`` trains: the shards' ids (tokenizer, then conditions),
    plus the 4 fill-in-the-middle sentinels (``data.fim``) when ``fim_rate > 0`` or when the model it continues has
    them (the run's own latest checkpoint, else ``init_from``'s weights): a FIM-capable model never loses them."""
    tok_len, cond = _layout(shards)
    with_fill = shards.vocab_size + len(SENTINELS)
    last = checkpoint.latest(Path(run_dir) / "checkpoints")
    if last is not None:
        had = checkpoint.read_meta(last).get("model_config", {}).get("vocab_size") == with_fill
    elif init_from:
        old_vocab = checkpoint.model_meta(init_from).get("model_config", {}).get("vocab_size")
        had = old_vocab == vocab_base(tok_len, source_conditions(Path(init_from))) + len(SENTINELS)
    else:
        had = False
    return with_fill if fim_rate > 0 or had else shards.vocab_size
