"""The transformer's parts: initialisation, fp32 norms, dense layers, causal and cached attention, and ``Block``.

``Block`` is one parallel pre-norm block, ``x + attn(norm(x)) + mlp(norm(x))`` (one shared norm, GPT-J style), on ONE
sequence, as Equinox's own layers are (batch with ``jax.vmap``). ``Block.decode`` takes and returns its layer's KV
cache explicitly: it attends to the cached positions and its own keys, then writes those into the cache in place.
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


def normalize(norm: eqx.nn.LayerNorm, x: Float[Array, "seq d"]) -> Float[Array, "seq d"]:
    # Normalise in fp32 whatever the compute dtype: bf16 variance estimates are too coarse.
    return jax.vmap(norm)(x.astype(jnp.float32)).astype(x.dtype)


def dense(layer: eqx.nn.Linear, x: Float[Array, "*batch d_in"]) -> Float[Array, "*batch d_out"]:
    # Contract with the (out, in) weight as stored: ``x @ W.T`` makes XLA:CPU copy a transposed W on every call when
    # x has one row (decoding), 4-10x the cost of the matmul itself.
    return jnp.einsum("...i,oi->...o", x, layer.weight) + layer.bias


def fast_on_cpu(cpu_fast_paths: bool) -> bool:
    """True when tracing for the CPU backend with the fast paths on (``ModelConfig.cpu_fast_paths``). Read while a
    function is traced: the choice is compiled in."""
    return cpu_fast_paths and jax.default_backend() == "cpu"


def causal_attention(
    q: Float[Array, "seq heads head_dim"],
    k: Float[Array, "seq heads head_dim"],
    v: Float[Array, "seq heads head_dim"],
    *,
    cpu_fast_paths: bool,
) -> Float[Array, "seq heads head_dim"]:
    """Causal self-attention over the sequence, with ``jax.nn.dot_product_attention``'s arithmetic.

    On the CPU backend with ``cpu_fast_paths`` it is written as einsums over blocks of queries
    (``blocked_causal_attention``): XLA:CPU runs them faster than ``dot_product_attention``'s lowering, and the blocks
    skip most of the masked half of the scores (see ``python -m benchmarks training``). Elsewhere
    ``dot_product_attention`` lets XLA or cuDNN pick a fused kernel."""
    if fast_on_cpu(cpu_fast_paths):
        return blocked_causal_attention(q, k, v)
    return jax.nn.dot_product_attention(q, k, v, is_causal=True)


def blocked_causal_attention(
    q: Float[Array, "seq heads head_dim"],
    k: Float[Array, "seq heads head_dim"],
    v: Float[Array, "seq heads head_dim"],
    block: int = 128,
) -> Float[Array, "seq heads head_dim"]:
    """Causal self-attention, ``cached_attention``'s arithmetic, one block of ``block`` queries at a time: queries
    ``i..i+block-1`` score only keys ``0..i+block-1``, so the scores above the diagonal's blocks are never computed
    (3/8 fewer score entries at 256 positions). A masked score contributes an exact 0 to the softmax either way, so
    the result is the unblocked one up to float rounding."""
    S, hs = q.shape[0], q.shape[-1]
    q, k, v = (jnp.swapaxes(t, 0, 1) for t in (q, k, v))  # (heads, S, hs)
    dot = partial(jnp.einsum, preferred_element_type=jnp.float32)
    outs = []
    for lo in range(0, S, block):
        hi = min(S, lo + block)
        scores = dot("hsd,htd->hst", q[:, lo:hi], k[:, :hi]) * jnp.float32(1 / math.sqrt(hs))
        mask = jnp.arange(hi)[None, :] <= jnp.arange(lo, hi)[:, None]
        scores = jnp.where(mask, scores, -0.7 * jnp.finfo(jnp.float32).max)
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        outs.append(jnp.einsum("hst,htd->hsd", probs, v[:, :hi]))
    return jnp.swapaxes(jnp.concatenate(outs, axis=1) if len(outs) > 1 else outs[0], 0, 1)


def cached_attention(
    q: Float[Array, "seq heads head_dim"],
    k: Float[Array, "seq heads head_dim"],
    v: Float[Array, "seq heads head_dim"],
    ck: Float[Array, "heads context head_dim"],
    cv: Float[Array, "heads context head_dim"],
    start: Int[Array, ""] | int,
) -> Float[Array, "seq heads head_dim"]:
    """Causal attention of queries at positions ``start+i`` over the cached positions ``0..start-1`` (``ck``, ``cv``;
    later entries are masked) and the call's own keys and values, with ``jax.nn.dot_product_attention``'s
    arithmetic (scores in fp32, scaled after the product, masked, fp32 softmax, probabilities in the value dtype)."""
    S, hs = q.shape[0], q.shape[-1]
    q, k, v = (jnp.swapaxes(t, 0, 1) for t in (q, k, v))  # (heads, S, hs)
    dot = partial(jnp.einsum, preferred_element_type=jnp.float32)
    scores = jnp.concatenate([dot("hsd,hcd->hsc", q, ck.astype(q.dtype)), dot("hsd,htd->hst", q, k)], axis=-1)
    mask = jnp.concatenate([jnp.broadcast_to(jnp.arange(ck.shape[1]) < start, (S, ck.shape[1])),
                            jnp.tril(jnp.ones((S, S), bool))], axis=-1)  # (S, context + S)
    scores = jnp.where(mask, scores * jnp.float32(1 / math.sqrt(hs)), -0.7 * jnp.finfo(jnp.float32).max)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("hst,htd->hsd", probs[..., -S:], v)
    return jnp.swapaxes(out + jnp.einsum("hsc,hcd->hsd", probs[..., :-S], cv.astype(v.dtype)), 0, 1)


QKV = Float[Array, "seq heads head_dim"]  # queries, keys or values (or the attention before its projection)
KV = tuple[Float[Array, "heads context head_dim"], Float[Array, "heads context head_dim"]]  # one layer's cache


class Block(eqx.Module):
    """One parallel block: ``x + attn(norm(x)) + mlp(norm(x))``, on one sequence (batch with ``jax.vmap``)."""

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

    def __call__(self, x: Float[Array, "seq d"]) -> Float[Array, "seq d"]:
        """The block's output for a sequence at positions 0..seq-1 (causal)."""
        return self.with_kv(x)[0]

    def with_kv(
        self, x: Float[Array, "seq d"]
    ) -> tuple[Float[Array, "seq d"], Float[Array, "heads seq head_dim"], Float[Array, "heads seq head_dim"]]:
        """The block's output for a sequence at positions 0..seq-1, and its keys and values laid out as the cache
        holds them (a prefill writes them there)."""
        h, q, k, v = self.project(x)
        out = self.finish(x, h, causal_attention(q, k, v, cpu_fast_paths=self.cpu_fast_paths))
        return out, jnp.swapaxes(k, 0, 1), jnp.swapaxes(v, 0, 1)

    def decode(self, x: Float[Array, "seq d"], kv: KV, start: Int[Array, ""] | int) -> tuple[Float[Array, "seq d"], KV]:
        """The block's output for tokens at positions ``start..start+seq-1``, attending to the layer's cache ``kv``
        before ``start`` (stale entries after it are invisible), and the cache with their keys and values written
        at ``start`` (in place)."""
        h, q, k, v = self.project(x)
        attn = cached_attention(q, k, v, *kv, start)
        # Write only after the attention has read the cache: with the order left open, XLA copies the whole buffer
        # (twice per layer and token) to keep the old contents for the read, and writing first makes it fuse a second
        # write into the read. An exact zero that depends on the attention output makes the order a data dependency
        # (XLA does not fold x * 0 for floats; an optimization_barrier is dropped before copy insertion).
        # Under jax.vmap the write is a one-index scatter, which XLA:CPU turns back into one in-place
        # dynamic_update_slice of the batched buffer (decoding measured as fast as the natively batched write).
        after = 0 * attn[0, 0, 0]
        kv = tuple(jax.lax.dynamic_update_slice(c, (jnp.swapaxes(t, 0, 1) + after).astype(c.dtype), (0, start, 0))
                   for c, t in zip(kv, (k, v)))
        return self.finish(x, h, attn), kv

    def project(self, x: Float[Array, "seq d"]) -> tuple[Float[Array, "seq d"], QKV, QKV, QKV]:
        """The normalised input and the queries, keys and values."""
        S, d = x.shape
        h = normalize(self.norm, x)
        q, k, v = jnp.split(dense(self.qkv, h), 3, axis=-1)
        return h, *(t.reshape(S, self.n_heads, d // self.n_heads) for t in (q, k, v))

    def finish(self, x: Float[Array, "seq d"], h: Float[Array, "seq d"], attn: QKV) -> Float[Array, "seq d"]:
        """The block's output from its input, the normalised input and the attention (before its projection)."""
        attn = dense(self.attn_out, attn.reshape(x.shape))
        mlp = dense(self.mlp_out, jax.nn.gelu(dense(self.mlp_in, h)))
        return x + attn + mlp
