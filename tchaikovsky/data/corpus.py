"""A folder of MIDI files as a corpus: every file checked, the usable distinct pieces kept, each skip explained.

``load_corpus(path)`` walks a folder (a Kaggle dataset such as MAESTRO or GiantMIDI-Piano, or your own) and keeps
the usable, distinct pieces; ``load_corpus("")`` does the same on the embedded corpus (``tchaikovsky.data.embedded``)
after exporting what it needs. Every file considered ends up in ``Corpus.report``, kept or skipped with a reason.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import symusic

from tchaikovsky import io, progress
from tchaikovsky.data.embedded import DEFAULT_FILES, available_scores, export_embedded, read_export_meta
from tchaikovsky.data.labels import instrumentation_of, music21_work, period_of, read_labels_csv

log = logging.getLogger(__name__)

MIDI_SUFFIXES = (".mid", ".midi")
_HASH_STEPS_PER_QUARTER = 3840  # time grid for duplicate detection, fine enough for any real tpq
_REASONS = ("not a file", "empty", "unreadable", "no notes", "drums only", "too few notes", "too long",
            "duplicate", "export failed")
_GIANTMIDI_ID = re.compile(r"[A-Za-z0-9_-]{6,16}")  # the YouTube id that ends a GiantMIDI-Piano file name


@dataclass(frozen=True)
class Piece:
    """One usable MIDI file and what is known about it (None = unknown). ``instrumentation`` is one of
    ``labels.INSTRUMENTATIONS`` unless a labels.csv says otherwise; ``work`` names the work the piece belongs to
    (pieces of one work, such as the movements of a quartet or two performances of a sonata, share it), for
    splitting by work."""

    path: Path
    rel_path: str
    composer: str | None = None
    title: str | None = None
    collection: str | None = None
    period: str | None = None
    n_parts: int | None = None
    split: str | None = None
    instrumentation: str | None = None
    work: str | None = None

    def to_dict(self) -> dict:
        """JSON-able fields; the location is given only as ``rel_path`` so the dict is portable between machines."""
        d = asdict(self)
        del d["path"]
        return d


@dataclass
class Corpus:
    """The kept pieces under ``root`` (sorted by rel_path) and a report line for every file considered. ``found``:
    the MIDI files in the folder (of the embedded corpus: the scores music21 holds for the composers); ``cap``: the
    ``max_files`` that left some of them unread, None when none was left."""

    root: Path
    pieces: list[Piece]
    report: list[dict]
    found: int | None = None
    cap: int | None = None
    max_files: int | None = None  # as asked for (None: a folder's every file, DEFAULT_FILES of the embedded corpus)

    def __len__(self) -> int:
        return len(self.pieces)

    def summary(self) -> dict:
        """Counts of kept and skipped files, the skips grouped by kind of reason ("unreadable", "duplicate", ...),
        and ``labels``: for composer, period and instrumentation, the kept pieces per value ("unknown" for None),
        most common first."""
        reasons = Counter(_reason_kind(r["reason"]) for r in self.report if r["status"] == "skipped")
        return {"kept": len(self.pieces), "skipped": sum(reasons.values()), "by_reason": dict(reasons.most_common()),
                "labels": label_counts(self.pieces)}

    def cap_note(self) -> str | None:
        """"kept N of M files (max_files=...)" when ``max_files`` left files unread, else None."""
        if self.cap is None:
            return None
        asked = f"max_files={self.max_files}" + ("" if self.max_files == self.cap else
                                                 f": the embedded corpus's default, {self.cap}")
        return f"kept {len(self.pieces)} of {self.found} files ({asked})"

    def write_report(self, path: str | Path) -> Path:
        """Write the summary (with ``found`` and, when files were left unread, ``cap``: the note of ``cap_note``) and
        the per-file report as JSON; returns the path written."""
        capped = {"cap": self.cap_note()} if self.cap is not None else {}
        return io.atomic_write(path, json.dumps({"root": str(self.root), **self.summary(), "found": self.found,
                                                 **capped, "files": self.report}, indent=1, ensure_ascii=False))


def label_counts(pieces: Sequence[Piece], labels: Sequence[str] = ("composer", "period", "instrumentation")) -> dict:
    """{label: {value: number of pieces}} over ``pieces``, "unknown" for None, most common first."""
    return {k: dict(Counter(getattr(p, k) or "unknown" for p in pieces).most_common()) for k in labels}


def _reason_kind(reason: str) -> str:
    return next((kind for kind in _REASONS if reason.startswith(kind)), reason)


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


def _check(path: Path, min_notes: int, max_duration_s: float) -> tuple[str | None, str | None, dict]:
    """(reason to skip or None, content hash, facts read from the MIDI: n_parts = tracks with notes, and
    instrumentation) for one candidate file."""
    if not path.is_file():
        return ("not a file (directory)" if path.is_dir() else "not a file"), None, {}
    if path.stat().st_size == 0:
        return "empty", None, {}
    try:
        score = symusic.Score(str(path), fmt="midi")
    except Exception as e:  # corrupt, truncated, or not MIDI at all
        return f"unreadable: {io.short_error(e)}", None, {}
    tracks = [t for t in score.tracks if t.note_num() > 0]
    n_notes = sum(t.note_num() for t in tracks)
    if n_notes == 0:
        return "no notes", None, {}
    if all(t.is_drum for t in tracks):
        return "drums only", None, {}
    if n_notes < min_notes:
        return f"too few notes ({n_notes} < {min_notes})", None, {}
    if (duration := score.to("second").end()) > max_duration_s:
        return f"too long ({duration:.0f} s > {max_duration_s:g} s)", None, {}
    return None, _content_hash(score), {"n_parts": len(tracks), "instrumentation": instrumentation_of(score)}


def _folder_metadata(root: Path) -> dict[str, dict]:
    """rel_path -> metadata from files in the folder: our metadata.json (the embedded export) and MAESTRO's
    maestro-v*.csv (in root or one level down; its midi_filename is relative to the csv's directory)."""
    info = dict(read_export_meta(root)["pieces"])
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


def _work(rel: str, meta: dict, composer: str | None) -> str:
    """The work key: from a music21 source, from composer and title in MAESTRO / GiantMIDI (performances of one
    piece share it), else the file's path without its suffix (every file its own work)."""
    if meta.get("source"):
        return music21_work(meta["source"])
    if meta.get("collection") in ("maestro", "giantmidi") and meta.get("title"):
        return f"{composer or 'unknown'}: {meta['title']}"
    return rel.rsplit(".", 1)[0]


def _make_piece(root: Path, rel: str, info: dict[str, dict], facts: dict, user: dict) -> Piece:
    """A kept file's Piece: its metadata (``info``, else a GiantMIDI file name), the facts read from its MIDI
    (instrumentation when the metadata lacks it, as in exports made before it was recorded), then the user's
    labels.csv row ``user``, which wins over everything."""
    meta = info.get(rel) or _giantmidi(Path(rel).name) or {}
    composer = user.get("composer", meta.get("composer"))
    period = user["period"] if "period" in user else (meta.get("period") or period_of(composer))
    instrumentation = user.get("instrumentation", meta.get("instrumentation") or facts.get("instrumentation"))
    return Piece(path=root / rel, rel_path=rel, composer=composer, title=meta.get("title") or Path(rel).stem,
                 collection=meta.get("collection"), period=period, n_parts=meta.get("n_parts") or facts["n_parts"],
                 split=meta.get("split"), instrumentation=instrumentation,
                 work=user.get("work") or _work(rel, meta, composer))


def load_corpus(data_dir: str | Path = "", *, max_files: int | None = None, composers: Sequence[str] = ("bach",),
                cache_dir=None, min_notes: int = 8, max_duration_s: float = 3600.0) -> Corpus:
    """The usable MIDI pieces of ``data_dir``, or of the embedded music21 corpus when ``data_dir`` is "" (exporting
    ``max_files`` scores of ``composers`` first, ``DEFAULT_FILES`` (40) when it is None; see ``embedded_corpus``).

    Every .mid/.midi file under data_dir (any case, recursively) is read with symusic and skipped, with its reason in
    the report, if it is not a file, empty, unreadable, has no notes, only drums, fewer than ``min_notes`` notes,
    lasts more than ``max_duration_s`` seconds, or repeats the music of a file earlier in sorted order. At most
    ``max_files`` pieces are kept (None: all), the first in sorted order; scanning stops there, and the corpus
    records the cap (``Corpus.cap_note``) when it left files unread. Metadata comes from the embedded
    export's metadata.json, a MAESTRO csv, or GiantMIDI-Piano file names; otherwise the title is the file stem.
    The instrumentation is read from the MIDI tracks (``labels.instrumentation_of``) unless metadata gives it. A
    ``labels.csv`` at the root (``labels.read_labels_csv``) wins over all of these.
    Raises ValueError if data_dir does not exist, holds no usable MIDI file, or has a malformed labels.csv.
    """
    report: list[dict] = []
    if data_dir in ("", None):
        cap = max_files or DEFAULT_FILES
        root, chosen, passed, meta = export_embedded(composers, cap, cache_dir, None)
        files, n_other = sorted(s.dest for s in chosen), 0
        found = available_scores(composers)
        cap = cap if len(chosen) + len(passed) < found else None  # None: every score was taken
        report += [{"path": s.dest, "status": "skipped", "reason": f"export failed: {meta['failed'][s.key]}"}
                   for s in passed]
    else:
        root = Path(data_dir).expanduser().resolve()
        if not root.is_dir():
            raise ValueError(f"data_dir {str(data_dir)!r} does not exist or is not a directory")
        files, n_other = _scan(root)
        found, cap = len(files), None
    info = _folder_metadata(root)
    user = read_labels_csv(root, set(files))

    pieces: list[Piece] = []
    first_of: dict[str, str] = {}  # content hash -> rel_path of the kept piece with that music
    for rel in progress.bar(files, desc="checking MIDI files", unit="file"):
        if max_files is not None and len(pieces) >= max_files:
            cap = max_files
            break
        reason, digest, facts = _check(root / rel, min_notes, max_duration_s)
        if reason is None and digest in first_of:
            reason = f"duplicate of {first_of[digest]}"
        if reason is not None:
            report.append({"path": rel, "status": "skipped", "reason": reason})
            continue
        first_of[digest] = rel
        pieces.append(_make_piece(root, rel, info, facts, user.get(rel, {})))
        report.append({"path": rel, "status": "kept"})
    report.sort(key=lambda r: r["path"])
    corpus = Corpus(root=root, pieces=pieces, report=report, found=found, cap=cap, max_files=max_files)
    if not pieces:
        s = corpus.summary()
        raise ValueError(f"no usable MIDI file in {root}: found {len(files)} .mid/.midi path(s) and {n_other} other "
                         f"file(s); skipped {s['skipped']} ({s['by_reason']})")
    return corpus
