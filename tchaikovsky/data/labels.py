"""What is known about a piece from names alone: composer and period tables, name normalisation.

The embedded corpus's folders map to a composer and period (``MUSIC21``); a composer named in dataset metadata
(MAESTRO, GiantMIDI-Piano file names) gets a period from ``PERIOD_NAMES`` by full name or surname.
"""

from __future__ import annotations

import unicodedata


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

