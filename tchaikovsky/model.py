"""The decoder: a GPT-2 style transformer with parallel pre-norm blocks, in Equinox.

``x + attn(norm(x)) + mlp(norm(x))`` per block (one shared norm, GPT-J style), token + learned position embeddings,
a final norm and an untied linear head. The identical blocks are built with ``filter_vmap`` (stacked weights) and
the training forward runs them with ``lax.scan``, so its compile time does not grow with depth. ``model(tokens)``
works on ONE sequence (batch with ``jax.vmap``); decoding is natively batched.

Two entry points share the same weights and arithmetic:
  * ``model(tokens)``: full causal forward (training, evaluation).
  * ``model.decode(tokens, cache, start)``: the same computation for tokens at absolute positions
    ``start .. start+S-1`` that also reads and writes a KV cache (prefill with S > 1, generation with S = 1). It is
    natively batched: ``tokens`` may carry leading batch axes, matched by ``init_cache(batch=...)``.

Decoding one token reads every weight once for a handful of FLOPs, and XLA copies whatever it cannot read in place,
so the decode path is laid out to copy nothing per token: ``model.decoder()`` slices the stacked block weights into
per-layer blocks ONCE (hoist it out of a token loop: XLA does not hoist the slices itself, and on CPU copying every
layer's weights for each token took 3x as long as the matmuls), the layer loop is unrolled over those blocks, and
the cache holds one buffer per layer, heads before positions, so attention reads it without a transpose and the new
keys and values are written into it in place. Batched decoding is one matmul per weight for the whole batch (not a
``vmap`` of single-sequence decodes, which made XLA copy and transpose the whole cache every token). A prefill (start
0) reads no cache: ``model.prefill`` runs it with the stacked blocks under ``lax.scan``, like training.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .config import ModelConfig


class KVCache(NamedTuple):
    """Keys and values of every position so far: one buffer per layer (written in place while decoding)."""

    k: tuple[Float[Array, "*batch heads context head_dim"], ...]  # n_layers of them
    v: tuple[Float[Array, "*batch heads context head_dim"], ...]


def _linear(in_dim: int, out_dim: int, std: float, key: PRNGKeyArray) -> eqx.nn.Linear:
    layer = eqx.nn.Linear(in_dim, out_dim, key=key)
    weight = std * jax.random.normal(key, (out_dim, in_dim))
    return eqx.tree_at(lambda l: (l.weight, l.bias), layer, (weight, jnp.zeros(out_dim)))


def _norm(norm: eqx.nn.LayerNorm, x: Float[Array, "*batch seq d"]) -> Float[Array, "*batch seq d"]:
    # Normalise in fp32 whatever the compute dtype: bf16 variance estimates are too coarse.
    flat = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
    return jax.vmap(norm)(flat).astype(x.dtype).reshape(x.shape)


def _dense(layer: eqx.nn.Linear, x: Float[Array, "*batch d_in"]) -> Float[Array, "*batch d_out"]:
    # Contract with the (out, in) weight as stored: ``x @ W.T`` makes XLA:CPU copy a transposed W on every call when
    # x has one row (decoding), 4-10x the cost of the matmul itself.
    return jnp.einsum("...i,oi->...o", x, layer.weight) + layer.bias


def _causal_attention(
    q: Float[Array, "*batch seq heads head_dim"],
    k: Float[Array, "*batch seq heads head_dim"],
    v: Float[Array, "*batch seq heads head_dim"],
) -> Float[Array, "*batch seq heads head_dim"]:
    """Causal self-attention over the sequence (``jax.nn.dot_product_attention`` takes at most one batch axis)."""
    if q.ndim <= 4:
        return jax.nn.dot_product_attention(q, k, v, is_causal=True)
    flat = [t.reshape(-1, *t.shape[-3:]) for t in (q, k, v)]
    return jax.nn.dot_product_attention(*flat, is_causal=True).reshape(q.shape)


def _cached_attention(
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

    def __init__(self, config: ModelConfig, *, key: PRNGKeyArray):
        d, hidden = config.d_model, config.mlp_ratio * config.d_model
        k1, k2, k3, k4 = jax.random.split(key, 4)
        out_std = 0.02 / math.sqrt(2 * config.n_layers)  # GPT-2: residual projections scaled by depth
        self.norm = eqx.nn.LayerNorm(d)
        self.qkv = _linear(d, 3 * d, 0.02, k1)
        self.attn_out = _linear(d, d, out_std, k2)
        self.mlp_in = _linear(d, hidden, 0.02, k3)
        self.mlp_out = _linear(hidden, d, out_std, k4)
        self.n_heads = config.n_heads

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
            attn = _causal_attention(q, k, v)
        else:
            ck, cv = kv
            batch = x.shape[:-2]
            first = isinstance(start, int) and start == 0
            attn = _cached_attention(q, k, v, None if first else ck, None if first else cv, start)
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
        h = _norm(self.norm, x)
        q, k, v = jnp.split(_dense(self.qkv, h), 3, axis=-1)
        return h, *(t.reshape(*batch, S, self.n_heads, d // self.n_heads) for t in (q, k, v))

    def finish(
        self, x: Float[Array, "*batch seq d"], h: Float[Array, "*batch seq d"], attn: Float[Array, "*batch seq nh hs"]
    ) -> Float[Array, "*batch seq d"]:
        """The block's output from its input, the normalised input and the attention (before its projection)."""
        attn = _dense(self.attn_out, attn.reshape(x.shape))
        mlp = _dense(self.mlp_out, jax.nn.gelu(_dense(self.mlp_in, h)))
        return x + attn + mlp


