"""The decoder: a GPT-2 style transformer with parallel pre-norm blocks, in Equinox.

``x + attn(norm(x)) + mlp(norm(x))`` per block (one shared norm, GPT-J style), token + learned position embeddings,
a final norm and an untied linear head. The identical blocks are built with ``filter_vmap`` and run with
``lax.scan`` so compile time does not grow with depth. Every method works on ONE sequence; batch with ``jax.vmap``.

Two entry points share the same weights and arithmetic:
  * ``model(tokens)``: full causal forward (training, evaluation).
  * ``model.decode(tokens, cache, start)``: the same computation for tokens at absolute positions
    ``start .. start+S-1`` that also reads and writes a KV cache (prefill with S > 1, generation with S = 1).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .config import ModelConfig


class KVCache(NamedTuple):
    k: Float[Array, "layers context heads head_dim"]
    v: Float[Array, "layers context heads head_dim"]


def _linear(in_dim: int, out_dim: int, std: float, key: PRNGKeyArray) -> eqx.nn.Linear:
    layer = eqx.nn.Linear(in_dim, out_dim, key=key)
    weight = std * jax.random.normal(key, (out_dim, in_dim))
    return eqx.tree_at(lambda l: (l.weight, l.bias), layer, (weight, jnp.zeros(out_dim)))


def _norm(norm: eqx.nn.LayerNorm, x: Float[Array, "seq d"]) -> Float[Array, "seq d"]:
    # Normalise in fp32 whatever the compute dtype: bf16 variance estimates are too coarse.
    return jax.vmap(norm)(x.astype(jnp.float32)).astype(x.dtype)


def _dense(layer: eqx.nn.Linear, x: Float[Array, "seq d_in"]) -> Float[Array, "seq d_out"]:
    return x @ layer.weight.T + layer.bias


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
        x: Float[Array, "seq d"],
        kv: tuple[Array, Array] | None = None,
        start: Int[Array, ""] | int = 0,
    ) -> tuple[Float[Array, "seq d"], tuple[Array, Array] | None]:
        """Returns the block's output and, when a cache slice ``kv`` (each (context, heads, head_dim)) is given, the
        slice with this call's keys and values written at positions ``start .. start+seq-1``."""
        S, d = x.shape
        h = _norm(self.norm, x)
        q, k, v = jnp.split(_dense(self.qkv, h), 3, axis=-1)
        q, k, v = (t.reshape(S, self.n_heads, d // self.n_heads) for t in (q, k, v))  # (S, nh, hs)
        if kv is None:
            attn = jax.nn.dot_product_attention(q, k, v, is_causal=True)
        else:
            ck = jax.lax.dynamic_update_slice(kv[0], k.astype(kv[0].dtype), (start, 0, 0))
            cv = jax.lax.dynamic_update_slice(kv[1], v.astype(kv[1].dtype), (start, 0, 0))
            C = ck.shape[0]
            # query i sits at absolute position start+i and may see cache slots 0..start+i
            mask = jnp.arange(C)[None, :] <= (start + jnp.arange(S))[:, None]  # (S, C)
            attn = jax.nn.dot_product_attention(q, ck.astype(q.dtype), cv.astype(q.dtype), mask=mask[None])
            kv = (ck, cv)
        attn = _dense(self.attn_out, attn.reshape(S, d))
        mlp = _dense(self.mlp_out, jax.nn.gelu(_dense(self.mlp_in, h)))
        return x + attn + mlp, kv


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

    def _forward(self, tokens, start, cache: KVCache | None):
        S = tokens.shape[0]
        pos = jax.lax.dynamic_slice_in_dim(self.pos.weight, start, S, axis=0)  # (S, d)
        x = self.embed.weight[tokens] + pos  # (S, d)
        params, static = eqx.partition(self.blocks, eqx.is_array)

        def layer(x, xs):
            block_params, kv = xs
            x, kv = eqx.combine(block_params, static)(x, kv, start)
            return x, kv

        x, new_kv = jax.lax.scan(layer, x, (params, None if cache is None else tuple(cache)))
        x = _norm(self.norm, x)
        logits = _dense(self.head, x).astype(jnp.float32)  # softmax and loss happen in fp32
        return logits, (None if cache is None else KVCache(*new_kv))

    def __call__(self, tokens: Int[Array, " seq"]) -> Float[Array, "seq vocab"]:
        """Causal forward over tokens at positions 0..seq-1 (seq <= context). Logits are fp32."""
        return self._forward(tokens, 0, None)[0]

    def decode(
        self, tokens: Int[Array, " seq"], cache: KVCache, start: Int[Array, ""] | int
    ) -> tuple[Float[Array, "seq vocab"], KVCache]:
        """Forward for tokens at positions ``start..start+seq-1`` attending to the cached earlier positions.
        Requires ``start + seq <= context``. Returns fp32 logits and the updated cache."""
        return self._forward(tokens, start, cache)

    def init_cache(self, dtype=jnp.float32) -> KVCache:
        c = self.config
        shape = (c.n_layers, c.context, c.n_heads, c.head_dim)
        return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


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
