"""The character LSTM (hand-written backward pass) against Flax's nn.RNN of nn.OptimizedLSTMCell
with the same weights: outputs and every gradient, alone and vmapped over lanes."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedprox_jax.tasks import models

GATES = ('i', 'f', 'g', 'o')


class FlaxLSTM(nn.Module):
  """The same model built from Flax's own recurrent layers."""
  hidden: int
  layers: int

  @nn.compact
  def __call__(self, x):
    h = nn.Embed(80, 8)(x)
    for _ in range(self.layers):
      h = nn.RNN(nn.OptimizedLSTMCell(self.hidden))(h)
    return nn.Dense(80)(h[:, -1])


def _as_flax(params, layers, hidden):
  """Our fused [in, 4H] / [H, 4H] / [4H] gate weights, split into Flax's per-gate kernels."""
  out = {'Embed_0': params['Embed_0'], 'Dense_0': params['Dense_0']}
  for layer in range(layers):
    w_in, w_h, b = (params[f'lstm_{layer}_{k}'] for k in ('w_in', 'w_h', 'b'))
    cell = {}
    for n, gate in enumerate(GATES):
      part = slice(n * hidden, (n + 1) * hidden)
      cell[f'i{gate}'] = {'kernel': w_in[:, part]}
      cell[f'h{gate}'] = {'kernel': w_h[:, part], 'bias': b[part]}
    out[f'OptimizedLSTMCell_{layer}'] = cell
  return out


def _from_flax(grads, layers):
  """Flax's per-gate gradients fused back into ours."""
  out = {'Embed_0': grads['Embed_0'], 'Dense_0': grads['Dense_0']}
  for layer in range(layers):
    cell = grads[f'OptimizedLSTMCell_{layer}']
    out[f'lstm_{layer}_w_in'] = jnp.concatenate([cell[f'i{g}']['kernel'] for g in GATES], 1)
    out[f'lstm_{layer}_w_h'] = jnp.concatenate([cell[f'h{g}']['kernel'] for g in GATES], 1)
    out[f'lstm_{layer}_b'] = jnp.concatenate([cell[f'h{g}']['bias'] for g in GATES])
  return out


def _loss(apply_fn, params, x, y):
  logits = apply_fn(params, x)
  return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(y)), y])


@pytest.mark.parametrize('layers,hidden', [(1, 8), pytest.param(2, 16, marks=pytest.mark.slow)])
def test_outputs_and_gradients_equal_flaxs_lstm(layers, hidden):
  key = jax.random.PRNGKey(3)
  x = jax.random.randint(key, (5, 30), 0, 80)
  y = jax.random.randint(jax.random.fold_in(key, 1), (5,), 0, 80)
  apply_fn, params = models.create_model('lstm', 80, 30, key, hidden=hidden, layers=layers)
  # Biases away from zero so that their gradients' paths are all exercised.
  params = jax.tree_util.tree_map_with_path(
      lambda path, p: p + 0.1 if 'lstm' in str(path) and str(path).endswith("_b']") else p, params)
  flax_model = FlaxLSTM(hidden, layers)
  flax_apply = lambda p, x: flax_model.apply({'params': p}, x)
  flax_params = _as_flax(params, layers, hidden)
  np.testing.assert_allclose(apply_fn(params, x), flax_apply(flax_params, x), rtol=1e-5, atol=1e-6)
  ours = jax.grad(lambda p: _loss(apply_fn, p, x, y))(params)
  theirs = _from_flax(jax.grad(lambda p: _loss(flax_apply, p, x, y))(flax_params), layers)
  assert jax.tree.structure(ours) == jax.tree.structure(theirs)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), ours, theirs)
  assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(ours))

  # Vmapped over lanes, as the packed round runs it: each lane its own weights and batch.
  lanes = jax.tree.map(lambda p: jnp.stack([p, p * 0.5]), params)
  xs, ys = jnp.stack([x, x[::-1]]), jnp.stack([y, y[::-1]])
  batched = jax.vmap(jax.grad(lambda p, x, y: _loss(apply_fn, p, x, y)))(lanes, xs, ys)
  for lane in range(2):
    one = jax.tree.map(lambda p, lane=lane: p[lane], lanes)
    want = _from_flax(
        jax.grad(lambda p, lane=lane: _loss(flax_apply, p, xs[lane], ys[lane]))(_as_flax(
            one, layers, hidden)), layers)
    jax.tree.map(
        lambda a, b, lane=lane: np.testing.assert_allclose(a[lane], b, rtol=1e-4, atol=1e-6),
        batched,
        want)


def test_initialisation_follows_flaxs_cell():
  _, params = models.create_model('lstm', 80, 80, jax.random.PRNGKey(0), hidden=64, layers=2)
  w_h = params['lstm_0_w_h']
  for n in range(4):  # Each gate's recurrent kernel is orthogonal.
    block = w_h[:, n * 64:(n + 1) * 64]
    np.testing.assert_allclose(block.T @ block, np.eye(64), atol=1e-5)
  assert float(jnp.abs(params['lstm_1_b']).max()) == 0.0
  # LeCun normal: variance 1 / fan_in.
  assert abs(float(params['lstm_1_w_in'].var()) * 64 - 1) < 0.1