class GPT(eqx.Module):
    """Token + position embeddings, ``n_layers`` stacked blocks, final norm, linear head."""

    embed: eqx.nn.Embedding
    pos: eqx.nn.Embedding
    blocks: Block  # every array has a leading (n_layers,) axis
    norm: eqx.nn.LayerNorm
    head: eqx.nn.Linear
    config: ModelConfig = eqx.field(static=True)

    def __init__(self, config: ModelConfig, *, key: PRNGKeyArray):
        k_tok, k_pos, k_blocks, k_head = jax.random.split(key, 4)
        d = config.d_model
        self.embed = eqx.nn.Embedding(weight=0.02 * jax.random.normal(k_tok, (config.vocab_size, d)))
        self.pos = eqx.nn.Embedding(weight=0.01 * jax.random.normal(k_pos, (config.context, d)))
        make = lambda k: Block(config, key=k)  # noqa: E731
        self.blocks = eqx.filter_vmap(make)(jax.random.split(k_blocks, config.n_layers))
        self.norm = eqx.nn.LayerNorm(d)
        self.head = _linear(d, config.vocab_size, 0.02, k_head)
        self.config = config

    def __call__(self, tokens: Int[Array, " seq"]) -> Float[Array, "seq vocab"]:
        """Causal forward over tokens at positions 0..seq-1 (seq <= context). Logits are fp32."""
        x = self.embed.weight[tokens] + self.pos.weight[: tokens.shape[0]]  # (S, d)
        params, static = eqx.partition(self.blocks, eqx.is_array)

        def layer(x, block_params):
            return eqx.combine(block_params, static)(x)[0], None

        x, _ = jax.lax.scan(layer, x, params)
        return _dense(self.head, _norm(self.norm, x)).astype(jnp.float32)  # softmax and loss happen in fp32

    def decoder(self) -> Decoder:
        """The same model arranged for KV-cached decoding (per-layer blocks). Inside a loop over tokens, build it once
        before the loop: building it copies the stacked weights into per-layer arrays."""
        params, static = eqx.partition(self.blocks, eqx.is_array)
        layers = tuple(eqx.combine(jax.tree.map(lambda a: a[i], params), static) for i in range(self.config.n_layers))
        return Decoder(self.embed, self.pos, layers, self.norm, self.head, self.config)

    def decode(
        self, tokens: Int[Array, "*batch seq"], cache: KVCache, start: Int[Array, ""] | int
    ) -> tuple[Float[Array, "*batch seq vocab"], KVCache]:
        """Forward for tokens at positions ``start..start+seq-1`` attending to the cached positions before ``start``;
        see ``Decoder.decode``. A Python ``start == 0`` is a prefill (``prefill``); otherwise this is
        ``self.decoder().decode(...)``: in a loop over tokens, hoist ``decoder()`` out of it."""
        if isinstance(start, int) and start == 0:
            return self.prefill(tokens, cache)
        return self.decoder().decode(tokens, cache, start)

    def prefill(
        self, tokens: Int[Array, "*batch seq"], cache: KVCache
    ) -> tuple[Float[Array, "*batch seq vocab"], KVCache]:
        """``decode(tokens, cache, 0)``: the full causal forward over tokens at positions 0..seq-1, writing their keys
        and values into the cache (entries after them are left as they were: later decoding never reads them before
        overwriting them). It runs the stacked blocks under ``lax.scan``, as training does: nothing precedes the
        tokens, so it needs no cache reads, and its compile time stays flat in depth."""
        S, L = tokens.shape[-1], self.config.n_layers
        x = self.embed.weight[tokens] + self.pos.weight[:S]  # (*batch, S, d)
        params, static = eqx.partition(self.blocks, eqx.is_array)

        def layer(x, i):
            block = eqx.combine(jax.tree.map(lambda a: a[i], params), static)
            h, q, k, v = block.project(x)
            x = block.finish(x, h, _causal_attention(q, k, v))
            return x, (jnp.swapaxes(k, -3, -2), jnp.swapaxes(v, -3, -2))  # (*batch, heads, S, head_dim)

        # The last layer runs outside the scan: when only the cache is wanted (a window slide), XLA then drops its
        # attention and MLP, which nothing reads.
        x, (ks, vs) = jax.lax.scan(layer, x, jnp.arange(L - 1))  # (layers - 1, *batch, heads, S, head_dim)
        x, (k, v) = layer(x, L - 1)

        def write(buffers, new, last):
            at = (0,) * last.ndim
            new = [new[i] for i in range(L - 1)] + [last]
            return tuple(jax.lax.dynamic_update_slice(b, n.astype(b.dtype), at) for b, n in zip(buffers, new))

        logits = _dense(self.head, _norm(self.norm, x)).astype(jnp.float32)
        return logits, KVCache(write(cache.k, ks, k), write(cache.v, vs, v))

    def init_cache(self, dtype=jnp.float32, batch: int | tuple[int, ...] = ()) -> KVCache:
        """An empty cache for ``decode``: zeros of shape (*batch, heads, context, head_dim) per layer."""
        return init_cache(self.config, dtype, batch)


