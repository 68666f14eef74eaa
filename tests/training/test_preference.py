"""The DPOP loss against values computed by hand, its limits (plain DPO, the positive penalty), and a real run of
``training.loop.train`` on preference pairs (8 simulated CPU devices, a tiny model)."""

import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tchaikovsky.config import ModelConfig, TrainConfig
from tchaikovsky.model import build
from tchaikovsky.training import checkpoint, loop
from tchaikovsky.training.preference import DPOPLoss, PairShards, dpop_terms, reference_logprobs, sequence_logprobs

CFG = ModelConfig(vocab_size=12, context=16, d_model=16, n_layers=1, n_heads=2)
PAD = 0


@pytest.fixture(scope="module")
def model():
    return build(CFG, jax.random.key(0))


def numpy_logprob(model, tokens, mask) -> float:
    """Summed log-probability of the masked targets of ONE sequence, from the model's logits, in numpy (float64)."""
    logits = np.asarray(model(jnp.asarray(tokens[:-1])), np.float64)
    logits -= logits.max(axis=-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    return float(sum(logp[t, tokens[t + 1]] for t in range(len(tokens) - 1) if mask[t]))


def make_batch(pairs: PairShards, seq_len: int, ref_w, ref_l) -> dict:
    w = pairs.windows(range(len(pairs)), seq_len)
    return {**{k: jnp.asarray(v) for k, v in w.items()}, "ref_chosen": jnp.asarray(ref_w, jnp.float32),
            "ref_rejected": jnp.asarray(ref_l, jnp.float32)}


PAIRS = PairShards([[1, 5, 6, 7, 8, 2], [1, 9, 9, 2]], [[1, 5, 3, 3, 2], [1, 9, 4, 4, 4, 4, 4, 2]], [2, 1])


def test_windows_mask_only_the_generated_tokens():
    w = PAIRS.windows([0, 1], 7)
    np.testing.assert_array_equal(w["chosen"][0], [1, 5, 6, 7, 8, 2, 0, 0])
    # targets are tokens[1:]; prompt_len 2 leaves out target 5 (position 1); PAD is never a target
    np.testing.assert_array_equal(w["chosen_mask"][0], [0, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(w["rejected_mask"][1], [1, 1, 1, 1, 1, 1, 1])  # cut to 8 tokens: 7 targets
    np.testing.assert_array_equal(w["rejected"][1], [1, 9, 4, 4, 4, 4, 4, 2])


def test_loss_equals_the_formula_computed_by_hand(model):
    seq_len, beta, lam = 9, 0.1, 10.0
    w = PAIRS.windows(range(2), seq_len)
    pi_w = [numpy_logprob(model, w["chosen"][i], w["chosen_mask"][i]) for i in range(2)]
    pi_l = [numpy_logprob(model, w["rejected"][i], w["rejected_mask"][i]) for i in range(2)]
    np.testing.assert_allclose(sequence_logprobs(model, jnp.asarray(w["chosen"]), jnp.asarray(w["chosen_mask"]),
                                                 jnp.float32), pi_w, rtol=1e-5)
    ref_w = [pi_w[0] + 0.7, pi_w[1] - 0.3]  # pair 0: the policy fell below the reference on the chosen piece
    ref_l = [pi_l[0] - 0.2, pi_l[1] + 0.4]
    by_hand = []
    for i in range(2):
        z = beta * ((pi_w[i] - ref_w[i]) - (pi_l[i] - ref_l[i]) - lam * max(0.0, ref_w[i] - pi_w[i]))
        by_hand.append(math.log1p(math.exp(-z)))  # -log sigmoid(z)
    loss, metrics = DPOPLoss(beta, lam)(model, make_batch(PAIRS, seq_len, ref_w, ref_l), jnp.float32, PAD)
    assert float(loss) == pytest.approx(np.mean(by_hand), rel=1e-5)
    margins = [(pi_w[i] - ref_w[i]) - (pi_l[i] - ref_l[i]) for i in range(2)]
    assert float(metrics["reward_margin"]) == pytest.approx(beta * np.mean(margins), rel=1e-4, abs=1e-6)
    assert float(metrics["accuracy"]) == np.mean([m > 0 for m in margins])
    assert float(metrics["chosen_logp_delta"]) == pytest.approx(np.mean([-0.7, 0.3]), abs=1e-4)
    assert float(metrics["chosen_len"]) == pytest.approx((4 + 3) / 2)  # targets after the prompt: 6 7 8 EOS; 9 9 EOS
    assert float(metrics["rejected_len"]) == pytest.approx((3 + 7) / 2)  # 3 3 EOS; seven


def test_lambda_zero_is_plain_dpo_and_the_penalty_only_acts_below_the_reference():
    pi_w, pi_l = jnp.array([-10.0, -12.0]), jnp.array([-11.0, -9.0])
    ref_w, ref_l = jnp.array([-9.0, -13.0]), jnp.array([-11.5, -9.5])
    dpo, margin = dpop_terms(pi_w, pi_l, ref_w, ref_l, 0.1, 0.0)
    np.testing.assert_allclose(dpo, -jax.nn.log_sigmoid(0.1 * ((pi_w - ref_w) - (pi_l - ref_l))), rtol=1e-6)
    np.testing.assert_allclose(margin, [-1.5, 0.5])  # (-1) - 0.5; 1 - 0.5
    dpop, _ = dpop_terms(pi_w, pi_l, ref_w, ref_l, 0.1, 10.0)
    assert dpop[0] > dpo[0]  # pi_w < ref_w: penalised
    assert dpop[1] == pytest.approx(float(dpo[1]))  # pi_w > ref_w: no penalty


def test_reference_logprobs_are_the_sequence_logprobs_of_every_pair_in_any_batch_size(model):
    rng = np.random.default_rng(3)
    n, seq_len = 7, 9
    # pairs of different lengths (some longer than the window of 10 tokens) and prompts; chosen != rejected
    chosen = [[1] + list(rng.integers(3, 12, int(rng.integers(3, 14)))) + [2] for _ in range(n)]
    rejected = [[1] + list(rng.integers(3, 12, int(rng.integers(3, 14)))) + [2] for _ in range(n)]
    pairs = PairShards(chosen, rejected, rng.integers(1, 4, n), pad_id=PAD)
    w = pairs.windows(range(n), seq_len)
    logprobs = eqx.filter_jit(sequence_logprobs)  # all n rows at once, in a shape of its own
    direct = [np.asarray(logprobs(model, w[side], w[f"{side}_mask"], jnp.float32)) for side in ("chosen", "rejected")]
    assert len(set(np.round(direct[0], 4))) == n and not np.allclose(direct[0], direct[1])  # order matters
    for batch_size in (3, 16):  # 3 + 3 + 1 (the last padded by repeating a pair); one batch mostly padding
        ref_w, ref_l = reference_logprobs(model, pairs, seq_len, batch_size=batch_size)
        assert ref_w.shape == ref_l.shape == (n,) and ref_w.dtype == ref_l.dtype == np.float32
        np.testing.assert_allclose(ref_w, direct[0], rtol=1e-5, atol=1e-5, err_msg=f"batch_size {batch_size}")
        np.testing.assert_allclose(ref_l, direct[1], rtol=1e-5, atol=1e-5, err_msg=f"batch_size {batch_size}")
    # one pair by hand (float64 numpy): the window's masked targets
    assert ref_l[4] == pytest.approx(numpy_logprob(model, w["rejected"][4], w["rejected_mask"][4]), rel=1e-5)
    # with_reference serves exactly these for its window, and refuses another
    held = pairs.with_reference(model, seq_len, batch_size=3)
    b = held.batch(0, 5, seq_len, seed=2)
    idx = np.random.default_rng([2, 0]).integers(0, n, size=5)
    np.testing.assert_allclose(b["ref_chosen"], direct[0][idx], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b["ref_rejected"], direct[1][idx], rtol=1e-5, atol=1e-5)


def test_gradient_pushes_the_chosen_likelihood_up_when_it_fell_below_the_reference(model):
    # d loss / d pi_w is more negative with the penalty when ref_w > pi_w
    g = lambda lam: jax.grad(lambda pw: dpop_terms(pw, -5.0, -3.0, -5.0, 0.1, lam)[0])(-4.0)  # noqa: E731
    assert g(10.0) < g(0.0) < 0
    # one gradient step on the model raises pi_w
    seq_len = 9
    w = PAIRS.windows([0], seq_len)
    pi_w = float(sequence_logprobs(model, jnp.asarray(w["chosen"]), jnp.asarray(w["chosen_mask"]), jnp.float32)[0])
    pi_l = float(sequence_logprobs(model, jnp.asarray(w["rejected"]), jnp.asarray(w["rejected_mask"]),
                                   jnp.float32)[0])
    batch = make_batch(PairShards([PAIRS.chosen[0]], [PAIRS.rejected[0]], [2]), seq_len, [pi_w + 2.0], [pi_l])
    @eqx.filter_jit
    def step_and_score(m):
        grads = eqx.filter_grad(lambda m: DPOPLoss(0.1, 10.0)(m, batch, jnp.float32, PAD)[0])(m)
        stepped = eqx.apply_updates(m, jax.tree.map(lambda g: -0.05 * g, grads))
        return sequence_logprobs(stepped, batch["chosen"], batch["chosen_mask"], jnp.float32)[0]

    after = float(step_and_score(model))
    assert after > pi_w


def test_pairs_train_through_the_training_loop(model, tmp_path):
    rng = np.random.default_rng(0)
    # chosen continuations climb (3, 4, 5, ...), rejected ones repeat one token: a preference the model can learn
    chosen = [[1, 2] + [3 + (s + k) % 8 for k in range(10)] for s in rng.integers(0, 8, 16)]
    rejected = [[1, 2] + [int(t)] * 10 for t in rng.integers(3, 11, 16)]
    ref_model = checkpoint.export_model(tmp_path / "ref" / "model.eqx", model,
                                        {"model_config": CFG.to_dict(), "tokenizer_hash": "h"})
    pairs = PairShards(chosen, rejected, 2, pad_id=PAD, tokenizer_hash="h").with_reference(model, 12)
    with pytest.raises(ValueError, match="with_reference"):
        pairs.batch(0, 8, 15)
    b = pairs.batch(3, 8, 12, seed=1)
    assert set(b) == {"chosen", "chosen_mask", "rejected", "rejected_mask", "ref_chosen", "ref_rejected"}
    assert b["chosen"].shape == (8, 13) and b["ref_chosen"].shape == (8,)
    again = pairs.batch(3, 8, 12, seed=1, process_index=1, process_count=2)  # a pure function of (seed, step)
    np.testing.assert_array_equal(again["chosen"], b["chosen"][4:])

    tc = TrainConfig(batch_size=8, seq_len=12, learning_rate=3e-3, warmup_steps=2, max_steps=20, eval_every=20,
                     log_every=5, checkpoint_every=20, weight_decay=0.0)
    result = loop.train(tmp_path / "run", CFG, tc, pairs, init_from=ref_model, loss_fn=DPOPLoss(0.1, 10.0))
    rows = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    first, last = rows[0], rows[-1]
    assert last["reward_margin"] > first["reward_margin"] and last["reward_margin"] > 0
    assert last["accuracy"] == 1.0 and last["chosen_len"] == 10.0
    assert last["chosen_logp_delta"] > -1.0  # the positive penalty keeps the chosen likelihood from falling
    assert math.isfinite(last["eval_loss"])  # the chosen sequences' NLL under the policy
    assert result.stopped == "max_steps"
