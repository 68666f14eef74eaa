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
