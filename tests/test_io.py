"""tchaikovsky.io: writes that never leave a torn file, the one score loader, the one JSON-lines reader."""

import json

import pytest
import symusic

from tchaikovsky import io


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "sub" / "report.json"
    io.atomic_write(path, '{"v": 1}')
    assert json.loads(path.read_text()) == {"v": 1}

    def broken(f):
        f.write(b'{"v": 2, "half')
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        io.atomic_write(path, broken)
    assert json.loads(path.read_text()) == {"v": 1}  # the previous version, whole
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]  # no temporary left behind


def test_replacing_hands_out_a_path_for_writers_that_need_one(tmp_path):
    target = tmp_path / "out.mid"
    with io.replacing(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".tmp-")
        symusic.Score(480).dump_midi(str(tmp))
    assert symusic.Score(str(target)).ticks_per_quarter == 480


def test_atomic_dir_replaces_a_directory_whole_and_stale_temporaries_are_removed(tmp_path):
    target = tmp_path / "step_1"
    io.atomic_dir(target, lambda d: (d / "a.txt").write_text("first"))
    io.atomic_dir(target, lambda d: (d / "b.txt").write_text("second"))
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    (tmp_path / ".tmp-step_2-123").mkdir()
    (tmp_path / ".tmp-model.eqx-123").write_bytes(b"torn")
    io.remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_1"]


def test_load_score_converts_units_and_names_bad_files(tmp_path):
    score = symusic.Score(480)
    track = symusic.Track("piano", 0, False)
    track.notes.append(symusic.Note(0, 480, 60, 80))
    score.tracks.append(track)
    score.tempos.append(symusic.Tempo(0, 60.0))
    path = tmp_path / "one.mid"
    score.dump_midi(str(path))

    seconds = io.load_score(path, "second")
    assert seconds.tracks[0].notes[0].duration == pytest.approx(1.0)  # a quarter note at 60 qpm
    assert io.load_score(seconds, "tick").tracks[0].notes[0].duration == 480
    tick = io.load_score(str(path))
    assert io.load_score(tick) is tick  # already in the asked unit: no copy

    class Piece:  # anything with a .path, as corpus pieces have
        pass

    piece = Piece()
    piece.path = path
    assert io.load_score(piece).note_num() == 1
    with pytest.raises(FileNotFoundError, match="no MIDI file"):
        io.load_score(tmp_path / "missing.mid")
    (tmp_path / "bad.mid").write_bytes(b"MThd not really")
    with pytest.raises(ValueError, match="bad.mid is not a readable MIDI file"):
        io.load_score(tmp_path / "bad.mid")


def test_read_jsonl_skips_half_written_lines_and_cuts_at_a_step(tmp_path):
    path = tmp_path / "history.jsonl"
    assert io.read_jsonl(path) == []
    io.write_jsonl(path, [{"step": 10, "loss": 3.0}, {"step": 20, "loss": 2.5}])
    with open(path, "a") as f:
        f.write('{"step": 30, "lo')  # a writer killed mid-line
    assert [r["step"] for r in io.read_jsonl(path)] == [10, 20]
    assert [r["step"] for r in io.read_jsonl(path, upto_step=10)] == [10]
    assert io.read_jsonl([{"step": 1}, "not a record"]) == [{"step": 1}]
