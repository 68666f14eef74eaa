"""Shared test set-up.

Sharding tests need several devices; on CPU we simulate 8 host devices. The flag must be set before JAX
initialises its backend, i.e. before the first ``import jax`` anywhere in the test session.
"""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("MPLBACKEND", "Agg")  # tests only: notebooks keep the inline backend

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def corpus_cache(tmp_path_factory) -> Path:
    """A per-session cache directory for the embedded music21 corpus export."""
    env = os.environ.get("TCHAIKOVSKY_TEST_CACHE")
    if env:
        return Path(env)
    return tmp_path_factory.mktemp("corpus_cache")
