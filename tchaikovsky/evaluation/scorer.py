"""The scorer: our stand-in for CLaMP 2 in preference tuning, an embedding of decoded notes trained on real pieces.

A piece becomes a beat-quantised roll (``roll.frames``: per 16th note, the sounding and starting pitch classes,
the lowest and highest sounding pitch, how many notes sound and start, silence); never our BPE ids, so the scorer
does not share the generator's view of the music. ``ScorerNet`` is a small 1-D convolutional encoder over windows of
that roll, mean- and max-pooled into an L2-normalised embedding; a piece's embedding is the normalised mean over
its windows. ``Scorer.fit`` trains it on real pieces with a supervised-contrastive loss per label (composer,
period, instrumentation: pieces sharing a value are positives) plus a linear classifier per label, under
transposition (the pitch classes rolled, heights shifted) and tempo (frames resampled) augmentation.

The reward of a sample for a prompt (a combination of labels) is its cosine to the mean embedding of the real
pieces with those labels (``score``). A second embedding per 8-bar window, trained to tell one passage from every
other under the same augmentations (an instance contrast), is the copy detector (``max_similarity_to_real``, with
a threshold calibrated on held-out real pieces): in the label embedding the pieces of one label gather so tightly
that a fixed cosine of 0.95 says nothing about copying. As measured (``python -m benchmarks scorer``) this
detector is weak; the reliable copy filter is ``evaluation.originality`` on the generated tokens. ``save`` /
``load`` keep the scorer in a run directory (``scorer/``: ``scorer.json``, ``model.eqx``, ``reference.npz``). It is
not the judge: the judge reads musicological histograms with a linear model and is trained on a disjoint split
(``judge.split_by_work``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from tchaikovsky import io, progress
from tchaikovsky.evaluation.roll import N_CHANNELS, augment, frames_of, windows

__all__ = ["Embedded", "Scorer", "ScorerConfig", "ScorerNet", "separation"]

_FORMAT = "tchaikovsky-scorer/1"


@dataclasses.dataclass(frozen=True)
class ScorerConfig:
    labels: tuple[str, ...] = ("composer", "period", "instrumentation")  # what pieces are pulled together by
    window: int = 128  # frames per window (8 bars of 4/4 at 16ths)
    max_frames: int = 4096  # frames read per piece (256 bars of 4/4)
    width: int = 64  # channels of the first convolution (the others 1.5x and 2x)
    dim: int = 64  # embedding size
    steps: int = 600
    batch: int = 32  # pieces per step, two augmented views each
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    temperature: float = 0.3  # of the supervised-contrastive loss (0.1 gathered each label so tightly that other
    # labels sat at cosine ~0.6 and held-out pieces at ~0.98 of their centroid; 0.3 keeps the reward spread out)
    instance_weight: float = 1.0  # of the instance contrast: a piece's two views against all other pieces, on a
    # second embedding (the copy detector: pieces of one label collapse together in the label embedding)
    instance_temperature: float = 0.2
    classifier_weight: float = 0.5  # of the per-label cross-entropy, beside the contrastive loss
    transpose: int = 6  # transposition augmentation: uniform in -transpose..transpose-1 semitones
    tempo: tuple[float, float] = (0.75, 1.33)  # tempo augmentation: frames resampled by a factor in this range

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Conv(eqx.Module):
    """A 1-D convolution over time as one matmul on shifted copies (im2col): (frames, c_in) -> (frames/stride,
    c_out), zero padding to keep ``frames / stride`` outputs. XLA compiles and runs this faster on CPU than a
    general convolution, and the scorer trains on CPU."""

    weight: Float[Array, "kc c_out"]
    bias: Float[Array, " c_out"]
    kernel: int = eqx.field(static=True)
    stride: int = eqx.field(static=True)

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, *, key: PRNGKeyArray):
        self.weight = jax.random.normal(key, (kernel * c_in, c_out)) / np.sqrt(kernel * c_in)
        self.bias = jnp.zeros(c_out)
        self.kernel, self.stride = kernel, stride

    def __call__(self, x: Float[Array, "frames c_in"]) -> Float[Array, "out c_out"]:
        half = self.kernel // 2
        padded = jnp.pad(x, ((half, half), (0, 0)))
        n = x.shape[0]
        cols = jnp.concatenate([padded[i: i + n] for i in range(self.kernel)], axis=1)  # (frames, kernel * c_in)
        return cols[:: self.stride] @ self.weight + self.bias


class ScorerNet(eqx.Module):
    """Convolutions over one window of frames -> two L2-normalised embeddings (2, dim): [0] trained to gather the
    pieces of one label (the reward), [1] to tell pieces apart whatever their key or tempo (the copy detector);
    plus per-label linear heads on [0]."""

    convs: tuple[Conv, ...]
    proj: eqx.nn.Linear
    heads: tuple[eqx.nn.Linear, ...]

    def __init__(self, config: ScorerConfig, n_classes: Sequence[int], *, key: PRNGKeyArray):
        w = config.width
        chans = [N_CHANNELS, w, w, 3 * w // 2, 2 * w]
        keys = jax.random.split(key, len(chans) + len(n_classes))
        # first conv at full resolution, then three that halve it: 16th -> 8th -> quarter -> half note
        self.convs = tuple(Conv(a, b, 5, 1 if i == 0 else 2, key=keys[i])
                           for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])))
        self.proj = eqx.nn.Linear(2 * chans[-1], 2 * config.dim, key=keys[len(chans) - 1])
        self.heads = tuple(eqx.nn.Linear(config.dim, max(k, 1), key=keys[len(chans) + i])
                           for i, k in enumerate(n_classes))

    def __call__(self, x: Float[Array, "frames channels"], mask: Float[Array, " frames"]) -> Float[Array, "2 dim"]:
        """The label and instance embeddings of one window (frames, N_CHANNELS) whose valid frames are ``mask``
        (1; padding 0)."""
        h = x
        for conv in self.convs:
            mask = mask[:: conv.stride]
            h = jax.nn.gelu(conv(h)) * mask[:, None]  # (frames / stride, c_out), padding kept at 0
        m = jnp.maximum(mask.sum(), 1.0)
        pooled = jnp.concatenate([h.sum(axis=0) / m, jnp.where(mask[:, None] > 0, h, -1e9).max(axis=0)])
        e = self.proj(pooled).reshape(2, -1)
        return e / jnp.maximum(jnp.linalg.norm(e, axis=-1, keepdims=True), 1e-6)


def _supcon(e, y, temperature):
    """Supervised-contrastive loss (Khosla et al. 2020) of normalised embeddings e (N, D) with int labels y (N,)
    (-1 = unknown: never an anchor nor a positive). Mean over anchors with at least one positive."""
    n = e.shape[0]
    eye = jnp.eye(n, dtype=bool)
    logits = jnp.where(eye, -1e9, e @ e.T / temperature)
    logp = logits - jax.scipy.special.logsumexp(logits, axis=1, keepdims=True)
    pos = (y[:, None] == y[None, :]) & ~eye & (y[:, None] >= 0)
    n_pos = pos.sum(axis=1)
    per_anchor = -(jnp.where(pos, logp, 0.0)).sum(axis=1) / jnp.maximum(n_pos, 1)
    has = (n_pos > 0).astype(jnp.float32)
    return (per_anchor * has).sum() / jnp.maximum(has.sum(), 1.0)


def _loss(net: ScorerNet, x, mask, ys, instance, config: ScorerConfig):
    """Per label: supervised contrast + weighted cross-entropy of its head; plus the instance contrast (views of
    one piece, ``instance`` (N,) ids, are the only positives)."""
    temperature, classifier_weight = config.temperature, config.classifier_weight
    both = jax.vmap(net)(x, mask)  # (N, 2, dim)
    e = both[:, 0]
    total = config.instance_weight * _supcon(both[:, 1], instance, config.instance_temperature)
    for i, head in enumerate(net.heads):
        y = ys[:, i]
        logits = jax.vmap(head)(e / temperature)  # a cosine classifier: the embedding scaled like the contrast
        logp = jax.nn.log_softmax(logits)
        known = (y >= 0).astype(jnp.float32)
        ce = -(jnp.take_along_axis(logp, jnp.maximum(y, 0)[:, None], axis=1)[:, 0] * known).sum() / jnp.maximum(
            known.sum(), 1.0)
        total = total + _supcon(e, y, temperature) + classifier_weight * ce
    return total


def _norm(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


@dataclasses.dataclass(frozen=True)
class Embedded:
    """What the scorer sees of n pieces: ``label`` (n, dim) piece embeddings (the reward's), ``instance``
    (windows, dim) embeddings of their windows (the copy detector's), ``owner`` (windows,) each window's piece."""

    label: np.ndarray
    instance: np.ndarray
    owner: np.ndarray


class Scorer:
    """A trained ``ScorerNet`` with its configuration, label classes, and the real pieces it compares with.

    Fields: ``config``, ``net``, ``classes`` ({label: sorted values}), ``reference`` (label embeddings of the real
    pieces, (n, dim)) with ``reference_labels`` ({label: list of values or None}), ``reference_windows`` (instance
    embeddings of their windows, (windows, dim)), ``info`` (JSON-able facts)."""

    def __init__(self, config: ScorerConfig, net: ScorerNet, classes: dict, reference=None, reference_labels=None,
                 info=None, reference_windows=None):
        self.config, self.net, self.classes = config, net, {k: list(v) for k, v in classes.items()}
        empty = np.zeros((0, config.dim), np.float32)
        self.reference = empty if reference is None else np.asarray(reference)
        self.reference_windows = empty if reference_windows is None else np.asarray(reference_windows)
        self.reference_labels = {k: list(v) for k, v in (reference_labels or {k: [] for k in config.labels}).items()}
        self.info = dict(info or {})
        self._embed_fn = eqx.filter_jit(jax.vmap(lambda net, x, m: net(x, m), in_axes=(None, 0, 0)))

    # ------------------------------------------------------------------------------------------------ training

    @classmethod
    def fit(cls, pieces: Sequence, labels: Mapping[str, Sequence] | None = None, *,
            config: ScorerConfig = ScorerConfig(), seed: int = 0) -> Scorer:
        """Train on real ``pieces`` (Pieces, MIDI paths or Scores) labelled by ``labels`` ({label: value per piece,
        None unknown}; default each piece's attributes ``config.labels``). Every piece (two augmented windows a
        step) and every label counts; pieces are drawn so that each combination of labels is seen about as often.
        The training pieces become the reference (``with_reference`` changes it). Deterministic for a seed.
        Shows a progress bar of the steps (``progress.bar``), with the latest loss read every 50 steps."""
        t0 = time.time()
        labels = {k: list(labels[k]) if labels is not None else [getattr(p, k, None) for p in pieces]
                  for k in config.labels}
        classes = {k: sorted({v for v in vals if v is not None}) for k, vals in labels.items()}
        ys = np.array([[classes[k].index(labels[k][i]) if labels[k][i] is not None else -1 for k in config.labels]
                       for i in range(len(pieces))], np.int32).reshape(len(pieces), len(config.labels))
        rolls = [frames_of(p, config.max_frames) for p in pieces]
        combos = [tuple(row) for row in ys]
        counts = {c: combos.count(c) for c in set(combos)}
        weights = np.array([1.0 / counts[c] for c in combos])
        weights /= weights.sum()

        key_net, _ = jax.random.split(jax.random.key(seed))
        # built in one compiled call: eager construction runs many tiny ops, which costs seconds on CPU
        net = eqx.filter_jit(ScorerNet)(config, [len(classes[k]) for k in config.labels], key=key_net)
        optim = optax.chain(optax.clip_by_global_norm(1.0),
                            optax.adamw(optax.cosine_decay_schedule(config.learning_rate, config.steps, 0.1),
                                        weight_decay=config.weight_decay))
        opt_state = eqx.filter_jit(optim.init)(eqx.filter(net, eqx.is_array))

        @eqx.filter_jit
        def step(net, opt_state, x, mask, y, instance):
            loss, grads = eqx.filter_value_and_grad(_loss)(net, x, mask, y, instance, config)
            updates, opt_state = optim.update(grads, opt_state, eqx.filter(net, eqx.is_array))
            return eqx.apply_updates(net, updates), opt_state, loss

        rng = np.random.default_rng(seed)
        losses = []
        bar = progress.bar(total=config.steps, desc="scorer", unit="step", dynamic_ncols=True)
        for s in range(config.steps):
            idx = rng.choice(len(pieces), size=config.batch, p=weights)
            views = []
            for i in idx:  # two views of one passage: overlapping crops, each in its own key and tempo
                s0 = int(rng.integers(0, max(len(rolls[i]) - config.window // 2, 0) + 1))
                s1 = s0 + int(rng.integers(-(config.window // 4), config.window // 4 + 1))
                views += [augment(rolls[i], rng, config.window, config.transpose, config.tempo, start)
                          for start in (s0, s1)]
            x = np.stack([v[0] for v in views])
            mask = np.stack([v[1] for v in views])
            instance = np.repeat(idx, 2).astype(np.int32)  # views of one piece are each other's positives
            net, opt_state, loss = step(net, opt_state, x, mask, np.repeat(ys[idx], 2, axis=0), instance)
            if s % 50 == 0 or s == config.steps - 1:  # reading the loss waits for the step: not every step
                losses.append(float(loss))
                bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            bar.update()
        bar.close()
        info = {"n_train": len(pieces), "seconds": round(time.time() - t0, 1), "losses": losses,
                "train_counts": {k: {c: int(np.sum(ys[:, j] == i)) for i, c in enumerate(classes[k])}
                                 for j, k in enumerate(config.labels)}}
        scorer = cls(config, net, classes, info=info)
        return scorer.with_reference(pieces, labels)

    # ------------------------------------------------------------------------------------------------ embeddings

    def embed(self, pieces: Sequence) -> np.ndarray:
        """(n, dim) float32 L2-normalised label embeddings: each piece's normalised mean over its windows (what
        ``score`` compares). Pieces are Pieces, MIDI paths or symusic Scores."""
        return self.embed_all(pieces).label

    def embed_all(self, pieces: Sequence, *, batch: int = 64) -> Embedded:
        """Both embeddings of every piece in one pass (``Embedded``); windows run in batches of ``batch`` (one
        compiled shape). A window counts for copies if at least half of it is music, or it is its piece's only one
        (a short tail of a final chord would match any other)."""
        wins, masks, owner = [], [], []
        for i, p in enumerate(pieces):
            w, m = windows(frames_of(p, self.config.max_frames), self.config.window)
            wins.append(w), masks.append(m), owner.extend([i] * len(w))
        dim = self.config.dim
        if not wins:
            return Embedded(np.zeros((0, dim), np.float32), np.zeros((0, dim), np.float32), np.zeros(0, np.int64))
        x, mask, owner = np.concatenate(wins), np.concatenate(masks), np.asarray(owner)
        out = []
        for s in range(0, len(x), batch):
            xb, mb = x[s: s + batch], mask[s: s + batch]
            k = len(xb)
            if k < batch:  # pad to one compiled shape
                xb = np.concatenate([xb, np.zeros((batch - k, *xb.shape[1:]), np.float32)])
                mb = np.concatenate([mb, np.ones((batch - k, mb.shape[1]), np.float32)])
            out.append(np.asarray(self._embed_fn(self.net, xb, mb))[:k])
        e = np.concatenate(out)  # (windows, 2, dim)
        sums = np.zeros((len(pieces), dim), np.float64)
        np.add.at(sums, owner, e[:, 0])
        full = mask.sum(axis=1) >= self.config.window / 2
        only = np.bincount(owner, minlength=len(pieces))[owner] == 1
        keep = full | only
        return Embedded(_norm(sums).astype(np.float32), e[keep, 1], owner[keep])

    def with_reference(self, pieces: Sequence, labels: Mapping[str, Sequence] | None = None) -> Scorer:
        """This scorer comparing with the real ``pieces`` (labels as in ``fit``): their label embeddings and
        labels become ``reference`` and ``reference_labels``, their windows' instance embeddings
        ``reference_windows``. Returns self."""
        emb = self.embed_all(pieces)
        self.reference, self.reference_windows = emb.label, emb.instance
        self.reference_labels = {k: list(labels[k]) if labels is not None else [getattr(p, k, None) for p in pieces]
                                 for k in self.config.labels}
        return self

    def _matching(self, prompt: Mapping[str, str | None]) -> np.ndarray:
        keep = np.ones(len(self.reference), bool)
        for k, v in prompt.items():
            if v is None:
                continue
            if k not in self.reference_labels:
                raise ValueError(f"the scorer knows the labels {list(self.reference_labels)}, not {k!r}")
            keep &= np.array([x == v for x in self.reference_labels[k]], bool)
        return keep

    def centroid(self, prompt: Mapping[str, str | None]) -> np.ndarray:
        """(dim,) normalised mean embedding of the reference pieces whose labels equal every non-None value of
        ``prompt`` (e.g. {"period": "Baroque", "composer": "Johann Sebastian Bach", "instrumentation": "voices"}).
        Raises ValueError when no reference piece matches."""
        keep = self._matching(prompt)
        if not keep.any():
            raise ValueError(f"no real piece of the scorer's reference matches {dict(prompt)}")
        return _norm(self.reference[keep].mean(axis=0))

    def count(self, prompt: Mapping[str, str | None]) -> int:
        """How many reference pieces match ``prompt`` (NotaGen uses prompts with more than 10)."""
        return int(self._matching(prompt).sum())

    def score(self, samples: Sequence, prompt: Mapping[str, str | None], *, embedded: Embedded | None = None
              ) -> np.ndarray:
        """(n,) cosine between each sample's label embedding and ``centroid(prompt)``: the reward. Pass
        ``embedded`` (``embed_all(samples)``) to embed once for both this and ``max_similarity_to_real``."""
        e = (embedded or self.embed_all(samples)).label
        return e @ self.centroid(prompt)

    def max_similarity_to_real(self, samples: Sequence, *, embedded: Embedded | None = None) -> np.ndarray:
        """(n,) for each sample, the largest cosine between the instance embedding of one of its windows (8 bars)
        and that of any window of any reference piece: near 1 where a sample repeats a passage of a real piece,
        even transposed or at another tempo. A sample above the copy threshold (calibrate it with
        ``calibrate_copy_threshold``) is taken for a copy."""
        emb = embedded or self.embed_all(samples)
        out = np.full(len(emb.label), -1.0, np.float32)
        if len(self.reference_windows) and len(emb.instance):
            np.maximum.at(out, emb.owner, (emb.instance @ self.reference_windows.T).max(axis=1))
        return out

    def calibrate_copy_threshold(self, held_out: Sequence, quantile: float = 0.99) -> float:
        """The ``quantile`` of ``max_similarity_to_real`` over real pieces NOT in the reference (held out by work):
        how similar genuinely different pieces get. A sample above it is more like some real piece than 99% of
        other real pieces are: a copy. Stored in ``info["copy_threshold"]``."""
        sims = self.max_similarity_to_real(held_out)
        self.info["copy_threshold"] = t = float(np.quantile(sims, quantile))
        self.info["copy_threshold_from"] = {"n": len(held_out), "quantile": quantile}
        return t

    # ------------------------------------------------------------------------------------------------ files

    def save(self, directory: str | Path) -> Path:
        """Write ``directory`` (atomically, replacing it): scorer.json (format, config, classes, reference labels,
        info), model.eqx (the net's weights), reference.npz (the reference embeddings). Returns the directory."""
        meta = {"format": _FORMAT, "config": self.config.to_dict(), "classes": self.classes,
                "reference_labels": self.reference_labels, "info": self.info}

        def write(tmp: Path):
            (tmp / "scorer.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))
            eqx.tree_serialise_leaves(tmp / "model.eqx", self.net)
            with open(tmp / "reference.npz", "wb") as f:
                np.savez(f, reference=self.reference, reference_windows=self.reference_windows)

        return io.atomic_dir(directory, write)

    @classmethod
    def load(cls, directory: str | Path) -> Scorer:
        """A scorer written by ``save``. Raises ValueError if ``directory`` holds no scorer of this format."""
        d = Path(directory)
        try:
            meta = json.loads((d / "scorer.json").read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{d} holds no scorer ({e})") from e
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{d} is not a scorer of format {_FORMAT}")
        cfg = meta["config"]
        config = ScorerConfig(**{**cfg, "labels": tuple(cfg["labels"]), "tempo": tuple(cfg["tempo"])})
        like = eqx.filter_eval_shape(ScorerNet, config, [len(meta["classes"][k]) for k in config.labels],
                                     key=jax.random.key(0))
        net = eqx.tree_deserialise_leaves(d / "model.eqx", like)
        with np.load(d / "reference.npz") as a:
            reference, instance = a["reference"], a["reference_windows"]
        return cls(config, net, meta["classes"], reference, meta["reference_labels"], meta.get("info"), instance)


def separation(scorer: Scorer, pieces: Sequence, label: str, labels: Sequence | None = None) -> dict:
    """How well the scorer separates held-out real ``pieces`` by ``label`` (values ``labels``, default the pieces'
    attributes; unknown ones left out): ``nearest_centroid`` accuracy (each piece assigned the value whose
    reference centroid is closest; chance is ``1 / n_classes``), ``within`` / ``between`` mean cosine between
    held-out pieces of the same / different values (pairs of distinct pieces), and ``n``, ``n_classes``."""
    ys = list(labels) if labels is not None else [getattr(p, label, None) for p in pieces]
    keep = [i for i, y in enumerate(ys) if y is not None and scorer.count({label: y}) > 0]
    e = scorer.embed([pieces[i] for i in keep])
    y = np.array([ys[i] for i in keep], dtype=object)
    values = sorted(set(scorer.reference_labels[label]) - {None})
    cents = np.stack([scorer.centroid({label: v}) for v in values])
    pred = np.array(values, dtype=object)[(e @ cents.T).argmax(axis=1)] if len(e) else np.array([])
    sims = e @ e.T
    same = (y[:, None] == y[None, :]) & ~np.eye(len(y), dtype=bool)
    diff = y[:, None] != y[None, :]
    return {"label": label, "n": len(keep), "n_classes": len(set(y.tolist())),
            "nearest_centroid": float(np.mean(pred == y)) if len(y) else float("nan"),
            "within": float(sims[same].mean()) if same.any() else float("nan"),
            "between": float(sims[diff].mean()) if diff.any() else float("nan")}
