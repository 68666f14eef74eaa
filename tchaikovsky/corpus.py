"""Finding, validating and describing MIDI files; the embedded music21 corpus.

Training music comes from one of two places:

* a folder of MIDI files (a Kaggle dataset such as MAESTRO or GiantMIDI-Piano, or your own): ``load_corpus(path)``
  walks it, checks every ``.mid``/``.midi`` with symusic and keeps the usable, distinct pieces;
* the scores bundled with music21 (Bach chorales, Palestrina, ...), which need no download: ``embedded_corpus()``
  exports them to MIDI once into a cache and ``load_corpus("")`` reads that.

Every file considered ends up in ``Corpus.report``, kept or skipped with a reason, so nothing vanishes silently.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import multiprocessing
import os
import re
import sys
import time
import unicodedata
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import symusic
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

MIDI_SUFFIXES = (".mid", ".midi")
# music21 source formats, most preferred first when one piece exists in several (.rntxt files are analyses, not music)
_SOURCE_SUFFIXES = (".mxl", ".musicxml", ".xml", ".krn", ".mei", ".abc", ".mid", ".midi")
_META_FORMAT = "tchaikovsky-music21-export/1"
_MIN_POOL_JOBS = 8  # with workers=None, fewer scores than this are converted in-process
_HASH_STEPS_PER_QUARTER = 3840  # time grid for duplicate detection, fine enough for any real tpq
_REASONS = ("not a file", "empty", "unreadable", "no notes", "drums only", "too few notes", "too long",
            "duplicate", "export failed")

# music21 corpus name -> (composer, period); composer None for collections of many or anonymous composers.
_MUSIC21 = {
    "bach": ("Johann Sebastian Bach", "Baroque"), "handel": ("George Frideric Handel", "Baroque"),
    "corelli": ("Arcangelo Corelli", "Baroque"), "cpebach": ("Carl Philipp Emanuel Bach", "Classical"),
    "palestrina": ("Giovanni Pierluigi da Palestrina", "Renaissance"), "josquin": ("Josquin des Prez", "Renaissance"),
    "monteverdi": ("Claudio Monteverdi", "Renaissance"), "ciconia": ("Johannes Ciconia", "Medieval"),
    "trecento": (None, "Medieval"), "mozart": ("Wolfgang Amadeus Mozart", "Classical"),
    "haydn": ("Joseph Haydn", "Classical"), "beethoven": ("Ludwig van Beethoven", "Classical"),
    "schubert": ("Franz Schubert", "Romantic"), "schumann": ("Robert Schumann", "Romantic"),
    "chopin": ("Frédéric Chopin", "Romantic"), "verdi": ("Giuseppe Verdi", "Romantic"),
    "weber": ("Carl Maria von Weber", "Romantic"), "joplin": ("Scott Joplin", "Modern"),
    "essenfolksong": (None, "Folk"), "ryansmammoth": (None, "Folk"),
}
# Surnames (or full names where a surname is ambiguous) -> period, for composers named in dataset metadata.
_PERIOD_NAMES = {
    "Medieval": "machaut, landini, ciconia, vitry, perotin, leonin",
    "Renaissance": "josquin, prez, palestrina, lassus, byrd, dowland, tallis, victoria, gesualdo, monteverdi, dufay",
    "Baroque": "bach, handel, vivaldi, corelli, scarlatti, rameau, couperin, telemann, purcell, buxtehude, pachelbel",
    "Classical": "carl philipp emanuel bach, johann christian bach, mozart, haydn, beethoven, clementi, hummel, "
                 "gluck, dussek, field",
    "Romantic": "schubert, schumann, chopin, liszt, brahms, mendelssohn, tchaikovsky, rachmaninoff, rachmaninov, "
                "grieg, mussorgsky, dvorak, verdi, weber, alkan, franck, faure, saint-saens, albeniz, granados, "
                "wagner, balakirev, scriabin, medtner, czerny, paderewski, godowsky",
    "Modern": "debussy, ravel, satie, prokofiev, shostakovich, bartok, stravinsky, joplin, gershwin, messiaen, "
              "janacek, berg, schoenberg, ligeti, poulenc, hindemith, copland, barber",
}
_PERIODS = {name.strip(): period for period, names in _PERIOD_NAMES.items() for name in names.split(",")}
_GIANTMIDI_ID = re.compile(r"[A-Za-z0-9_-]{6,16}")  # the YouTube id that ends a GiantMIDI-Piano file name


def default_cache_dir() -> Path:
    """Where exports are cached: $TCHAIKOVSKY_CACHE, else $XDG_CACHE_HOME/tchaikovsky, else ~/.cache/tchaikovsky."""
    if os.environ.get("TCHAIKOVSKY_CACHE"):
        return Path(os.environ["TCHAIKOVSKY_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "tchaikovsky"


@dataclass(frozen=True)
class Piece:
    """One usable MIDI file and what is known about it."""

    path: Path
    rel_path: str
    composer: str | None = None
    title: str | None = None
    collection: str | None = None
    period: str | None = None
    n_parts: int | None = None
    split: str | None = None

    def to_dict(self) -> dict:
        """JSON-able fields; the location is given only as ``rel_path`` so the dict is portable between machines."""
        d = asdict(self)
        del d["path"]
        return d


@dataclass
class Corpus:
    """The kept pieces under ``root`` (sorted by rel_path) and a report line for every file considered."""

    root: Path
    pieces: list[Piece]
    report: list[dict]

    def __len__(self) -> int:
        return len(self.pieces)

    def summary(self) -> dict:
        """Counts of kept and skipped files, the skips grouped by kind of reason ("unreadable", "duplicate", ...)."""
        reasons = Counter(_reason_kind(r["reason"]) for r in self.report if r["status"] == "skipped")
        return {"kept": len(self.pieces), "skipped": sum(reasons.values()), "by_reason": dict(reasons.most_common())}

    def write_report(self, path: str | Path) -> Path:
        """Write the summary and the per-file report as JSON; returns the path written."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"root": str(self.root), **self.summary(), "files": self.report}, indent=1,
                                   ensure_ascii=False))
        return path


