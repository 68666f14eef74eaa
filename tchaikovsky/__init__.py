"""tchaikovsky: train transformer models that compose music as MIDI, in JAX + Equinox, from notebooks.

One module per concern: ``corpus`` (MIDI files and the embedded music21 corpus), ``tokenizer`` (REMI + BPE),
``shards`` (token ids on disk, batches), ``config`` (presets), ``model`` (the Equinox decoder), ``train``,
``checkpoint``, ``sample`` (KV-cached decoding), ``audio`` (FluidSynth), ``display`` (plots, players, widgets),
``bench`` (``python -m tchaikovsky.bench``).
"""

__version__ = "0.1.0"
