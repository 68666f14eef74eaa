"""What is known about a piece without listening: composer, period, instrumentation, work; a user's labels.csv.

The embedded corpus's folders map to a composer and period (``MUSIC21``); a composer named in dataset metadata
(MAESTRO, GiantMIDI-Piano file names) gets a period from ``PERIOD_NAMES`` by full name or surname. The
instrumentation class comes from track names and programs (``instrumentation_of``; the classes and rules are
documented at ``INSTRUMENTATIONS``); ``music21_work`` groups a music21 file with the other movements of its work.
``read_labels_csv`` reads and validates the labels a user gives a folder, which win over every guess.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np


# music21 corpus name -> (composer, period); composer None for collections of many or anonymous composers.
MUSIC21 = {
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
PERIOD_NAMES = {
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
_PERIODS = {name.strip(): period for period, names in PERIOD_NAMES.items() for name in names.split(",")}


def fold(name: str) -> str:
    """Lower-case ASCII form of a name, for table look-ups ("Frédéric" -> "frederic")."""
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower().strip()


def period_of(composer: str | None) -> str | None:
    """Period from the composer's full name, else surname; for "A / B" (transcriptions) the first composer."""
    name = fold((composer or "").split("/")[0])
    return (_PERIODS.get(name) or _PERIODS.get(name.split()[-1])) if name else None


def person(name: str | None) -> str | None:
    """ "Bach, Johann Sebastian" -> "Johann Sebastian Bach"; first line only (music21 adds dates on a second)."""
    lines = (name or "").strip().splitlines()
    name = lines[0].strip() if lines else ""
    if name.count(",") == 1:
        surname, first = (s.strip() for s in name.split(","))
        name = f"{first} {surname}".strip()
    return name or None



# ---------------------------------------------------------------------------------------------- instrumentation

# The instrumentation classes, chosen from the data we meet (music21's chorales, madrigals, masses and quartets;
# MAESTRO and GiantMIDI piano; folk-song melodies; arbitrary multi-track MIDI):
#   "solo melody": one pitched track that never sounds two notes at once (folk songs, a lone violin line);
#   "keyboard":    at least 3/4 of the pitched tracks are keyboards (piano, organ, harpsichord: programs 0-7, 16-23);
#   "voices":      at least 3/4 are voices (named Soprano, Alto, Tenor, Bass, Canto, Quinto, ...; programs 52-54);
#   "strings":     at least 3/4 are bowed strings (named Violin, Viola, Cello, ...; programs 40-45, 48-51);
#   "ensemble":    anything else (mixed families: piano and voice, winds, orchestra).
# A track's family comes from its name when the name says it (music21 names parts but leaves most programs at 0),
# else from its General MIDI program. The 3/4 rule lets a chorale with one doubling horn stay "voices".
INSTRUMENTATIONS = ("keyboard", "voices", "strings", "solo melody", "ensemble")
_NAME_WORDS = {
    "voices": "soprano sopran cantus canto alto altus contratenor tenor tenore bass basso bassus quinto quintus "
              "sextus septimus superius discantus voice voices vox choir chorus coro",
    "strings": "violin violino violins viola violas cello violoncello contrabass viol string strings",
    "keyboard": "piano pianoforte organ orgel harpsichord cembalo clavier klavier keyboard clavichord",
    "other": "horn corno flute flauto oboe clarinet bassoon fagotto trumpet tromba trombone tuba recorder guitar "
             "lute harp timpani drum",
}
_WORD_FAMILY = {w: fam for fam, words in _NAME_WORDS.items() for w in words.split()}
_PROGRAM_FAMILY = {**dict.fromkeys([*range(0, 8), *range(16, 24)], "keyboard"),
                   **dict.fromkeys([*range(40, 46), *range(48, 52)], "strings"), **dict.fromkeys(range(52, 55), "voices")}


def track_family(name: str | None, program: int) -> str:
    """"voices", "strings", "keyboard" or "other" for one track: the first word of its name found in the word
    lists ("Double bass" -> strings, "Bass" -> voices), else its General MIDI program (0-127)."""
    words = re.findall(r"[a-z]+", fold(name or ""))
    if "double" in words and "bass" in words:
        return "strings"
    return next((_WORD_FAMILY[w] for w in words if w in _WORD_FAMILY), None) or _PROGRAM_FAMILY.get(program, "other")


