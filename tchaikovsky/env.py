"""Make a notebook self-sufficient on Kaggle/Colab: install only what is missing, never upgrade the platform's JAX.

Kaggle's TPU image ships ``jax[tpu]``/``libtpu`` (pinned together), optax, papermill and ipywidgets, but not equinox,
miditok, pyfluidsynth or the FluidSynth library. ``ensure()`` pip-installs the missing Python packages with the
installed jax/jaxlib/libtpu held at their versions (a constraint file), so pip picks releases that work with them
rather than replacing them, and apt-installs FluidSynth with a General MIDI soundfont when it is absent and we are
root. This module imports nothing heavy: it runs before the rest of the package can be imported.
"""

from __future__ import annotations

import ctypes.util
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

# import name -> pip requirement
REQUIRED = {
    "jax": "jax>=0.4.35",
    "equinox": "equinox>=0.11.10",
    "optax": "optax>=0.2.3",
    "jaxtyping": "jaxtyping>=0.2.34",
    "miditok": "miditok>=3.0.6,<4",
    "symusic": "symusic>=0.5.0",
    "music21": "music21>=9.1",
    "tqdm": "tqdm",
    "matplotlib": "matplotlib",
    "ipywidgets": "ipywidgets>=8.1",
    "fluidsynth": "pyfluidsynth>=1.3.3",
    "soundfile": "soundfile>=0.12.1",  # MP3 previews; Kaggle and Colab ship it (librosa)
}
OPTIONAL = {"wandb": "wandb>=0.17"}
_HELD = ("jax", "jaxlib", "libtpu", "libtpu-nightly", "jax-cuda12-plugin", "jax-cuda12-pjrt", "numpy")


def missing_packages(with_wandb: bool = False) -> list[str]:
    names = {**REQUIRED, **(OPTIONAL if with_wandb else {})}
    return [req for mod, req in names.items() if importlib.util.find_spec(mod) is None]


def _held_versions() -> list[str]:
    held = []
    for dist in _HELD:
        try:
            held.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return held


def install_packages(requirements: list[str], quiet: bool = True) -> None:
    """pip-install ``requirements`` without touching the installed jax/jaxlib/libtpu/numpy."""
    if not requirements:
        return
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(_held_versions()))
    cmd = [sys.executable, "-m", "pip", "install", *(["-q"] if quiet else []), "-c", f.name, *requirements]
    print("installing:", " ".join(requirements))
    subprocess.run(cmd, check=True)
    importlib.invalidate_caches()


def fluidsynth_present() -> bool:
    return ctypes.util.find_library("fluidsynth") is not None


def install_fluidsynth() -> str:
    """apt-get the FluidSynth library and a soundfont when missing. Returns what happened, in words."""
    if fluidsynth_present():
        return "fluidsynth: present"
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return ("fluidsynth: missing; install it with `sudo apt-get install -y libfluidsynth3 fluid-soundfont-gm` "
                "(audio is skipped until then; everything else works)")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run(["apt-get", "update", "-qq"], check=False, **quiet)
    done = subprocess.run(["apt-get", "install", "-y", "-qq", "libfluidsynth3", "fluid-soundfont-gm"], check=False, **quiet)
    return "fluidsynth: installed" if done.returncode == 0 else "fluidsynth: apt-get failed; audio will be skipped"


def ensure(*, audio: bool = True, wandb: bool = False) -> None:
    """Install whatever this notebook needs and is missing (a no-op on a machine set up by ``make demo``)."""
    install_packages(missing_packages(with_wandb=wandb))
    if audio:
        msg = install_fluidsynth()
        if "present" not in msg:
            print(msg)
