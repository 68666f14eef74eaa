"""A fresh Debian 12 / Ubuntu 24.04 with only python3 and git: what the README's first line and the Makefile do."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_readme_installs_make_and_venv_before_make_demo():
    block = (ROOT / "README.md").read_text().split("## Two commands", 1)[1].split("```bash\n", 1)[1].split("```")[0]
    lines = block.splitlines()
    first, demo = lines[0], next(i for i, line in enumerate(lines) if line.startswith("make demo"))
    assert demo > 0 and "apt-get install -y" in first and {"make", "python3-venv"} <= set(first.split("#")[0].split())


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_names_python3_venv_when_python_cannot_make_a_venv(tmp_path):
    """Debian's python3 without python3-venv has no ensurepip: `make demo` stops at once naming the package, and
    leaves no half-made environment behind."""
    shadow = tmp_path / "shadow" / "ensurepip"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("ensurepip is not available")\n')
    venv = tmp_path / "venv"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "shadow")}
    out = subprocess.run(["make", "-C", str(ROOT), f"VENV={venv}", f"PYTHON={sys.executable}", f"{venv}/.installed"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "install python3-venv first, e.g. sudo apt-get install -y python3-venv" in out.stderr, out.stderr
    assert not venv.exists()
