"""The render layer: audio (``audio``, bounded previews in ``preview``), pictures and players (``display``),
generated pieces as files (``samples``) and the interactive sampler panel (``widgets``)."""
