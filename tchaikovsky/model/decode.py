"""KV-cached decoding: the cache (one buffer per layer) and ``Decoder``, a GPT's weights laid out per layer.

The layout copies nothing per token: ``GPT.decoder()`` slices the stacked block weights into per-layer blocks once
(hoist it out of a token loop), the layer loop is unrolled over them, and each layer's cache buffer is
``(*batch, heads, context, head_dim)``, read without a transpose and written in place. The step is written for one
sequence and vmapped over the batch: batched decoding is still one matmul per weight for the whole batch.
docs/performance.md gives the measurements behind this layout.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from tchaikovsky.config import ModelConfig
from tchaikovsky.model.layers import Block, dense, normalize


def over_batch(f, n: int, in_axes=0, out_axes=0):
    """``f``, written for one sequence, mapped over ``n`` leading batch axes (``jax.vmap`` nested ``n`` times)."""
    for _ in range(n):
        f = jax.vmap(f, in_axes=in_axes, out_axes=out_axes)
    return f


class KVCache(NamedTuple):
    """Keys and values of every position so far: one buffer per layer (written in place while decoding)."""

    k: tuple[Float[Array, "*batch heads context head_dim"], ...]  # n_layers of them
    v: tuple[Float[Array, "*batch heads context head_dim"], ...]


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
        (entries at ``start`` and after are overwritten or ignored). Requires ``start + seq <= context``; the
        cache's batch axes must match the tokens' leading axes. Returns fp32 logits and the updated cache."""
        return over_batch(self._decode_one, tokens.ndim - 1, in_axes=(0, 0, None))(tokens, cache, start)

    def _decode_one(
        self, tokens: Int[Array, " seq"], cache: KVCache, start: Int[Array, ""] | int
    ) -> tuple[Float[Array, "seq vocab"], KVCache]:
        """``decode`` for one sequence (its cache buffers are (heads, context, head_dim))."""
        x = self.embed.weight[tokens] + jax.lax.dynamic_slice_in_dim(self.pos.weight, start, tokens.shape[0], axis=0)
        ks, vs = [], []
        for block, ck, cv in zip(self.layers, cache.k, cache.v, strict=True):
            x, (ck, cv) = block.decode(x, (ck, cv), start)
            ks.append(ck)
            vs.append(cv)
        logits = dense(self.head, normalize(self.norm, x)).astype(jnp.float32)
        return logits, KVCache(tuple(ks), tuple(vs))

    def init_cache(self, dtype=jnp.float32, batch: int | tuple[int, ...] = ()) -> KVCache:
        return init_cache(self.config, dtype, batch)
