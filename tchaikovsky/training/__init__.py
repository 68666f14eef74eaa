"""The training layer: losses (``losses``), learning-rate schedules (``schedule``), state and optimizer (``state``),
compiled steps (``step``), the loop with its hooks (``loop``) and checkpoints (``checkpoint``)."""
