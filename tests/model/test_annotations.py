"""The model's jaxtyping annotations are true: the model layer, imported under jaxtyping's import hook with beartype,
checks every annotated argument, return value and field at run (and trace) time, across training, prefill and
decoding, with the CPU fast paths on and off; and the checks have teeth (a batched input to ``Block`` is refused)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("beartype")  # requirements.txt lists it among the test dependencies

SCRIPT = r'''
import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import TypeCheckError, install_import_hook

from tchaikovsky.config import ModelConfig

with install_import_hook("tchaikovsky.model", "beartype.beartype"):  # every function and module in the package
    from tchaikovsky.model import GPT, skeleton
    from tchaikovsky.model.layers import cached_attention

cfg = ModelConfig(vocab_size=32, context=16, d_model=16, n_layers=3, n_heads=2)
tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, cfg.vocab_size)
for fast in (True, False):
    model = GPT(dataclasses.replace(cfg, cpu_fast_paths=fast), key=jax.random.key(0))
    assert model(tokens[0]).shape == (12, 32)  # eager: one sequence
    assert jax.jit(jax.vmap(model))(tokens).shape == (2, 12, 32)  # as the loss calls it
    grads = jax.grad(lambda m: jax.vmap(m)(tokens).sum())(model)  # the backward pass traces the same code
skeleton(cfg)

for batch in ((), (2, 1)):  # the decoding API takes any leading batch axes (none, or several); each sequence alone
    toks = jnp.broadcast_to(tokens[0], (*batch, 12))
    logits, cache = model.prefill(toks[..., :8], model.init_cache(batch=batch))
    assert logits.shape == (*batch, 8, 32)
    dec = model.decoder()
    step, cache = dec.decode(toks[..., 8:9], cache, jnp.int32(8))
    step, cache = eqx.filter_jit(lambda d, *a: d.decode(*a))(dec, toks[..., 9:11], cache, jnp.int32(9))
    assert step.shape == (*batch, 2, 32) and cache.k[0].shape == (*batch, 2, 16, 8)
    logits, cache = model.decode(toks[..., :4], cache, 0)

block = model.decoder().layers[0]
x = jnp.zeros((12, 16))
assert block(x).shape == (12, 16)
for wrong in (lambda: block(x[None]),  # Block takes ONE sequence: vmap it
              lambda: block.decode(x, (jnp.zeros((2, 16, 8)), jnp.zeros((2, 16, 4))), 0),  # mismatched cache
              lambda: cached_attention(*[jnp.zeros((3, 2, 8))] * 3, jnp.zeros((2, 16, 8)), jnp.zeros((4, 16, 8)), 0)):
    try:
        wrong()
    except TypeCheckError:
        continue
    raise AssertionError("a shape the annotations forbid was accepted")
print("annotations hold")
'''


@pytest.mark.slow  # a minute of eager, type-checked dispatch: once, in the main suite (not the floor or platforms)
def test_model_annotations_hold_under_a_runtime_type_checker(tmp_path):
    script = tmp_path / "typecheck.py"
    script.write_text(SCRIPT)
    root = str(Path(__file__).resolve().parents[2])  # the repository root
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "",
           "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    run = subprocess.run([sys.executable, str(script)], env=env, cwd=root, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0 and "annotations hold" in run.stdout, run.stdout[-3000:] + run.stderr[-6000:]