def _reason_kind(reason: str) -> str:
    return next((kind for kind in _REASONS if reason.startswith(kind)), reason)


def _short_error(e: BaseException, limit: int = 120) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    msg = msg.removeprefix("MiniMidi: ").removesuffix(": iostream error")
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _fold(name: str) -> str:
    """Lower-case ASCII form of a name, for table look-ups ("Frédéric" -> "frederic")."""
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower().strip()


def _period(composer: str | None) -> str | None:
    """Period from the composer's full name, else surname; for "A / B" (transcriptions) the first composer."""
    name = _fold((composer or "").split("/")[0])
    return (_PERIODS.get(name) or _PERIODS.get(name.split()[-1])) if name else None


def _person(name: str | None) -> str | None:
    """ "Bach, Johann Sebastian" -> "Johann Sebastian Bach"; first line only (music21 adds dates on a second)."""
    lines = (name or "").strip().splitlines()
    name = lines[0].strip() if lines else ""
    if name.count(",") == 1:
        surname, first = (s.strip() for s in name.split(","))
        name = f"{first} {surname}".strip()
    return name or None


# ---------------------------------------------------------------------------------------------------------------------
# The embedded corpus: music21's bundled scores exported to MIDI, lazily and in parallel.


@dataclass(frozen=True)
class _Source:
    composer: str  # as requested, e.g. "bach"; also the export sub-directory
    src: Path  # the music21 score file
    key: str  # src relative to the music21 corpus, e.g. "beethoven/opus18no1/movement1.mxl"
    dest: str  # the MIDI file relative to the export root, e.g. "beethoven/opus18no1_movement1.mid"


