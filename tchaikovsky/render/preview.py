"""Bounded inline audio: the first seconds of a piece, compactly encoded, for every player in the notebooks.

A notebook embeds each player's audio in its saved file (base64), so a player of a whole 27-minute performance
as 44.1 kHz stereo WAV weighs 290 MB and sinks the notebook. Every inline player therefore plays a *preview*:

    p = preview("piece.mid", seconds=30)      # synthesizes only the first 30 s (never the whole piece)
    p                                         # shown as an HTML <audio> player with "first 0:30 of 27:12"
    p.widget()                                # the same audio as an ipywidgets.Audio (grids, the sampler panel)

The encoding is MP3, mono, 32 kHz, variable bit rate (libsndfile through ``soundfile``): about 5.3 kB per second
of music, against 176 kB/s for CD-quality WAV and 32 kB/s for 16 kHz mono WAV, so a 30 s player costs ~210 kB in
the notebook. Without ``soundfile`` or an MP3-capable libsndfile, previews fall back to 16 kHz mono 16-bit WAV
(stdlib ``wave``): the length stays bounded, the bytes are six times more. The whole piece stays a download link
away (its ``.mid``, and the ``.wav`` where one was written as a file).
"""

from __future__ import annotations

import base64
import html
import inspect
import io as _io
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import symusic

from tchaikovsky import io
from tchaikovsky.render import audio

SECONDS = 30.0  # default preview length
_RATES = {"mp3": 32000, "wav": 16000}  # MP3: full bandwidth to 16 kHz at ~5 kB/s; WAV: the fallback, 32 kB/s
_MIMETYPES = {"mp3": "audio/mpeg", "wav": "audio/wav"}
_MP3_QUALITY = 0.5  # libsndfile's compression level for MP3: 0 = best (~9 kB/s mono), 1 = smallest
_FADE_S = 1.0  # a cut preview fades out over its last second instead of stopping mid-note
_TAIL_S = 1.0  # release after the last note, as ``audio.render``


def _clock(seconds: float) -> str:
    """37.4 -> "0:37", 1632 -> "27:12"."""
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}"


@dataclass(frozen=True, repr=False)
class Preview:
    """Encoded audio of a piece's opening. ``data``: the file's bytes; ``mimetype``: "audio/mpeg" or "audio/wav";
    ``seconds``: the length of that audio; ``full_seconds``: the whole piece's (score end + release tail).
    Displays itself as an HTML ``<audio>`` player (no autoplay) with a caption when it is cut; its repr (a
    notebook's text/plain copy of every output) names it without the bytes."""

    data: bytes
    mimetype: str
    seconds: float
    full_seconds: float

    @property
    def format(self) -> str:
        """"mp3" or "wav": the name ``ipywidgets.Audio(format=...)`` expects."""
        return next(k for k, v in _MIMETYPES.items() if v == self.mimetype)

    @property
    def cut(self) -> bool:
        """True when the preview is shorter than the piece."""
        return self.seconds < self.full_seconds - 1e-6

    @property
    def caption(self) -> str:
        if self.cut:
            return f"preview: the first {_clock(self.seconds)} of {_clock(self.full_seconds)}"
        return f"{_clock(self.full_seconds)}"

    def __repr__(self) -> str:  # also the notebook's text/plain output: never the bytes themselves
        return f"Preview({self.format}, {self.caption}, {len(self.data) / 1000:.0f} kB)"

    def data_uri(self) -> str:
        return f"data:{self.mimetype};base64,{base64.b64encode(self.data).decode()}"

    def _repr_html_(self) -> str:
        return (f'<div><audio controls preload="metadata" src="{self.data_uri()}"></audio>'
                f'<br><small>{html.escape(self.caption)}</small></div>')

    def widget(self):
        """The preview as an ``ipywidgets.Audio`` (no autoplay, no loop)."""
        import ipywidgets as W  # optional: only for the interactive widgets

        return W.Audio(value=self.data, format=self.format, autoplay=False, loop=False)


def _soundfile():
    """``soundfile`` when it can write MP3 (soundfile >= 0.12 bundles libsndfile >= 1.1 with LAME), else None."""
    try:
        import soundfile  # optional: only when a preview is encoded
    except (ImportError, OSError):
        return None
    return soundfile if "MP3" in soundfile.available_formats() else None


