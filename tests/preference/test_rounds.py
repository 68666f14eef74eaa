"""A round's folder: prompts, per-prompt samples and scores written atomically, pairs, and resume after a crash."""

import json
from pathlib import Path

import numpy as np
import pytest

from tchaikovsky.data.corpus import Piece
from tchaikovsky.preference.rounds import Round, prompt_key, prompts_with_enough, round_dir
from tchaikovsky.preference.selection import SelectionConfig

A = {"period": "Baroque", "composer": "Johann Sebastian Bach", "instrumentation": "voices"}
B = {"period": "Renaissance", "composer": "Giovanni Pierluigi da Palestrina", "instrumentation": "voices"}


def test_prompts_are_the_combinations_with_more_than_ten_pieces():
    def pieces(n, **labels):
        return [Piece(path=Path(f"/x/{i}.mid"), rel_path=f"{i}.mid", **labels) for i in range(n)]

    corpus = pieces(11, **A) + pieces(12, **B) + pieces(10, period="Classical", composer="Haydn",
                                                         instrumentation="strings")
    corpus += pieces(30, period="Folk", composer=None, instrumentation="solo melody")  # unknown composer
    assert prompts_with_enough(corpus) == [B, A]  # most pieces first; 10 is not more than 10
    assert prompts_with_enough(corpus, min_pieces=9)[-1]["composer"] == "Haydn"


def test_prompt_keys_are_safe_and_distinct():
    key = prompt_key(A)
    assert key.startswith("Baroque__Johann-Sebastian-Bach__voices__") and "/" not in key
    assert prompt_key(B) != key and prompt_key(dict(reversed(A.items()))) == key
    assert prompt_key({**A, "composer": "Johann Sebastian Bach!"}) != key  # same words, other value


def records(n, seed):
    rng = np.random.default_rng(seed)
    return [{"tokens": [1, 7] + rng.integers(3, 20, 30).tolist() + [2], "prompt_len": 2,
             "invalid_share": 0.0} for _ in range(n)]


def test_a_round_interrupted_midway_resumes_where_it_stopped(tmp_path):
    r = Round(round_dir(tmp_path, 1))
    assert r.dir == tmp_path / "preference" / "round_01" and not r.done
    assert r.pending([A, B], "samples") == [A, B] and r.pending([A, B], "scores") == []
    written = r.write_samples(A, records(10, 0))
    assert written[3]["id"] == f"{prompt_key(A)}/0003" and written[3]["length"] == 31 and written[3]["prompt"] == A
    # a crash while writing B's samples leaves only a hidden temporary file: B is still pending, A is not redone
    (r.dir / "samples" / f".tmp-{prompt_key(B)}.jsonl-999").write_text('{"id": "half')
    again = Round(r.dir)
    assert again.pending([A, B], "samples") == [B] and again.pending([A, B], "scores") == [A]
    assert [s["id"] for s in again.samples()] == [s["id"] for s in written]
    again.write_samples(B, records(10, 1))
    scores = {}
    for p in (A, B):
        scores[prompt_key(p)] = [{"id": s["id"], "score": float(i), "max_similarity": 0.5}
                                 for i, s in enumerate(again.samples(p))]
    again.write_scores(A, scores[prompt_key(A)])
    with pytest.raises(ValueError, match="no scores yet"):
        again.select([A, B])
    assert again.pending([A, B], "scores") == [B]
    with pytest.raises(ValueError, match="does not have"):
        again.write_scores(B, scores[prompt_key(A)])
    again.write_scores(B, scores[prompt_key(B)])
    sel = again.select([A, B], SelectionConfig(top_fraction=0.2, min_length=8))
    assert sel[prompt_key(A)].chosen == [f"{prompt_key(A)}/0009", f"{prompt_key(A)}/0008"]
    pairs = again.pairs()
    assert len(pairs) == 8 and pairs[0] == {"prompt": prompt_key(A), "chosen": f"{prompt_key(A)}/0009",
                                            "rejected": f"{prompt_key(A)}/0000", "chosen_score": 9.0,
                                            "rejected_score": 0.0, "chosen_len": 31, "rejected_len": 31}
    report = json.loads((again.dir / "selection.json").read_text())
    assert report["length"]["pairs"] == 8 and report["prompts"][prompt_key(B)]["n_pairs"] == 4
    shards = again.pair_shards(pad_id=0, tokenizer_hash="h")
    assert len(shards) == 8 and shards.chosen[0] == again.samples(A)[9]["tokens"]
    w = shards.windows([0], 40)
    assert w["chosen_mask"][0].sum() == 31  # the generated tokens and EOS, not the two prompt tokens
    again.finish({"score_mean": 0.5})
    assert Round(r.dir).done and Round(r.dir).pending([A, B], "samples") == []
    assert Round(r.dir).metrics() == {"score_mean": 0.5}