def _music21_sources(composer: str) -> list[_Source]:
    """music21's score files for one composer, sorted by path; one file per piece (a piece stored as both .krn and
    .mxl keeps the .mxl) and no Roman-numeral analyses."""
    from music21 import common, corpus

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
    from music21 import converter, stream

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
    from music21 import bar, repeat, spanner, stream

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
    from music21 import repeat

    tmp = Path(dst).with_name(f".{Path(dst).name}.{os.getpid()}.tmp")
    try:
        score = _first_score(Path(src))
        try:
            score.write("midi", fp=str(tmp))
        except repeat.ExpanderException:  # repeats music21 cannot unfold (a few quartets): play them once
            _drop_repeats(score)
            score.write("midi", fp=str(tmp))
        n_notes = symusic.Score(str(tmp), fmt="midi").note_num()
        if n_notes == 0:
            raise ValueError("exported MIDI has no notes")
        os.replace(tmp, dst)
        composer = score.metadata.composer if score.metadata is not None else None
        return {"title": _m21_title(score, Path(src)), "composer": composer, "n_parts": len(score.parts) or 1,
                "n_notes": n_notes}
    except Exception as e:  # any failure of one score is reported, never raised
        return {"error": f"{type(e).__name__}: {_short_error(e)}"}
    finally:
        tmp.unlink(missing_ok=True)


def _read_meta(root: Path, music21_version: str | None = None) -> dict:
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
    disk = _read_meta(root, music21_version)
    merged = {k: {**disk[k], **meta[k]} for k in ("pieces", "failed")}
    tmp = root / f".metadata.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"format": _META_FORMAT, "music21": music21_version, **merged}, indent=1,
                              ensure_ascii=False))
    os.replace(tmp, root / "metadata.json")


def _mp_context():
    """fork where it is safe: fastest, and a script needs no ``if __name__ == "__main__"`` guard. Once JAX is
    imported its threads make fork deadlock-prone (JAX warns so), hence spawn, whose workers import only this module."""
    return multiprocessing.get_context("fork" if sys.platform == "linux" and "jax" not in sys.modules else "spawn")


def _convert(todo: list[_Source], root: Path, meta: dict, workers: int | None, progress: bool) -> None:
    """Export the sources in todo on a process pool, recording each result in meta (saved every 30 s and at the
    end, even when interrupted). A few scores, or whatever a broken pool left over, are converted in this process."""
    import music21

    for composer in {s.composer for s in todo}:
        (root / composer).mkdir(parents=True, exist_ok=True)
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    if workers is None and len(todo) < _MIN_POOL_JOBS:
        n_workers = 1  # starting workers (~1 s with spawn) would cost more than it saves
    pending = {s.dest: s for s in todo}
    last_saved = time.monotonic()
    bar = tqdm(total=len(todo), desc="music21 -> MIDI", unit="score", disable=not progress)

    def record(s: _Source, res: dict) -> None:
        if "error" in res:
            meta["failed"][s.key] = res["error"]
            log.warning("skipped music21 score %s: %s", s.key, res["error"])
        else:
            name, period = _MUSIC21.get(s.composer.lower(), (None, None))
            composer = name or _person(res["composer"])
            meta["pieces"][s.dest] = {"source": s.key, "composer": composer, "title": res["title"],
                                      "collection": s.composer, "period": period or _period(composer),
                                      "n_parts": res["n_parts"]}
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


def _export_embedded(composers: Sequence[str], max_files: int | None, cache_dir, workers: int | None,
                     progress: bool) -> tuple[Path, list[_Source], list[_Source], dict]:
    """embedded_corpus's work; also returns the sources chosen, the failed ones passed over, and the metadata."""
    import music21

    if isinstance(composers, str):
        composers = (composers,)
    unique: dict[str, str] = {}
    for c in composers:
        unique.setdefault(c.lower(), c)
    composers = list(unique.values())
    if not composers:
        raise ValueError("composers is empty: name at least one music21 composer, e.g. 'bach'")
    root = Path(cache_dir or default_cache_dir()).expanduser() / "music21"
    sources = {c: _music21_sources(c) for c in composers}
    if missing := [c for c, v in sources.items() if not v]:
        raise ValueError(f"music21's corpus has no scores for {missing}; try e.g. 'bach', 'palestrina', 'mozart', "
                         "'beethoven', 'monteverdi', 'essenFolksong', 'ryansMammoth'")
    root.mkdir(parents=True, exist_ok=True)
    meta = _read_meta(root, music21.__version__)
    while True:  # each round exports or fails every pending source, so this ends
        chosen, passed = _choose(sources, meta["failed"], max_files)
        todo = [s for s in chosen if not (s.dest in meta["pieces"] and (root / s.dest).is_file())]
        if not todo:
            return root, chosen, passed, meta
        _convert(todo, root, meta, workers, progress)


