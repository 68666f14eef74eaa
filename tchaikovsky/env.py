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
import re
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
    "ipywidgets": "ipywidgets>=7.7",
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


class NoInternet(RuntimeError):
    """pip could not reach the package index (on Kaggle: the notebook's Internet setting is off)."""


# What pip prints when it cannot reach the index (no DNS, no route, refused, timed out, a proxy in the way).
_OFFLINE = re.compile(r"NewConnectionError|Failed to establish a new connection|name resolution|Name or service not "
                      r"known|Network is unreachable|ConnectTimeout|Connection refused|ProxyError|Max retries exceeded")


def install_packages(requirements: list[str], quiet: bool = True) -> None:
    """pip-install ``requirements`` without touching the installed jax/jaxlib/libtpu/numpy.

    Raises ``NoInternet`` (one sentence: switch on Kaggle's Internet setting) when pip cannot reach the package
    index, and RuntimeError with the end of pip's output for any other failure.
    """
    if not requirements:
        return
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(_held_versions()))
    cmd = [sys.executable, "-m", "pip", "install", *(["-q"] if quiet else []), "--retries", "2", "-c", f.name,
           *requirements]
    print("installing:", " ".join(requirements))
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        out = done.stdout + done.stderr
        if _OFFLINE.search(out):
            raise NoInternet(f"pip could not reach the package index to install {' '.join(requirements)}: on Kaggle, "
                             "switch on Internet in the notebook's Settings (it needs a phone-verified account), "
                             "or on any machine connect it to the internet, then run this cell again.") from None
        raise RuntimeError(f"pip install {' '.join(requirements)} failed:\n" + "\n".join(out.splitlines()[-15:]))
    if not quiet:
        print(done.stdout)
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
    """Install whatever this notebook needs and is missing (a no-op on a machine set up by ``make demo``);
    ``wandb=True`` (notebook 03 with a ``wandb_mode`` other than "disabled") adds wandb. Raises ``NoInternet`` when
    something is missing and pip cannot reach the package index."""
    install_packages(missing_packages(with_wandb=wandb))
    if audio:
        msg = install_fluidsynth()
        if "present" not in msg:
            print(msg)
