"""The version floors are stated three times (requirements.txt, pyproject.toml, env.REQUIRED); they must agree."""

import tomllib
from pathlib import Path

from tchaikovsky.env import REQUIRED

ROOT = Path(__file__).resolve().parents[1]


def test_floors_agree_across_requirements_pyproject_and_env():
    requirements = {line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()}
    pyproject = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    pinned = [spec for spec in REQUIRED.values() if any(op in spec for op in "<>=")]
    assert pinned
    assert [s for s in pinned if s not in requirements] == []
    assert [s for s in pinned if s not in pyproject] == []


def _pip_env(monkeypatch, **extra):
    import os

    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no site pip.conf (find-links, mirrors)
    for key, value in extra.items():
        monkeypatch.setenv(key, value)


def test_no_internet_ends_with_one_sentence_naming_kaggles_internet_setting(monkeypatch):
    """A Kaggle notebook with Internet off: pip cannot reach any index (here: a closed local port)."""
    import pytest

    from tchaikovsky import env

    _pip_env(monkeypatch, PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_NO_CACHE_DIR="1")
    with pytest.raises(env.NoInternet) as err:
        env.install_packages(["tchaikovsky-test-absent-package"])
    msg = str(err.value)
    assert "switch on Internet in the notebook's Settings" in msg and "tchaikovsky-test-absent-package" in msg
    assert msg.count(". ") == 0 and msg.endswith(".") and "\n" not in msg  # one sentence, no pip noise


def test_other_pip_failures_show_pips_own_words(monkeypatch):
    import pytest

    from tchaikovsky import env

    _pip_env(monkeypatch, PIP_NO_INDEX="1")
    with pytest.raises(RuntimeError, match="No matching distribution") as err:
        env.install_packages(["tchaikovsky-test-absent-package"])
    assert not isinstance(err.value, env.NoInternet)


def test_wandb_is_installed_only_when_asked_for():
    from tchaikovsky import env

    assert "wandb" in env.OPTIONAL and "wandb" not in env.REQUIRED
    py = (ROOT / "notebooks" / "03_train.py").read_text()
    assert 'env.ensure(audio=True, wandb=wandb_mode != "disabled")' in py