def embedded_corpus(*, composers: Sequence[str] = ("bach",), max_files: int | None = 40, cache_dir=None,
                    workers: int | None = None, progress: bool = True) -> Path:
    """Export music21's bundled scores for ``composers`` to MIDI under ``cache_dir/"music21"/<composer>/`` and return
    that directory.

    Lazy: only ``max_files`` scores (None: all), chosen deterministically (sorted paths, spread evenly across the
    composers), and files already exported are reused, so a repeated call converts nothing. Conversion is slow
    (music21 parsing, ~0.15 s a chorale) and runs on ``workers`` processes (default: every core). A score that fails
    to convert, or converts to no notes, is logged, remembered in metadata.json and replaced by the next one.
    metadata.json maps each exported file to its source, composer, title, collection, period and n_parts.
    """
    return _export_embedded(composers, max_files, cache_dir, workers, progress)[0]


# ---------------------------------------------------------------------------------------------------------------------
# Scanning and validating a folder of MIDI files.


def _scan(root: Path) -> tuple[list[str], int]:
    """Every path under root whose name ends in .mid/.midi (any case), sorted, as posix paths relative to root, and
    the number of other files seen. Hidden directories (.git, .ipynb_checkpoints) are not entered."""
    found, n_other = [], 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in dirnames + filenames:
            if name.lower().endswith(MIDI_SUFFIXES):
                found.append((Path(dirpath) / name).relative_to(root).as_posix())
        n_other += sum(not f.lower().endswith(MIDI_SUFFIXES) for f in filenames)
    return sorted(found), n_other


