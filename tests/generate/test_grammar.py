"""The REMI grammar mask and the sampler's other controls (repetition penalty, bars), on real tokenizers."""

import jax
import numpy as np
import pytest

from tchaikovsky.generate import grammar
from tchaikovsky.data import tokenizer
from tchaikovsky.config import ModelConfig
from tchaikovsky.model import build
from tchaikovsky.generate.sampling import generate


@pytest.fixture(scope="module")
def rules(bach):
    return grammar.Grammar(bach.tok)


@pytest.fixture(scope="module")
def untrained(bach):
    cfg = ModelConfig(vocab_size=len(bach.tok), context=64, d_model=32, n_layers=1, n_heads=2)
    return build(cfg, jax.random.key(0))


def test_real_music_obeys_the_grammar(bach, rules):
    for split in bach.shards.splits:
        for i in range(len(bach.shards.pieces(split))):
            assert rules.invalid_share(bach.shards.piece_ids(split, i)) == 0.0


def test_every_token_has_a_kind_and_bars_are_counted(bach, rules):
    tok = bach.tok
    specials = tokenizer.special_ids(tok)
    assert rules.first[specials["bos"]] == grammar.KINDS.index("BOS")
    assert (rules.first >= 0).mean() > 0.99  # only BPE's word-boundary marker has no musical kind
    ids = tokenizer.encode_file(tok, bach.pieces[0].path)
    remi = tokenizer.token_strings(tok, bach.pieces[0].path, n=10**6)["remi_tokens"]
    assert rules.bars[ids].sum() == remi.count("Bar_None") > 10


def test_broken_successions_are_found():

    tok = tokenizer.make_tokenizer()
    rules = grammar.Grammar(tok)
    ok = [tok[t] for t in ("BOS_None", "Bar_None", "Position_0", "Program_0", "Pitch_60", "Velocity_63",
                           "Duration_1.0.8", "EOS_None")]
    assert rules.invalid_share(ok) == 0.0
    bad = [tok[t] for t in ("Pitch_60", "Pitch_62", "Velocity_63")]  # a pitch must be followed by its velocity
    assert rules.invalid_share(bad) == 0.5


def test_mask_removes_invalid_successions(bach, rules, untrained):
    bos, eos = tokenizer.special_ids(bach.tok)["bos"], tokenizer.special_ids(bach.tok)["eos"]
    free = generate(untrained, [bos], 200, seed=[0, 1, 2], eos_id=eos)
    masked = generate(untrained, [bos], 200, seed=[0, 1, 2], eos_id=eos, grammar=rules)
    share_free = np.mean([rules.invalid_share(s) for s in free])
    share_masked = np.mean([rules.invalid_share(s) for s in masked])
    assert share_free > 0.2 and share_masked == 0.0
    for seq in masked:
        assert tokenizer.decode_ids(bach.tok, seq).note_num() > 0  # every note description is complete


def test_max_bars_stops_each_sequence(bach, rules, untrained):
    bos = tokenizer.special_ids(bach.tok)["bos"]
    for seq in generate(untrained, [bos], 300, seed=[0, 1, 2, 3], grammar=rules, max_bars=2):
        assert rules.bars[seq[1:]].sum() <= 2
    with pytest.raises(ValueError, match="grammar"):
        generate(untrained, [bos], 10, max_bars=2)


def test_repetition_penalty_avoids_tokens_in_the_window(bach, untrained):
    bos = tokenizer.special_ids(bach.tok)["bos"]
    plain = generate(untrained, [bos], 40, temperature=0.0)[0][1:]
    penalised = generate(untrained, [bos], 40, temperature=0.0, repetition_penalty=1e6)[0][1:]
    assert len(set(plain.tolist())) < len(plain)  # greedy decoding of an untrained model repeats itself
    assert len(set(penalised.tolist())) == len(penalised)
    with pytest.raises(ValueError, match="repetition_penalty"):
        generate(untrained, [bos], 5, repetition_penalty=0.0)
