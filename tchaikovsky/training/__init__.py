"""The training layer: state and optimizer (``state``), compiled steps (``step``), the loop (``loop``) and
checkpoints (``checkpoint``)."""
