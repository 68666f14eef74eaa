"""The decoder: a GPT-2 style transformer with parallel pre-norm blocks, in Equinox.

Token + learned position embeddings, ``n_layers`` blocks ``x + attn(norm(x)) + mlp(norm(x))``, a final norm and an
untied linear head. The identical blocks are built with ``filter_vmap`` (stacked weights) and run with ``lax.scan``,
so compile time does not grow with depth. ``model(tokens)`` works on ONE sequence (batch with ``jax.vmap``);
``model.decode`` / ``model.prefill`` take any leading batch axes (they vmap the one-sequence computation) and use a
KV cache (``tchaikovsky.model.decode``).
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from tchaikovsky.config import ModelConfig
from tchaikovsky.model.decode import Decoder, KVCache, init_cache, over_batch
from tchaikovsky.model.layers import Block, dense, fast_on_cpu, init_linear, normalize


LayerKV = Float[Array, "heads seq head_dim"]  # one layer's keys or values, laid out as the cache holds them
StackedKV = Float[Array, "layers_but_last heads seq head_dim"]


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
        self.head = init_linear(d, config.vocab_size, 0.02, k_head)
        self.config = config

    def __call__(self, tokens: Int[Array, " seq"]) -> Float[Array, "seq vocab"]:
        """Causal forward over tokens at positions 0..seq-1 (seq <= context). Logits are fp32."""
        x = self.embed.weight[tokens] + self.pos.weight[: tokens.shape[0]]  # (S, d)
        params, static = eqx.partition(self.blocks, eqx.is_array)

        def layer(x, block_params):
            return eqx.combine(block_params, static)(x), None

        # On CPU the layers are unrolled: XLA:CPU then schedules and fuses across them, 5-15% faster for the demo
        # preset's step (python -m benchmarks training); elsewhere a rolled scan keeps compile time flat in depth.
        unroll = self.config.n_layers if fast_on_cpu(self.config.cpu_fast_paths) else 1
        x, _ = jax.lax.scan(layer, x, params, unroll=unroll)
        return dense(self.head, normalize(self.norm, x)).astype(jnp.float32)  # softmax and loss happen in fp32

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
        L = self.config.n_layers
        # per sequence, vmapped; the stacked keys and values come out (layers - 1, *batch, heads, seq, head_dim)
        logits, ks, vs, k, v = over_batch(self._forward_kv, tokens.ndim - 1, out_axes=(0, 1, 1, 0, 0))(tokens)

        def write(buffers, new, last):  # the whole batch at once, in place, at position 0
            at = (0,) * last.ndim
            new = [new[i] for i in range(L - 1)] + [last]
            return tuple(jax.lax.dynamic_update_slice(b, n.astype(b.dtype), at) for b, n in zip(buffers, new))

        return logits, KVCache(write(cache.k, ks, k), write(cache.v, vs, v))

    def _forward_kv(
        self, tokens: Int[Array, " seq"]
    ) -> tuple[Float[Array, "seq vocab"], StackedKV, StackedKV, LayerKV, LayerKV]:
        """The logits of one sequence at positions 0..seq-1, and every layer's keys and values: those of the first
        ``n_layers - 1`` stacked, then the last layer's."""
        S, L = tokens.shape[0], self.config.n_layers
        x = self.embed.weight[tokens] + self.pos.weight[:S]  # (S, d)
        params, static = eqx.partition(self.blocks, eqx.is_array)

        def layer(x, i):
            x, k, v = eqx.combine(jax.tree.map(lambda a: a[i], params), static).with_kv(x)
            return x, (k, v)

        # The last layer runs outside the scan: when only the cache is wanted (a window slide), XLA then drops its
        # attention and MLP, which nothing reads.
        x, (ks, vs) = jax.lax.scan(layer, x, jnp.arange(L - 1))
        x, (k, v) = layer(x, L - 1)
        return dense(self.head, normalize(self.norm, x)).astype(jnp.float32), ks, vs, k, v

    def init_cache(self, dtype=jnp.float32, batch: int | tuple[int, ...] = ()) -> KVCache:
        """An empty cache for ``decode``: zeros of shape (*batch, heads, context, head_dim) per layer."""
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


def token_losses(model: GPT, tokens: Int[Array, "B T1"], dtype) -> tuple[Float[Array, "B T"], Int[Array, "B T"]]:
    """Per-target negative log-likelihood (nats, fp32). tokens (B, T+1) -> nll (B, T), and targets (B, T)."""
    logits = jax.vmap(cast(model, dtype))(tokens[:, :-1])  # (B, T, V) fp32
    targets = tokens[:, 1:]
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0], targets


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


def resize_vocab(model: GPT, vocab_size: int, sources) -> GPT:
    """The model with ``vocab_size - V`` ids added to its vocabulary (V the current one): new embedding rows, output
    rows and output biases copied, per new id, from the existing id ``sources[i]``, or the mean over existing ids
    where it is -1 (``remap_vocab`` with every old id kept in place)."""
    V = model.config.vocab_size
    sources = np.asarray(sources, np.int64)
    if vocab_size < V or len(sources) != vocab_size - V or np.any(sources >= V) or np.any(sources < -1):
        raise ValueError(f"resize_vocab grows a vocabulary of {V} to {vocab_size}: one source id in -1..{V - 1} "
                         f"per new id ({vocab_size - V}), got {len(sources)}")
    return remap_vocab(model, np.concatenate([np.arange(V), sources]))


def remap_vocab(model: GPT, sources) -> GPT:
    """The model with a vocabulary of ``len(sources)`` ids, id ``i`` taking its embedding row, output row and output
    bias from the existing id ``sources[i]``, or the mean over the existing ids where it is -1. Tokens that start as
    copies of themselves or of a related token ("unknown composer" for a new composer) behave like them at first, so
    a fine-tune starts from the pretrained model's predictions instead of noise."""
    V = model.config.vocab_size
    sources = np.asarray(sources, np.int64)
    if sources.ndim != 1 or not len(sources) or np.any(sources >= V) or np.any(sources < -1):
        raise ValueError(f"remap_vocab: one source id in -1..{V - 1} per new id, got {sources}")

    def remap(a):  # (V, ...) -> (len(sources), ...)
        picked = a[np.maximum(sources, 0)]
        mean = jnp.broadcast_to(a.mean(axis=0), picked.shape)
        return jnp.where((sources < 0).reshape(-1, *[1] * (a.ndim - 1)), mean, picked)

    model = eqx.tree_at(lambda m: (m.embed.weight, m.head.weight, m.head.bias), model,
                        (remap(model.embed.weight), remap(model.head.weight), remap(model.head.bias)))
    like = skeleton(dataclasses.replace(model.config, vocab_size=len(sources)))  # the config is static
    return jax.tree.unflatten(jax.tree.structure(like), jax.tree.leaves(model))


def count_params(model: GPT) -> int:
    return sum(x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_array)))
