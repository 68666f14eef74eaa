"""The transformer's parts: initialisation, fp32 norms, dense layers, causal and cached attention, and ``Block``.

``Block`` is one parallel pre-norm block, ``x + attn(norm(x)) + mlp(norm(x))`` (one shared norm, GPT-J style). It
works on any leading batch axes; with a layer's KV cache it also attends to cached positions and writes its own keys
and values into that cache in place (see ``Block.__call__``).
"""

from __future__ import annotations

import math
from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from tchaikovsky.config import ModelConfig


def init_linear(in_dim: int, out_dim: int, std: float, key: PRNGKeyArray) -> eqx.nn.Linear:
    layer = eqx.nn.Linear(in_dim, out_dim, key=key)
    weight = std * jax.random.normal(key, (out_dim, in_dim))
    return eqx.tree_at(lambda l: (l.weight, l.bias), layer, (weight, jnp.zeros(out_dim)))


def normalize(norm: eqx.nn.LayerNorm, x: Float[Array, "*batch seq d"]) -> Float[Array, "*batch seq d"]:
    # Normalise in fp32 whatever the compute dtype: bf16 variance estimates are too coarse.
    flat = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
    return jax.vmap(norm)(flat).astype(x.dtype).reshape(x.shape)


def dense(layer: eqx.nn.Linear, x: Float[Array, "*batch d_in"]) -> Float[Array, "*batch d_out"]:
    # Contract with the (out, in) weight as stored: ``x @ W.T`` makes XLA:CPU copy a transposed W on every call when
    # x has one row (decoding), 4-10x the cost of the matmul itself.
    return jnp.einsum("...i,oi->...o", x, layer.weight) + layer.bias


def fast_on_cpu(cpu_fast_paths: bool) -> bool:
    """True when tracing for the CPU backend with the fast paths on (``ModelConfig.cpu_fast_paths``). Read while a
    function is traced: the choice is compiled in."""
    return cpu_fast_paths and jax.default_backend() == "cpu"


def causal_attention(
    q: Float[Array, "*batch seq heads head_dim"],
    k: Float[Array, "*batch seq heads head_dim"],
    v: Float[Array, "*batch seq heads head_dim"],
    *,
    cpu_fast_paths: bool,
) -> Float[Array, "*batch seq heads head_dim"]:
    """Causal self-attention over the sequence, with ``jax.nn.dot_product_attention``'s arithmetic.

    On the CPU backend with ``cpu_fast_paths`` (``ModelConfig``) it is written as einsums over blocks of queries
    (``blocked_causal_attention``): XLA:CPU runs them faster than ``dot_product_attention``'s lowering, and the
    blocks skip most of the masked half of the scores (see ``python -m benchmarks training``). Elsewhere ``dot_product_attention`` lets XLA or cuDNN pick a fused kernel (it
    takes at most one batch axis)."""
    if fast_on_cpu(cpu_fast_paths):
        return blocked_causal_attention(q, k, v)
    if q.ndim <= 4:
        return jax.nn.dot_product_attention(q, k, v, is_causal=True)
    flat = [t.reshape(-1, *t.shape[-3:]) for t in (q, k, v)]
    return jax.nn.dot_product_attention(*flat, is_causal=True).reshape(q.shape)


def blocked_causal_attention(
    q: Float[Array, "*batch seq heads head_dim"],
    k: Float[Array, "*batch seq heads head_dim"],
    v: Float[Array, "*batch seq heads head_dim"],
    block: int = 128,
) -> Float[Array, "*batch seq heads head_dim"]:
    """Causal self-attention, ``cached_attention``'s arithmetic, one block of ``block`` queries at a time: queries
    ``i..i+block-1`` score only keys ``0..i+block-1``, so the scores above the diagonal's blocks are never computed
    (3/8 fewer score entries at 256 positions). A masked score contributes an exact 0 to the softmax either way, so
    the result is the unblocked one up to float rounding."""
    S, hs = q.shape[-3], q.shape[-1]
    q, k, v = (jnp.swapaxes(t, -3, -2) for t in (q, k, v))  # (*batch, heads, S, hs)
    dot = partial(jnp.einsum, preferred_element_type=jnp.float32)
    outs = []
    for lo in range(0, S, block):
        hi = min(S, lo + block)
        scores = dot("...sd,...td->...st", q[..., lo:hi, :], k[..., :hi, :]) * jnp.float32(1 / math.sqrt(hs))
        mask = jnp.arange(hi)[None, :] <= jnp.arange(lo, hi)[:, None]
        scores = jnp.where(mask, scores, -0.7 * jnp.finfo(jnp.float32).max)
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        outs.append(jnp.einsum("...st,...td->...sd", probs, v[..., :hi, :]))
    return jnp.swapaxes(jnp.concatenate(outs, axis=-2) if len(outs) > 1 else outs[0], -3, -2)