def _content_hash(score: symusic.Score) -> str:
    """Hash of the music itself: sorted (start, pitch, duration, program) rows, times in quarter notes on a fine grid
    (so a re-save at another ticks-per-quarter still matches), drums as program -1; velocities and tempo ignored."""
    rows = []
    for t in score.tracks:
        a = t.notes.numpy()
        if len(a["pitch"]):
            prog = np.full(len(a["pitch"]), -1 if t.is_drum else t.program, np.int64)
            rows.append(np.stack([a["time"], a["pitch"], a["duration"], prog], axis=1).astype(np.int64))
    x = np.concatenate(rows)
    x[:, [0, 2]] = (x[:, [0, 2]] * _HASH_STEPS_PER_QUARTER + score.tpq // 2) // score.tpq
    x = np.ascontiguousarray(x[np.lexsort(x.T[::-1])])
    return hashlib.sha1(x.tobytes()).hexdigest()


def _check(path: Path, min_notes: int, max_duration_s: float) -> tuple[str | None, str | None, int]:
    """(reason to skip or None, content hash, number of tracks with notes) for one candidate file."""
    if not path.is_file():
        return ("not a file (directory)" if path.is_dir() else "not a file"), None, 0
    if path.stat().st_size == 0:
        return "empty", None, 0
    try:
        score = symusic.Score(str(path), fmt="midi")
    except Exception as e:  # corrupt, truncated, or not MIDI at all
        return f"unreadable: {_short_error(e)}", None, 0
    tracks = [t for t in score.tracks if t.note_num() > 0]
    n_notes = sum(t.note_num() for t in tracks)
    if n_notes == 0:
        return "no notes", None, 0
    if all(t.is_drum for t in tracks):
        return "drums only", None, len(tracks)
    if n_notes < min_notes:
        return f"too few notes ({n_notes} < {min_notes})", None, len(tracks)
    if (duration := score.to("second").end()) > max_duration_s:
        return f"too long ({duration:.0f} s > {max_duration_s:g} s)", None, len(tracks)
    return None, _content_hash(score), len(tracks)


def _folder_metadata(root: Path) -> dict[str, dict]:
    """rel_path -> metadata from files in the folder: our metadata.json (the embedded export) and MAESTRO's
    maestro-v*.csv (in root or one level down; its midi_filename is relative to the csv's directory)."""
    info = dict(_read_meta(root)["pieces"])
    for table in sorted([*root.glob("maestro-v*.csv"), *root.glob("*/maestro-v*.csv")]):
        base = table.parent.relative_to(root)
        try:
            with open(table, newline="", encoding="utf-8-sig") as f:
                rows = [row for row in csv.DictReader(f) if row.get("midi_filename")]
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            log.warning("ignoring unreadable MAESTRO table %s: %s", table, e)
            continue
        for row in rows:
            info[(base / row["midi_filename"]).as_posix()] = {
                "composer": row.get("canonical_composer") or None, "title": row.get("canonical_title") or None,
                "collection": "maestro", "split": row.get("split") or None}
    return info


def _giantmidi(name: str) -> dict | None:
    """Metadata from a GiantMIDI-Piano file name "Surname, First names, Title, YouTubeId.mid", else None."""
    fields = [f.strip() for f in name.rsplit(".", 1)[0].split(",")]
    if len(fields) < 4 or not fields[0] or not _GIANTMIDI_ID.fullmatch(fields[-1]):
        return None
    return {"composer": f"{fields[1]} {fields[0]}".strip(), "title": ", ".join(fields[2:-1]) or None,
            "collection": "giantmidi"}


def _make_piece(root: Path, rel: str, info: dict[str, dict], n_tracks: int) -> Piece:
    meta = info.get(rel) or _giantmidi(Path(rel).name) or {}
    composer = meta.get("composer")
    return Piece(path=root / rel, rel_path=rel, composer=composer, title=meta.get("title") or Path(rel).stem,
                 collection=meta.get("collection"), period=meta.get("period") or _period(composer),
                 n_parts=meta.get("n_parts") or n_tracks, split=meta.get("split"))


def load_corpus(data_dir: str | Path = "", *, max_files: int | None = None, composers: Sequence[str] = ("bach",),
                cache_dir=None, min_notes: int = 8, max_duration_s: float = 3600.0, progress: bool = True) -> Corpus:
    """The usable MIDI pieces of ``data_dir``, or of the embedded music21 corpus when ``data_dir`` is "" (exporting
    ``max_files or 40`` scores of ``composers`` first, see ``embedded_corpus``).

    Every .mid/.midi file under data_dir (any case, recursively) is read with symusic and skipped, with its reason in
    the report, if it is not a file, empty, unreadable, has no notes, only drums, fewer than ``min_notes`` notes,
    lasts more than ``max_duration_s`` seconds, or repeats the music of a file earlier in sorted order. At most
    ``max_files`` pieces are kept, the first in sorted order; scanning stops there. Metadata comes from the embedded
    export's metadata.json, a MAESTRO csv, or GiantMIDI-Piano file names; otherwise the title is the file stem.
    Raises ValueError if data_dir does not exist or holds no usable MIDI file.
    """
    report: list[dict] = []
    if data_dir in ("", None):
        root, chosen, passed, meta = _export_embedded(composers, max_files or 40, cache_dir, None, progress)
        files, n_other = sorted(s.dest for s in chosen), 0
        report += [{"path": s.dest, "status": "skipped", "reason": f"export failed: {meta['failed'][s.key]}"}
                   for s in passed]
    else:
        root = Path(data_dir).expanduser().resolve()
        if not root.is_dir():
            raise ValueError(f"data_dir {str(data_dir)!r} does not exist or is not a directory")
        files, n_other = _scan(root)
    info = _folder_metadata(root)

    pieces: list[Piece] = []
    first_of: dict[str, str] = {}  # content hash -> rel_path of the kept piece with that music
    for rel in tqdm(files, desc="checking MIDI files", unit="file", disable=not progress):
        if max_files is not None and len(pieces) >= max_files:
            break
        reason, digest, n_tracks = _check(root / rel, min_notes, max_duration_s)
        if reason is None and digest in first_of:
            reason = f"duplicate of {first_of[digest]}"
        if reason is not None:
            report.append({"path": rel, "status": "skipped", "reason": reason})
            continue
        first_of[digest] = rel
        pieces.append(_make_piece(root, rel, info, n_tracks))
        report.append({"path": rel, "status": "kept"})
    report.sort(key=lambda r: r["path"])
    corpus = Corpus(root=root, pieces=pieces, report=report)
    if not pieces:
        s = corpus.summary()
        raise ValueError(f"no usable MIDI file in {root}: found {len(files)} .mid/.midi path(s) and {n_other} other "
                         f"file(s); skipped {s['skipped']} ({s['by_reason']})")
    return corpus


# ---------------------------------------------------------------------------------------------------------------------
# Statistics for the exploration notebook.


def _as_score(x: Any) -> symusic.Score:
    if isinstance(x, Piece):
        x = x.path
    if isinstance(x, (str, Path)):
        return symusic.Score(str(x), fmt="midi")
    return x if str(x.ttype).endswith("Tick") else x.to("tick")


def piece_stats(path_or_score: str | Path | Piece | symusic.Score) -> dict:
    """Facts about one piece (a path, Piece or symusic Score): note count, duration in seconds, tracks with notes
    and their programs, whether any is drums, per-note pitch / velocity / duration-in-beats arrays, tempos in
    quarter notes per minute ([120.0], the MIDI default, when the file sets none) and time signatures as "n/d"."""
    score = _as_score(path_or_score)
    tracks = [t for t in score.tracks if t.note_num() > 0]
    notes = [t.notes.numpy() for t in tracks]

    def cat(key: str) -> np.ndarray:
        return np.concatenate([n[key] for n in notes]).astype(np.int64) if notes else np.zeros(0, np.int64)

    return {
        "n_notes": int(sum(len(n["pitch"]) for n in notes)),
        "duration_s": float(score.to("second").end()) if notes else 0.0,
        "n_tracks": len(tracks),
        "programs": [int(t.program) for t in tracks],
        "is_drum": any(t.is_drum for t in tracks),
        "pitches": cat("pitch"),
        "velocities": cat("velocity"),
        "durations_beats": cat("duration") / score.tpq,
        "tempos": [float(t.qpm) for t in score.tempos] or [120.0],
        "time_signatures": [f"{ts.numerator}/{ts.denominator}" for ts in score.time_signatures],
    }


def corpus_stats(corpus: Corpus, max_pieces: int | None = None) -> dict:
    """piece_stats aggregated over the first ``max_pieces`` pieces (all if None): piece and note counts, total
    duration, per-piece note counts and durations, every note's pitch / velocity / duration in beats, all tempos,
    and counts of time signatures, composers ("unknown" for None) and programs."""
    pieces = corpus.pieces[:max_pieces]
    stats = [piece_stats(p.path) for p in pieces]

    def cat(key: str, dtype) -> np.ndarray:
        return np.concatenate([s[key] for s in stats]).astype(dtype) if stats else np.zeros(0, dtype)

    return {
        "n_pieces": len(stats),
        "n_notes": int(sum(s["n_notes"] for s in stats)),
        "total_duration_s": float(sum(s["duration_s"] for s in stats)),
        "notes_per_piece": np.array([s["n_notes"] for s in stats], np.int64),
        "duration_s": np.array([s["duration_s"] for s in stats], np.float64),
        "pitches": cat("pitches", np.int64),
        "velocities": cat("velocities", np.int64),
        "durations_beats": cat("durations_beats", np.float64),
        "tempos": [t for s in stats for t in s["tempos"]],
        "time_signatures": dict(Counter(ts for s in stats for ts in s["time_signatures"]).most_common()),
        "composers": dict(Counter(p.composer or "unknown" for p in pieces).most_common()),
        "programs": dict(Counter(prog for s in stats for prog in s["programs"]).most_common()),
    }
