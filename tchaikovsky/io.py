"""Files that are never half-written, scores from wherever they come, and JSON-lines logs.

Everything the package writes to a run directory goes through ``atomic_write`` or ``atomic_dir``: the bytes land
in a temporary sibling first and are renamed into place, so a run killed mid-save leaves the previous version (or
nothing), never a torn file. ``load_score`` is the one "path, Piece or Score -> Score" conversion; ``read_jsonl``
the one reader of ``history.jsonl``-style logs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import symusic


@contextmanager
def replacing(path: str | Path, *, durable: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` (parents created) for the body to write; when the body finishes, it
    replaces ``path`` (``os.replace``, after an fsync with ``durable``); when the body raises, it is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    try:
        yield tmp
        if durable:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, data: bytes | str | Callable[[IO[bytes]], Any], *, durable: bool = False) -> Path:
    """Write ``data`` (bytes, text, or a function given the open binary file) to ``path`` through ``replacing``.
    Returns ``path``."""
    with replacing(path, durable=durable) as tmp, open(tmp, "wb") as f:
        if callable(data):
            data(f)
        else:
            f.write(data.encode() if isinstance(data, str) else data)
    return Path(path)


def atomic_dir(target: str | Path, write: Callable[[Path], Any]) -> Path:
    """Fill a directory with ``write(tmp_dir)``, fsync its files, then rename it to ``target`` (replacing an
    existing one). Temporary directories are hidden (``.tmp-<name>-<pid>``) so readers never list them."""
    target = Path(target)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    for f in tmp.iterdir():  # make the bytes durable before the rename makes them visible
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    if target.exists():  # re-saving the same name (e.g. the final save right after a periodic one)
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def remove_stale_temporaries(folder: str | Path) -> None:
    """Delete the ``.tmp-*`` directories and files that a run killed mid-save left in ``folder``."""
    for stale in Path(folder).glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


def load_score(source, unit: str = "tick") -> symusic.Score:
    """A symusic Score in ``unit`` ("tick", "quarter" or "second") from a MIDI path, anything with a ``.path``
    (a corpus ``Piece``), or a Score in any unit (converted; a Score already in ``unit`` is returned as is).

    Raises FileNotFoundError for a missing file and ValueError, naming it, for an unreadable one."""
    if hasattr(source, "path") and not isinstance(source, (str, Path)):
        source = source.path
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no MIDI file at {path}")
        try:
            score = symusic.Score(str(path), fmt="midi")
        except Exception as e:  # symusic raises RuntimeError on corrupt or truncated files
            raise ValueError(f"{path} is not a readable MIDI file: {e}") from e
    else:
        score = source
    if not str(score.ttype).lower().endswith(unit):
        score = score.to(unit)
    return score


def read_jsonl(source: str | Path | list[dict], *, upto_step: int | None = None) -> list[dict]:
    """The JSON objects of a JSON-lines file (missing file: []; lines half-written by a running writer or not
    objects are skipped), or a list of dicts as given. With ``upto_step``, only records whose ``step`` is <= it."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        records = []
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    else:
        records = list(source)
    records = [r for r in records if isinstance(r, dict)]
    if upto_step is not None:
        records = [r for r in records if r.get("step", 0) <= upto_step]
    return records


def write_jsonl(path: str | Path, records: list[dict]) -> Path:
    """Replace ``path`` with one JSON object per line, atomically."""
    return atomic_write(path, "".join(json.dumps(r) + "\n" for r in records))


def short_error(e: BaseException, limit: int = 120) -> str:
    """The first line of an exception's message, without symusic's boilerplate, at most ``limit`` characters."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    msg = msg.removeprefix("MiniMidi: ").removesuffix(": iostream error")
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def jsonable(x):
    """NaN / inf -> None, numpy scalars and arrays -> Python, recursively (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, Path):
        return str(x)
    return x