def cached_attention(
    q: Float[Array, "*batch seq heads head_dim"],
    k: Float[Array, "*batch seq heads head_dim"],
    v: Float[Array, "*batch seq heads head_dim"],
    ck: Float[Array, "*batch heads context head_dim"] | None,
    cv: Float[Array, "*batch heads context head_dim"] | None,
    start,
) -> Float[Array, "*batch seq heads head_dim"]:
    """Causal attention of queries at positions ``start+i`` over the cached positions ``0..start-1`` (``ck``, ``cv``;
    None when nothing precedes) and the call's own keys and values, with ``jax.nn.dot_product_attention``'s arithmetic
    (scores in fp32, scaled after the product, masked, fp32 softmax, probabilities in the value dtype).

    The cache is read as it was BEFORE this call: the new keys are attended from ``k``, not from the updated cache, so
    the in-place cache write never has to wait for (or be copied around) a read of the same buffer."""
    S, hs = q.shape[-3], q.shape[-1]
    q, k, v = (jnp.swapaxes(t, -3, -2) for t in (q, k, v))  # (*batch, heads, S, hs)
    dot = partial(jnp.einsum, preferred_element_type=jnp.float32)
    scores = dot("...sd,...td->...st", q, k)  # (*batch, heads, S, S)
    mask = jnp.tril(jnp.ones((S, S), bool))
    if ck is not None:
        C = ck.shape[-2]
        scores = jnp.concatenate([dot("...sd,...cd->...sc", q, ck.astype(q.dtype)), scores], axis=-1)
        mask = jnp.concatenate([jnp.broadcast_to(jnp.arange(C) < start, (S, C)), mask], axis=-1)
    scores = scores * jnp.float32(1 / math.sqrt(hs))
    scores = jnp.where(mask, scores, -0.7 * jnp.finfo(jnp.float32).max)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("...st,...td->...sd", probs[..., -S:], v)
    if ck is not None:
        out = out + jnp.einsum("...sc,...cd->...sd", probs[..., :-S], cv.astype(v.dtype))
    return jnp.swapaxes(out, -3, -2)


class Block(eqx.Module):
    """One parallel block: ``x + attn(norm(x)) + mlp(norm(x))``."""

    norm: eqx.nn.LayerNorm
    qkv: eqx.nn.Linear  # d -> 3d
    attn_out: eqx.nn.Linear  # d -> d
    mlp_in: eqx.nn.Linear  # d -> mlp_ratio * d
    mlp_out: eqx.nn.Linear  # mlp_ratio * d -> d
    n_heads: int = eqx.field(static=True)
    cpu_fast_paths: bool = eqx.field(static=True)  # ModelConfig.cpu_fast_paths

    def __init__(self, config: ModelConfig, *, key: PRNGKeyArray):
        d, hidden = config.d_model, config.mlp_ratio * config.d_model
        k1, k2, k3, k4 = jax.random.split(key, 4)
        out_std = 0.02 / math.sqrt(2 * config.n_layers)  # GPT-2: residual projections scaled by depth
        self.norm = eqx.nn.LayerNorm(d)
        self.qkv = init_linear(d, 3 * d, 0.02, k1)
        self.attn_out = init_linear(d, d, out_std, k2)
        self.mlp_in = init_linear(d, hidden, 0.02, k3)
        self.mlp_out = init_linear(hidden, d, out_std, k4)
        self.n_heads = config.n_heads
        self.cpu_fast_paths = config.cpu_fast_paths

    def __call__(
        self,
        x: Float[Array, "*batch seq d"],
        kv: tuple[Array, Array] | None = None,
        start: Int[Array, ""] | int = 0,
    ) -> tuple[Float[Array, "*batch seq d"], tuple[Array, Array] | None]:
        """Returns the block's output and, when this layer's cache ``kv`` (each (*batch, heads, context, head_dim)) is
        given, that cache with this call's keys and values written at positions ``start .. start+seq-1``; the
        queries then also attend to the cached positions before ``start`` (stale entries after them are invisible).
        A Python ``start == 0`` skips reading the cache: nothing precedes the tokens."""
        h, q, k, v = self.project(x)
        if kv is None:
            attn = causal_attention(q, k, v, cpu_fast_paths=self.cpu_fast_paths)
        else:
            ck, cv = kv
            batch = x.shape[:-2]
            first = isinstance(start, int) and start == 0
            attn = cached_attention(q, k, v, None if first else ck, None if first else cv, start)
            # Write the new keys and values into the cache in place, but only after the attention has read it: with
            # the order left open, XLA copies the whole buffer (twice per layer and token) to keep the old contents
            # for the read. An exact zero that depends on the attention output makes the order a data dependency
            # (XLA does not fold x * 0 for floats; an optimization_barrier is dropped before copy insertion).
            after = 0 if first else (0 * attn.reshape(-1)[0]).astype(ck.dtype)
            at = (*(0 for _ in batch), 0, start, 0)
            ck = jax.lax.dynamic_update_slice(ck, jnp.swapaxes(k, -3, -2).astype(ck.dtype) + after, at)
            cv = jax.lax.dynamic_update_slice(cv, jnp.swapaxes(v, -3, -2).astype(cv.dtype) + after, at)
            kv = (ck, cv)
        return self.finish(x, h, attn), kv

    def project(self, x: Float[Array, "*batch seq d"]) -> tuple[Array, Array, Array, Array]:
        """The normalised input h (*batch, seq, d) and the queries, keys and values, each (*batch, seq, heads,
        head_dim)."""
        *batch, S, d = x.shape
        h = normalize(self.norm, x)
        q, k, v = jnp.split(dense(self.qkv, h), 3, axis=-1)
        return h, *(t.reshape(*batch, S, self.n_heads, d // self.n_heads) for t in (q, k, v))

    def finish(
        self, x: Float[Array, "*batch seq d"], h: Float[Array, "*batch seq d"], attn: Float[Array, "*batch seq nh hs"]
    ) -> Float[Array, "*batch seq d"]:
        """The block's output from its input, the normalised input and the attention (before its projection)."""
        attn = dense(self.attn_out, attn.reshape(x.shape))
        mlp = dense(self.mlp_out, jax.nn.gelu(dense(self.mlp_in, h)))
        return x + attn + mlp
