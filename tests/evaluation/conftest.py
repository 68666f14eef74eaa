"""A trained run directory for the evaluation tests, made of the session's fixture tokenizer, shards and tiny model."""

import shutil

import pytest


@pytest.fixture(scope="session")
def tiny_run(bach, trained, tmp_path_factory):
    """A run directory in the pipeline's layout: the fixture tokenizer, its shards and the tiny trained model."""
    run = tmp_path_factory.mktemp("tiny_run")
    shutil.copy(bach.tokenizer_path, run / "tokenizer.json")
    (run / "shards").symlink_to(bach.shards_dir, target_is_directory=True)
    (run / "checkpoints").symlink_to(trained.run_dir / "checkpoints", target_is_directory=True)
    return run
