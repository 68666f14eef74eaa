"""tchaikovsky: train transformer models that compose music as MIDI, in JAX + Equinox, from notebooks.

Subpackages by layer (a layer imports only those before it): ``config``/``env``/``io``, then ``data`` (corpus,
tokenizer, shards), ``model`` (the Equinox GPT, KV-cached decoding), ``generate`` (sampling, grammar, prompts),
``training`` (state, steps, loop, checkpoints), ``evaluation`` (measures, comparisons, reports), ``render`` (audio,
pictures, players, the sampler panel) and ``notebook`` (the notebooks' stages, parameters, Papermill runner, Kaggle
packaging). docs/layout.md draws the house.
"""

__version__ = "0.1.0"
