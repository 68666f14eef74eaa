"""The model layer: the GPT (``gpt``), its parts (``layers``) and KV-cached decoding (``decode``)."""

from tchaikovsky.model.decode import Decoder, KVCache, init_cache
from tchaikovsky.model.gpt import (GPT, build, cast, count_params, decay_mask, remap_vocab, resize_vocab,
                                  skeleton, token_losses)

__all__ = ["GPT", "Decoder", "KVCache", "build", "cast", "count_params", "decay_mask", "init_cache", "remap_vocab",
           "resize_vocab", "skeleton", "token_losses"]