def instrumentation_of(score) -> str | None:
    """The instrumentation class (one of ``INSTRUMENTATIONS``) of a symusic Score by the rules above; None when it
    has no pitched note. Drum tracks are ignored."""
    tracks = [t for t in score.tracks if not t.is_drum and t.note_num() > 0]
    if not tracks:
        return None
    if len(tracks) == 1:
        a = tracks[0].notes.numpy()
        order = np.argsort(a["time"], kind="stable")
        start, end = a["time"][order], (a["time"] + a["duration"])[order]
        if len(start) < 2 or np.all(start[1:] >= np.maximum.accumulate(end)[:-1]):
            return "solo melody"
    families = Counter(track_family(t.name, int(t.program)) for t in tracks)
    family, n = families.most_common(1)[0]
    return family if family != "other" and 4 * n >= 3 * len(tracks) else "ensemble"


# ---------------------------------------------------------------------------------------------- works

_BWV = re.compile(r"(bwv\d+)", re.I)  # bach/bwv1.6: chorale 6 of cantata BWV 1
_MASS = re.compile(r"^[A-Za-z]+(?:_[IV]+)?_(\d+)")  # palestrina/Credo_06_c: part c of the Credo of mass 06


def music21_work(source: str) -> str:
    """The work a music21 corpus file belongs to, so that its movements never fall on both sides of a split:
    "beethoven/opus18no1/movement1.mxl" -> "beethoven/opus18no1" (a folder is one work), "bach/bwv1.6.mxl" ->
    "bach/bwv1" (the chorales of one cantata), "palestrina/Credo_06_c.krn" -> "palestrina/mass 06" (the sections
    of one mass), otherwise the path without its suffix ("monteverdi/madrigal.3.1")."""
    parts = source.split("/")
    if len(parts) >= 3:
        return "/".join(parts[:-1])
    stem = parts[-1].rsplit(".", 1)[0] if "." in parts[-1] else parts[-1]
    folder = parts[0] if len(parts) == 2 else ""
    if folder.lower() == "bach" and (m := _BWV.match(stem)):
        stem = m.group(1).lower()
    elif folder.lower() == "palestrina" and (m := _MASS.match(stem)):
        stem = f"mass {m.group(1)}"
    return f"{folder}/{stem}" if folder else stem


# ---------------------------------------------------------------------------------------------- labels.csv

LABEL_COLUMNS = ("composer", "period", "instrumentation", "work")  # besides "path"


def read_labels_csv(root: Path, midi_paths: set[str]) -> dict[str, dict]:
    """The labels a user wrote in ``root/labels.csv``: {rel_path: {column: value}} with only the non-empty cells
    (an empty cell says nothing: the piece keeps its guessed label, or stays unknown; the cell ``unknown`` forces
    unknown, stored as None). Columns: ``path`` (relative to root, as in ``midi_paths``) and any of
    ``LABEL_COLUMNS``. An instrumentation matching one of ``INSTRUMENTATIONS`` ignoring case is spelled as there.
    Returns {} without a labels.csv. Raises ValueError naming the file and line for: a missing ``path`` column,
    an unknown column, a row with more cells than the header, an empty or repeated path, a path that is not a
    .mid/.midi file in the folder."""
    path = root / "labels.csv"
    if not path.is_file():
        return {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path}: cannot read it as CSV ({e})") from e
    if "path" not in header:
        raise ValueError(f"{path}: the header {header} has no 'path' column; expected path,{','.join(LABEL_COLUMNS)}")
    if unknown := [h for h in header if h != "path" and h not in LABEL_COLUMNS]:
        raise ValueError(f"{path}: unknown column(s) {unknown}; allowed: path, {', '.join(LABEL_COLUMNS)}")
    out: dict[str, dict] = {}
    problems = []
    for line, row in rows:
        row = {(k or "").strip(): v for k, v in row.items()}
        if "" in row:  # DictReader puts extra cells under the key None
            problems.append(f"line {line}: more cells than the header's {len(header)}")
            continue
        rel = (row.get("path") or "").strip().replace("\\", "/").removeprefix("./")
        if not rel:
            problems.append(f"line {line}: empty path")
        elif rel in out:
            problems.append(f"line {line}: {rel!r} is labelled twice")
        elif rel not in midi_paths:
            problems.append(f"line {line}: {rel!r} is not a .mid/.midi file in {root}")
        else:
            cells = {k: (v or "").strip() for k, v in row.items() if k != "path" and (v or "").strip()}
            out[rel] = {k: (None if v.lower() == "unknown" else _canonical(k, v)) for k, v in cells.items()}
    if problems:
        raise ValueError(f"{path}: {len(problems)} bad row(s): " + "; ".join(problems[:10])
                         + (" ..." if len(problems) > 10 else ""))
    return out


def _canonical(column: str, value: str) -> str:
    if column == "instrumentation":
        return next((c for c in INSTRUMENTATIONS if c == value.lower()), value)
    return value
