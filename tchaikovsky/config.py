"""Model, training and sampling configuration, and the named presets the notebooks expose.

Configs are frozen dataclasses: a run's configuration is data, saved next to its checkpoints (``to_dict``) so a
checkpoint can always rebuild its model. Derived numbers (parameter count, FLOPs per token) are properties.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 2048  # set from the tokenizer at training time
    context: int = 256  # learned positions: the longest sequence the model sees at once
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    mlp_ratio: int = 4  # hidden width of the MLP = mlp_ratio * d_model
    # On the CPU backend, trace the fast paths: attention as einsums over blocks of 128 queries and the training
    # forward's layer scan unrolled (same math to float rounding; `python -m benchmarks training` times both). How
    # to compute, not what: it shapes no weight, so it is not saved (see to_dict) and a run may resume either way.
    cpu_fast_paths: bool = field(default=True, metadata={"saved": False})

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def n_params(self) -> int:
        d, L = self.d_model, self.n_layers
        block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * (self.mlp_ratio * d * d) + self.mlp_ratio * d + d
        return self.vocab_size * d + self.context * d + L * block + 2 * d + d * self.vocab_size + self.vocab_size

    @property
    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward + backward), PaLM appendix B convention:
        6 * (non-embedding matmul params) + 12 * layers * d_model * context (attention scores and mixing)."""
        d, L = self.d_model, self.n_layers
        matmul_params = L * (4 * d * d + 2 * self.mlp_ratio * d * d) + d * self.vocab_size
        return 6.0 * matmul_params + 12.0 * L * d * self.context

    def to_dict(self) -> dict:
        """The fields that define the model's weights and function, as saved with its checkpoints (a saved dict
        rebuilds the config with ``ModelConfig(**d)``; fields it lacks take their defaults)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("saved", True)}


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 16  # global batch (sequences per optimizer step), independent of device memory
    accum_steps: int = 1  # micro-batches per step: batch_size / accum_steps sequences go through at once
    seq_len: int = 256  # tokens per training window (<= model context)
    learning_rate: float = 1e-3  # peak, after warmup
    min_lr_ratio: float = 0.1  # the schedule decays to learning_rate * min_lr_ratio at max_steps
    warmup_steps: int = 50  # linear warmup from 0 (and the longest re-warmup when a resumed run changes its plan)
    max_steps: int = 500
    schedule: str = "cosine"  # "cosine" | "wsd" (warmup, constant, then linear decay): see training.schedule
    decay_fraction: float = 0.2  # wsd: the last fraction of max_steps decays
    weight_decay: float = 0.1  # matrix weights only
    grad_clip: float = 1.0  # global-norm clipping
    beta2: float = 0.95
    eval_every: int = 100
    log_every: int = 10
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    compute_dtype: str = "auto"  # "auto": bf16 on accelerators, fp32 on CPU; or "float32" / "bfloat16"
    fsdp: bool = False  # also shard parameters and optimizer state over the data axis
    condition_dropout: float = 0.0  # each condition token becomes its kind's "unknown" with this probability
    unconditional_rate: float = 0.0  # share of windows with every condition "unknown": guidance's unconditional path
    fim_rate: float = 0.0  # share of windows reordered prefix/suffix/middle, to learn infilling (data.fim); 0: off
    fim_spm: float = 0.0  # share of those in suffix-prefix-middle order (the rest prefix-suffix-middle)
    condition_lr: float = 1.0  # the condition tokens' embedding and output rows learn at this multiple of the rate

    def __post_init__(self):
        for name in ("fim_rate", "fim_spm", "unconditional_rate"):
            rate = getattr(self, name)
            if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)) or not 0 <= rate <= 1:
                raise ValueError(f"TrainConfig: {name}={rate!r} must be a number in [0, 1]")
        c = self.condition_lr
        if isinstance(c, bool) or not isinstance(c, (int, float, np.integer, np.floating)) or not 0 <= c < float("inf"):
            raise ValueError(f"TrainConfig: condition_lr={c!r} must be a finite number >= 0 (a multiple of learning_rate)")

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.accum_steps

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SampleConfig:
    """How ``generate`` continues a prompt (the batch's seeds and temperatures are passed beside it).

    Values are traced: changing one never recompiles, except ``num_tokens`` and ``keep`` (loop length and slide
    size are compiled in) and switching ``repetition_penalty`` or ``guidance`` between 1 (off) and another value
    (guided decoding runs a batch twice as wide: each sequence with and without its conditions)."""

    num_tokens: int = 512  # new tokens per piece (any length: the window slides past the model's context)
    min_tokens: int = 0  # EOS is masked until this many new tokens are out (0: the model may end at once)
    top_k: int = 0  # keep the k likeliest tokens (0: off)
    top_p: float = 1.0  # nucleus: the likeliest tokens covering this probability (1: off)
    min_p: float = 0.0  # drop tokens less likely than min_p x the top token (0: off)
    grammar: bool = True  # forbid tokens the tokenizer's grammar says cannot follow (needs the tokenizer)
    repetition_penalty: float = 1.0  # > 1 makes tokens already in the window less likely (CTRL; 1: off)
    max_bars: int | None = None  # stop a piece after this many new bars (needs the tokenizer; None: off)
    max_seconds: float | None = None  # write_samples cuts each piece at this length (None: no cut)
    keep: int | None = None  # tokens kept when the window slides (None: half the model's context)
    # classifier-free guidance over the conditions: logits g * conditioned + (1 - g) * unconditioned (the prompt's
    # condition tokens swapped for "unknown"); > 1 follows the conditions more strongly (1: off, 0: unconditional)
    guidance: float = 1.0

    def __post_init__(self):
        def check(ok: bool, what: str):
            if not ok:
                raise ValueError(f"SampleConfig: {what}")

        def integer(v) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        def number(v) -> bool:
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)

        n = self.num_tokens
        check(integer(n) and n >= 1, f"num_tokens={n!r} must be an integer >= 1")
        check(integer(self.min_tokens) and 0 <= self.min_tokens <= n,
              f"min_tokens={self.min_tokens!r} must be an integer in 0..num_tokens={n}")
        check(integer(self.top_k) and self.top_k >= 0, f"top_k={self.top_k!r} must be an integer >= 0 (0: off)")
        check(number(self.top_p) and 0.0 < self.top_p <= 1.0, f"top_p={self.top_p!r} must be in (0, 1] (1: off)")
        check(number(self.min_p) and 0.0 <= self.min_p <= 1.0, f"min_p={self.min_p!r} must be in [0, 1] (0: off)")
        check(isinstance(self.grammar, bool), f"grammar={self.grammar!r} must be True or False")
        check(number(self.repetition_penalty) and self.repetition_penalty > 0,
              f"repetition_penalty={self.repetition_penalty!r} must be > 0 (1: off)")
        check(self.max_bars is None or (integer(self.max_bars) and self.max_bars >= 1),
              f"max_bars={self.max_bars!r} must be None or an integer >= 1")
        check(self.max_seconds is None or (number(self.max_seconds) and self.max_seconds > 0),
              f"max_seconds={self.max_seconds!r} must be None or a number > 0")
        check(self.keep is None or (integer(self.keep) and self.keep >= 1),
              f"keep={self.keep!r} must be None or an integer >= 1")
        check(number(self.guidance) and np.isfinite(self.guidance) and self.guidance >= 0,
              f"guidance={self.guidance!r} must be a number >= 0 (1: off, 0: unconditional)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Preset:
    model: ModelConfig
    train: TrainConfig
    about: str = field(default="", compare=False)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        ModelConfig(context=64, d_model=64, n_layers=2, n_heads=2),
        TrainConfig(batch_size=8, seq_len=64, learning_rate=3e-3, warmup_steps=5, max_steps=20,
                    eval_every=10, log_every=5, checkpoint_every=10),
        "tests: compiles and trains in seconds",
    ),
    "demo": Preset(
        ModelConfig(context=256, d_model=192, n_layers=4, n_heads=4),
        TrainConfig(batch_size=16, seq_len=256, learning_rate=2e-3, warmup_steps=30, max_steps=1200,
                    eval_every=200, log_every=10, checkpoint_every=200),
        "about 8 quiet 2-core CPU minutes: chorale-like four-part writing on the embedded corpus",
    ),
    "small": Preset(
        ModelConfig(context=512, d_model=512, n_layers=8, n_heads=8),
        TrainConfig(batch_size=32, seq_len=512, learning_rate=6e-4, warmup_steps=200, max_steps=5000,
                    eval_every=500, log_every=20, checkpoint_every=500),
        "~30M parameters: one GPU or TPU session",
    ),
    "base-100m": Preset(
        ModelConfig(context=1024, d_model=768, n_layers=12, n_heads=12),
        TrainConfig(batch_size=64, seq_len=1024, learning_rate=3e-4, warmup_steps=1000, max_steps=50000,
                    eval_every=1000, log_every=50, checkpoint_every=1000, keep_checkpoints=3),
        "~100M parameters (vocab 10k): the full TchAIkovsky-size model",
    ),
}


def preset(name: str, *, vocab_size: int | None = None, **train_overrides) -> Preset:
    """Return the named preset, with the tokenizer's vocab size and any TrainConfig fields overridden.

    ``None`` overrides are ignored, so notebook parameters can pass ``batch_size=None`` for "preset default"."""
    if name not in PRESETS:
        raise ValueError(f"preset={name!r} is not one of {sorted(PRESETS)}")
    p = PRESETS[name]
    model = p.model if vocab_size is None else dataclasses.replace(p.model, vocab_size=int(vocab_size))
    overrides = {k: v for k, v in train_overrides.items() if v is not None}
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise ValueError(f"unknown training option(s) {sorted(unknown)}")
    train = dataclasses.replace(p.train, **overrides)
    if train.seq_len > model.context:
        raise ValueError(f"seq_len={train.seq_len} exceeds the {name} model's context of {model.context}")
    if train.batch_size % train.accum_steps:
        raise ValueError(f"batch_size={train.batch_size} is not divisible by accum_steps={train.accum_steps}")
    return Preset(model, train, p.about)


def compute_dtype(name: str = "auto"):
    """bf16 compute on accelerators, fp32 on CPU (where bf16 matmuls are emulated and slow), unless named."""
    if name == "auto":
        return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


def parse_list(value, kind=float) -> list:
    """``[0.8, 1.0]``, ``(0.8,)``, ``0.8`` or ``"0.8, 1.0"`` (as Papermill's ``-p`` passes it) -> ``[0.8, 1.0]``."""
    if isinstance(value, str):
        value = [v for v in value.strip("[]() ").split(",") if v.strip()]
    elif not isinstance(value, (list, tuple)):
        value = [value]
    try:
        return [kind(float(v)) if kind is int else kind(v) for v in value]
    except (TypeError, ValueError):
        return []
