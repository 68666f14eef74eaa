"""The data layer: MIDI folders and the embedded corpus (``corpus``, ``embedded``, ``labels``, ``stats``), the
tokenizer (``tokenizer``) and token shards on disk (``shards``)."""