def init_cache(config: ModelConfig, dtype=jnp.float32, batch: int | tuple[int, ...] = ()) -> KVCache:
    batch = (batch,) if isinstance(batch, int) else tuple(batch)
    shape = (*batch, config.n_heads, config.context, config.head_dim)
    zeros = lambda: tuple(jnp.zeros(shape, dtype) for _ in range(config.n_layers))  # noqa: E731
    return KVCache(zeros(), zeros())


class Decoder(eqx.Module):
    """A GPT's weights for KV-cached decoding: the blocks as a tuple of per-layer modules (``GPT.decoder()``).

    The layer loop is a Python loop, unrolled in the compiled program: the per-layer weight arrays are then read in
    place by every token's matmuls, and each layer's cache buffer is updated in place. (A ``lax.scan`` over the
    stacked weights copies each layer's slice on every iteration: on CPU that made a decoding step 2x slower for the
    demo preset and 1.3x for base-100m, whose 12 unrolled layers cost about 2 s more compilation instead.)"""

    embed: eqx.nn.Embedding
    pos: eqx.nn.Embedding
    layers: tuple[Block, ...]
    norm: eqx.nn.LayerNorm
    head: eqx.nn.Linear
    config: ModelConfig = eqx.field(static=True)

    def decode(
        self, tokens: Int[Array, "*batch seq"], cache: KVCache, start: Int[Array, ""] | int
    ) -> tuple[Float[Array, "*batch seq vocab"], KVCache]:
        """Forward for tokens at positions ``start..start+seq-1`` attending to the cached positions before ``start``
        (entries at ``start`` and after are ignored, then overwritten). Requires ``start + seq <= context``; the
        cache's batch axes must match the tokens' leading axes. Returns fp32 logits and the updated cache."""
        S = tokens.shape[-1]
        x = self.embed.weight[tokens] + jax.lax.dynamic_slice_in_dim(self.pos.weight, start, S, axis=0)
        ks, vs = [], []
        for block, ck, cv in zip(self.layers, cache.k, cache.v, strict=True):
            x, (ck, cv) = block(x, (ck, cv), start)
            ks.append(ck)
            vs.append(cv)
        logits = _dense(self.head, _norm(self.norm, x)).astype(jnp.float32)
        return logits, KVCache(tuple(ks), tuple(vs))

    def init_cache(self, dtype=jnp.float32, batch: int | tuple[int, ...] = ()) -> KVCache:
        return init_cache(self.config, dtype, batch)


def build(config: ModelConfig, key: PRNGKeyArray) -> GPT:
    """A freshly initialised GPT, built in one compiled call (eager construction runs hundreds of tiny ops, which
    costs seconds on CPU)."""
    return eqx.filter_jit(GPT)(config, key=key)


def skeleton(config: ModelConfig) -> GPT:
    """The GPT's structure with shapes and dtypes only (no computation): the ``like`` for deserialisation."""
    return eqx.filter_eval_shape(GPT, config, key=jax.random.key(0))


def cast(model: GPT, dtype) -> GPT:
    """The model with every floating-point array cast to ``dtype`` (the fp32 master copy stays with the caller)."""
    return jax.tree.map(lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, model)


def decay_mask(model: GPT) -> GPT:
    """A pytree of bools shaped like the model's arrays: True for matrix weights of linear layers only, so weight
    decay spares norms, biases and embeddings."""
    is_linear = lambda x: isinstance(x, eqx.nn.Linear)  # noqa: E731

    def mark(node):
        if is_linear(node):
            return eqx.tree_at(lambda l: (l.weight, l.bias), node, (True, False))
        return jax.tree.map(lambda _: False, node)

    arrays = eqx.filter(model, lambda x: eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct))  # skeletons too
    return jax.tree.map(mark, arrays, is_leaf=is_linear)


def count_params(model: GPT) -> int:
    return sum(x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_array)))
