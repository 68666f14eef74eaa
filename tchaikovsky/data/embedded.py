"""The embedded corpus: music21's bundled scores exported to MIDI, lazily, in parallel, cached.

``embedded_corpus()`` exports only as many scores as a run asks for into ``<cache>/music21/<composer>/`` and
remembers what it did in ``metadata.json`` (each file's source, composer, title, collection, period, parts and
instrumentation (``labels.instrumentation_of`` on the exported MIDI, whose tracks carry music21's part names); and
the sources that failed, for the music21 version that failed them), so a repeated call converts nothing.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import symusic

from tchaikovsky import io, progress
from tchaikovsky.data.labels import MUSIC21, instrumentation_of, period_of, person

log = logging.getLogger(__name__)

_SOURCE_SUFFIXES = (".mxl", ".musicxml", ".xml", ".krn", ".mei", ".abc", ".mid", ".midi")
_META_FORMAT = "tchaikovsky-music21-export/1"
_MIN_POOL_JOBS = 8  # with workers=None, fewer scores than this are converted in-process
DEFAULT_FILES = 40  # scores a run of the embedded corpus exports when it names no number (max_files=None)


def default_cache_dir() -> Path:
    """Where exports are cached: $TCHAIKOVSKY_CACHE, else $XDG_CACHE_HOME/tchaikovsky, else ~/.cache/tchaikovsky."""
    if os.environ.get("TCHAIKOVSKY_CACHE"):
        return Path(os.environ["TCHAIKOVSKY_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "tchaikovsky"


@dataclass(frozen=True)
class _Source:
    composer: str  # as requested, e.g. "bach"; also the export sub-directory
    src: Path  # the music21 score file
    key: str  # src relative to the music21 corpus, e.g. "beethoven/opus18no1/movement1.mxl"
    dest: str  # the MIDI file relative to the export root, e.g. "beethoven/opus18no1_movement1.mid"


def _music21_sources(composer: str) -> list[_Source]:
    """music21's score files for one composer, sorted by path; one file per piece (a piece stored as both .krn and
    .mxl keeps the .mxl) and no Roman-numeral analyses."""
    from music21 import common, corpus  # heavy (~2 s): only when the embedded corpus is exported

    corpus_root = Path(common.getCorpusFilePath())
    best: dict[tuple[Path, str], Path] = {}
    for p in map(Path, corpus.getComposer(composer)):
        if p.suffix.lower() in _SOURCE_SUFFIXES:
            k = (p.parent, p.stem)
            best[k] = min(best.get(k, p), p, key=lambda q: _SOURCE_SUFFIXES.index(q.suffix.lower()))
    sources = []
    for p in sorted(best.values(), key=str):
        parts = p.relative_to(corpus_root).parts if p.is_relative_to(corpus_root) else (p.name,)
        if len(parts) > 1 and parts[0].lower() == composer.lower():
            composer, parts_in = parts[0], parts[1:]  # music21's own spelling names the directory ("bach")
        else:
            parts_in = parts
        dest = f"{composer}/{'_'.join(parts_in)[: -len(p.suffix)]}.mid"
        sources.append(_Source(composer, p, "/".join(parts), dest))
    return sources


def _choose(sources: dict[str, list[_Source]], failed: dict[str, str], n: int | None):
    """Take sources round-robin across composers, each in sorted order, passing over ones that failed before, until
    n are chosen (a composer that runs out leaves its share to the others). Returns (chosen, failed passed over)."""
    chosen: list[_Source] = []
    passed: list[_Source] = []
    iters = [iter(v) for v in sources.values()]
    while iters and (n is None or len(chosen) < n):
        for it in list(iters):
            if n is not None and len(chosen) >= n:
                break
            for s in it:
                if s.key not in failed:
                    chosen.append(s)
                    break
                passed.append(s)
            else:
                iters.remove(it)
    return chosen, passed


def _first_score(src: Path):
    """Parse a music21 source; of an Opus (a file of many tunes) only the first score. Multi-tune .abc files are
    asked for their first tune directly: parsing a 300-tune Opus to keep one costs seconds."""
    from music21 import converter, stream  # heavy (~2 s): only when the embedded corpus is exported

    number = None
    if src.suffix.lower() == ".abc":
        tunes = re.findall(r"^X:\s*(\d+)", src.read_text(encoding="latin-1"), flags=re.M)
        number = int(tunes[0]) if len(tunes) > 1 else None
    obj = converter.parse(src, number=number, forceSource=True, storePickle=False)
    if isinstance(obj, stream.Opus):
        scores = list(obj.scores)
        if not scores:
            raise ValueError("Opus holds no scores")
        obj = scores[0]
    return obj


def _m21_title(score, src: Path) -> str:
    """Title from the score's metadata, with the movement name when it adds something; else the file stem. A
    movement name that is the file name or one word (music21 often stores a part name such as "CANTO") is ignored."""
    md = score.metadata
    title = (md.title or "").strip() if md is not None else ""
    movement = (md.movementName or "").strip() if md is not None else ""
    if movement == src.name or " " not in movement or movement == title:
        movement = ""
    return ": ".join(s for s in (title, movement) if s) or src.stem


def _drop_repeats(score) -> None:
    """Remove repeat barlines, voltas and jumps (segno, coda, D.C.) from a music21 score, in place."""
    from music21 import bar, repeat, spanner, stream  # heavy (~2 s): only when the embedded corpus is exported

    for m in score.recurse().getElementsByClass(stream.Measure):
        if isinstance(m.leftBarline, bar.Repeat):
            m.leftBarline = None
        if isinstance(m.rightBarline, bar.Repeat):
            m.rightBarline = bar.Barline("regular")
    for el in list(score.recurse().getElementsByClass((repeat.RepeatExpression, spanner.RepeatBracket))):
        el.activeSite.remove(el)


def _export_one(src: str, dst: str) -> dict:
    """Process-pool worker: convert one music21 score to a MIDI file at dst (one track per part), atomically (a
    temporary file, checked to hold notes, then renamed). Returns facts about the score, or {"error": message}."""
    from music21 import repeat  # heavy (~2 s): only when the embedded corpus is exported

    try:
        score = _first_score(Path(src))
        with io.replacing(dst) as tmp:
            try:
                score.write("midi", fp=str(tmp))
            except repeat.ExpanderException:  # repeats music21 cannot unfold (a few quartets): play them once
                _drop_repeats(score)
                score.write("midi", fp=str(tmp))
            midi = symusic.Score(str(tmp), fmt="midi")
            n_notes = midi.note_num()
            if n_notes == 0:
                raise ValueError("exported MIDI has no notes")
        composer = score.metadata.composer if score.metadata is not None else None
        return {"title": _m21_title(score, Path(src)), "composer": composer, "n_parts": len(score.parts) or 1,
                "n_notes": n_notes, "instrumentation": instrumentation_of(midi)}
    except Exception as e:  # any failure of one score is reported, never raised
        return {"error": f"{type(e).__name__}: {io.short_error(e)}"}


def read_export_meta(root: Path, music21_version: str | None = None) -> dict:
    """root/metadata.json of an export: {"pieces": {rel_path: facts}, "failed": {source: error}}, empty if absent.
    Failures are remembered only for the music21 version that produced them."""
    try:
        meta = json.loads((root / "metadata.json").read_text())
    except (OSError, ValueError):
        meta = {}
    if not str(meta.get("format", "")).startswith(_META_FORMAT.split("/")[0]):
        meta = {}  # somebody else's metadata.json
    failed = meta.get("failed", {}) if meta.get("music21") == music21_version else {}
    return {"pieces": dict(meta.get("pieces", {})), "failed": dict(failed)}


def _write_meta(root: Path, meta: dict, music21_version: str) -> None:
    """Merge into metadata.json (another process may have exported other composers meanwhile), atomically."""
    disk = read_export_meta(root, music21_version)
    merged = {k: {**disk[k], **meta[k]} for k in ("pieces", "failed")}
    io.atomic_write(root / "metadata.json", json.dumps({"format": _META_FORMAT, "music21": music21_version,
                                                        **merged}, indent=1, ensure_ascii=False))


def _mp_context():
    """fork where it is safe: fastest, and a script needs no ``if __name__ == "__main__"`` guard. Once JAX is
    imported its threads make fork deadlock-prone (JAX warns so), hence spawn, whose workers import only this module."""
    return multiprocessing.get_context("fork" if sys.platform == "linux" and "jax" not in sys.modules else "spawn")


def _convert(todo: list[_Source], root: Path, meta: dict, workers: int | None) -> None:
    """Export the sources in todo on a process pool, recording each result in meta (saved every 30 s and at the
    end, even when interrupted). A few scores, or whatever a broken pool left over, are converted in this process."""
    import music21  # heavy (~2 s): only when the embedded corpus is exported

    for composer in {s.composer for s in todo}:
        (root / composer).mkdir(parents=True, exist_ok=True)
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    if workers is None and len(todo) < _MIN_POOL_JOBS:
        n_workers = 1  # starting workers (~1 s with spawn) would cost more than it saves
    pending = {s.dest: s for s in todo}
    last_saved = time.monotonic()
    bar = progress.bar(total=len(todo), desc="music21 -> MIDI", unit="score")

    def record(s: _Source, res: dict) -> None:
        if "error" in res:
            meta["failed"][s.key] = res["error"]
            log.warning("skipped music21 score %s: %s", s.key, res["error"])
        else:
            name, period = MUSIC21.get(s.composer.lower(), (None, None))
            composer = name or person(res["composer"])
            meta["pieces"][s.dest] = {"source": s.key, "composer": composer, "title": res["title"],
                                      "collection": s.composer, "period": period or period_of(composer),
                                      "n_parts": res["n_parts"], "instrumentation": res["instrumentation"]}
        del pending[s.dest]
        bar.update()
        nonlocal last_saved
        if time.monotonic() - last_saved > 30:  # a killed kernel then loses at most 30 s of conversions
            _write_meta(root, meta, music21.__version__)
            last_saved = time.monotonic()

    try:
        if n_workers > 1:
            try:
                pool = ProcessPoolExecutor(n_workers, mp_context=_mp_context())
                try:
                    futures = {pool.submit(_export_one, str(s.src), str(root / s.dest)): s for s in todo}
                    for f in as_completed(futures):
                        record(futures[f], f.result())
                finally:
                    pool.shutdown(cancel_futures=True)
            except BrokenProcessPool as e:  # e.g. spawn from a script lacking the __main__ guard
                log.warning("music21 export pool failed (%s); converting the remaining %d here", e, len(pending))
        for s in list(pending.values()):
            record(s, _export_one(str(s.src), str(root / s.dest)))
    finally:
        bar.close()
        _write_meta(root, meta, music21.__version__)


def _sources(composers: Sequence[str]) -> dict[str, list[_Source]]:
    """music21's score files per composer (each named once, whatever its case); ValueError for a composer music21
    has no scores of, or for none at all."""
    if isinstance(composers, str):
        composers = (composers,)
    unique: dict[str, str] = {}
    for c in composers:
        unique.setdefault(c.lower(), c)
    if not unique:
        raise ValueError("composers is empty: name at least one music21 composer, e.g. 'bach'")
    sources = {c: _music21_sources(c) for c in unique.values()}
    if missing := [c for c, v in sources.items() if not v]:
        raise ValueError(f"music21's corpus has no scores for {missing}; try e.g. 'bach', 'palestrina', 'mozart', "
                         "'beethoven', 'monteverdi', 'essenFolksong', 'ryansMammoth'")
    return sources


def available_scores(composers: Sequence[str]) -> int:
    """How many scores the embedded corpus of ``composers`` holds: what ``max_files=None`` would export."""
    return sum(map(len, _sources(composers).values()))


def export_embedded(composers: Sequence[str], max_files: int | None, cache_dir,
                    workers: int | None) -> tuple[Path, list[_Source], list[_Source], dict]:
    """embedded_corpus's work; also returns the sources chosen, the failed ones passed over, and the metadata."""
    import music21  # heavy (~2 s): only when the embedded corpus is exported

    sources = _sources(composers)
    root = Path(cache_dir or default_cache_dir()).expanduser() / "music21"
    root.mkdir(parents=True, exist_ok=True)
    meta = read_export_meta(root, music21.__version__)
    while True:  # each round exports or fails every pending source, so this ends
        chosen, passed = _choose(sources, meta["failed"], max_files)
        todo = [s for s in chosen if not (s.dest in meta["pieces"] and (root / s.dest).is_file())]
        if not todo:
            return root, chosen, passed, meta
        _convert(todo, root, meta, workers)


def embedded_corpus(*, composers: Sequence[str] = ("bach",), max_files: int | None = DEFAULT_FILES, cache_dir=None,
                    workers: int | None = None) -> Path:
    """Export music21's bundled scores for ``composers`` to MIDI under ``cache_dir/"music21"/<composer>/`` and return
    that directory.

    Lazy: only ``max_files`` scores (None: all), chosen deterministically (sorted paths, spread evenly across the
    composers), and files already exported are reused, so a repeated call converts nothing. Conversion is slow
    (music21 parsing, ~0.15 s a chorale) and runs on ``workers`` processes (default: every core). A score that fails
    to convert, or converts to no notes, is logged, remembered in metadata.json and replaced by the next one.
    metadata.json maps each exported file to its source, composer, title, collection, period, n_parts and
    instrumentation (files exported before instrumentation was recorded get it from their MIDI when loaded).
    """
    return export_embedded(composers, max_files, cache_dir, workers)[0]