def _takes_level(sf) -> bool:
    """Whether this soundfile (>= 0.13) accepts ``compression_level``."""
    return "compression_level" in inspect.signature(sf.SoundFile.__init__).parameters


def mp3_available() -> bool:
    """Whether previews are MP3 here (else they fall back to 16 kHz mono WAV)."""
    return _soundfile() is not None


def encode(samples: np.ndarray, sample_rate: int, encoding: str = "mp3") -> bytes:
    """Mono float samples in [-1, 1], shape (n,), as the bytes of an MP3 file or a 16-bit WAV file."""
    samples = np.clip(np.asarray(samples, np.float32).reshape(-1), -1.0, 1.0)
    buf = _io.BytesIO()
    if encoding == "mp3":
        sf = _soundfile()
        if sf is None:
            raise RuntimeError("MP3 needs soundfile >= 0.12 (pip install soundfile): its wheels bundle libsndfile")
        # soundfile 0.12 cannot set the level: libsndfile's default then gives ~6.9 kB/s instead of ~5.3
        level = {"compression_level": _MP3_QUALITY} if _takes_level(sf) else {}
        with sf.SoundFile(buf, "w", sample_rate, 1, format="MP3", **level) as f:
            for i in range(0, len(samples), 1 << 16):  # in blocks: libsndfile's encoders dislike huge single writes
                f.write(samples[i:i + (1 << 16)])
    elif encoding == "wav":
        with wave.open(buf, "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(sample_rate)
            f.writeframes((samples * 32767).astype("<i2").tobytes())
    else:
        raise ValueError(f"encoding must be 'mp3' or 'wav', got {encoding!r}")
    return buf.getvalue()


def preview(midi: str | Path | symusic.Score, seconds: float = SECONDS, *, soundfont: str | Path | None = None,
            encoding: str = "auto") -> Preview:
    """Render the first ``seconds`` of ``midi`` (all of it when shorter, plus a 1 s release) and encode it.

    Only those seconds are synthesized, so the cost and the bytes are bounded by ``seconds`` however long the piece
    is; a cut preview fades out over its last second. ``encoding``: "mp3" (mono, 32 kHz, ~5 kB/s), "wav" (mono,
    16 kHz, 16-bit, 32 kB/s) or "auto" (MP3 when ``soundfile`` can write it, else WAV). A piece without notes
    gives the release tail's second of silence. Raises ValueError for ``seconds`` <= 0 or an unknown encoding, and
    RuntimeError (with install instructions) when FluidSynth or a soundfont is missing.
    """
    if not seconds > 0:
        raise ValueError(f"preview seconds must be > 0, got {seconds!r}")
    if encoding == "auto":
        encoding = "mp3" if mp3_available() else "wav"
    if encoding not in _RATES:
        raise ValueError(f"encoding must be 'mp3', 'wav' or 'auto', got {encoding!r}")
    score = io.load_score(midi, "second")
    full = max(score.end(), 0.0) + _TAIL_S
    rate = _RATES[encoding]
    stereo = audio.render_array(score, soundfont=soundfont, sample_rate=rate, tail_s=_TAIL_S, seconds=seconds)
    mono = stereo.mean(axis=1)
    if full > seconds:  # cut: fade out rather than stop mid-note
        n = min(len(mono), int(_FADE_S * rate))
        mono[len(mono) - n:] *= np.linspace(1.0, 0.0, n, dtype=np.float32)
    return Preview(encode(mono, rate, encoding), _MIMETYPES[encoding], len(mono) / rate, full)


def duration(data: bytes) -> float:
    """Seconds of audio in the bytes of an MP3 or WAV file (for checks on what a notebook embeds)."""
    if data[:4] == b"RIFF":
        with wave.open(_io.BytesIO(data), "rb") as f:
            return f.getnframes() / f.getframerate()
    sf = _soundfile()
    if sf is None:
        raise RuntimeError("reading MP3 needs soundfile (pip install soundfile)")
    return sf.info(_io.BytesIO(data)).duration
