"""Previews: the first seconds of a piece, rendered with real FluidSynth and encoded as real MP3/WAV bytes."""

import io
import wave

import numpy as np
import pytest
import symusic as sm

from tchaikovsky.render import audio, preview

pytestmark = pytest.mark.skipif(not audio.audio_available()[0], reason=audio.audio_available()[1])

TPQ = 480


def long_piece(minutes: float) -> sm.Score:
    """Two voices of quarter notes at 120 bpm (2 notes per beat) for ``minutes``: a long performance in memory."""
    score = sm.Score(TPQ)
    track = sm.Track("piano", 0, False)
    for i in range(int(minutes * 120)):
        track.notes.append(sm.Note(i * TPQ, TPQ, 48 + (i * 7) % 36, 70 + i % 40))
        track.notes.append(sm.Note(i * TPQ, 2 * TPQ, 36 + (i * 5) % 24, 60))
    score.tracks.append(track)
    score.tempos.append(sm.Tempo(0, 120.0))
    return score


def wav_samples(data: bytes) -> tuple[np.ndarray, int, int]:
    with wave.open(io.BytesIO(data), "rb") as f:
        pcm = np.frombuffer(f.readframes(f.getnframes()), "<i2") / 32768.0
        return pcm, f.getframerate(), f.getnchannels()


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def test_a_long_piece_previews_only_its_opening_as_compact_mp3(tmp_path):
    midi = tmp_path / "long.mid"
    long_piece(25).dump_midi(str(midi))
    p = preview.preview(midi, 30)
    assert p.mimetype == "audio/mpeg" and p.format == "mp3"
    assert p.data[:3] == b"ID3" or p.data[0] == 0xFF  # an MP3 file: ID3 tag or frame sync
    assert p.seconds == pytest.approx(30.0) and p.full_seconds == pytest.approx(25 * 60 + 0.5 + 1.0, abs=0.05)
    assert preview.duration(p.data) == pytest.approx(30.0, abs=0.05)  # what a browser will play
    assert p.cut and p.caption == "preview: the first 0:30 of 25:02"
    # compact: a 16 kHz mono WAV would be 32 kB/s and the full CD-quality WAV 176 kB/s (265 MB for this piece)
    assert 1_000 * 30 < len(p.data) < 10_000 * 30


def test_only_the_requested_seconds_are_synthesized():
    score = long_piece(2)
    head = audio.render_array(score, sample_rate=16000, seconds=3.0)
    whole = audio.render_array(score, sample_rate=16000)
    assert head.shape == (3 * 16000, 2) and whole.shape == ((120 + 0.5 + 1.0) * 16000, 2)
    # the same sound as the whole render's first 3 s, up to the peak normalisation of each
    a, b = head[:, 0], whole[: 3 * 16000, 0]
    assert np.corrcoef(a, b)[0, 1] > 0.999
    with pytest.raises(ValueError, match="seconds must be > 0"):
        audio.render_array(score, seconds=0)


def test_a_piece_shorter_than_the_preview_plays_whole_with_its_release(tmp_path):
    score = long_piece(4 / 60)  # 8 quarter notes at 120 bpm: 4 s, the last bass note rings to 4.5 s
    p = preview.preview(score, 60, encoding="wav")
    pcm, rate, channels = wav_samples(p.data)
    assert (rate, channels) == (16000, 1) and p.mimetype == "audio/wav" and p.format == "wav"
    assert p.seconds == pytest.approx(4.5 + 1.0) == preview.duration(p.data)
    assert not p.cut and p.caption == "0:06"
    assert rms(pcm) > 0.02  # real sound, not silence
    assert np.abs(pcm).max() == pytest.approx(0.9, abs=0.01)  # normalised like every render


def test_a_cut_preview_fades_out_instead_of_stopping_mid_note():
    pcm, rate, _ = wav_samples(preview.preview(long_piece(1), 10, encoding="wav").data)
    assert len(pcm) == 10 * rate
    assert rms(pcm[5 * rate:6 * rate]) > 0.05 and rms(pcm[-rate // 50:]) < 0.01  # loud mid-way, silent at the end


def test_an_empty_piece_gives_a_second_of_silence():
    empty = sm.Score(TPQ)
    empty.tracks.append(sm.Track("nothing", 0, False))
    for encoding in ("mp3", "wav"):
        p = preview.preview(empty, 30, encoding=encoding)
        assert p.seconds == pytest.approx(1.0) and p.full_seconds == pytest.approx(1.0) and not p.cut
        assert preview.duration(p.data) == pytest.approx(1.0, abs=0.05)
    assert np.abs(wav_samples(p.data)[0]).max() < 0.01


def test_players_embed_exactly_the_preview():
    p = preview.preview(long_piece(1), 5)
    html = p._repr_html_()
    assert html.count("<audio") == 1 and "autoplay" not in html
    assert 'src="data:audio/mpeg;base64,' in html and "the first 0:05 of 1:02" in html
    assert repr(p) == f"Preview(mp3, preview: the first 0:05 of 1:02, {len(p.data) / 1000:.0f} kB)"  # no bytes
    w = p.widget()
    assert w.value == p.data and w.format == "mp3" and not w.autoplay and not w.loop


def test_bad_arguments_fail_clearly(tmp_path):
    score = long_piece(0.1)
    for bad in (0, -5.0, float("nan")):
        with pytest.raises(ValueError, match="seconds must be > 0"):
            preview.preview(score, bad)
    with pytest.raises(ValueError, match="encoding must be"):
        preview.preview(score, 5, encoding="ogg")
    with pytest.raises(FileNotFoundError, match="no MIDI file"):
        preview.preview(tmp_path / "missing.mid", 5)
    with pytest.raises(RuntimeError, match="soundfont"):
        preview.preview(score, 5, soundfont=tmp_path / "missing.sf2")
