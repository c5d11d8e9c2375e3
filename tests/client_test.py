import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedprox_jax.algorithms.base import Batch
from fedprox_jax.algorithms.base import LocalContext
from fedprox_jax.core import client
from fedprox_jax.core import model as model_lib
from fedprox_jax.tasks import models


def test_proximal_gradient_is_loss_gradient_plus_mu_times_distance():
  rng = np.random.default_rng(0)
  apply_fn, params = models.create_model('logistic_regression', 3, 5, jax.random.PRNGKey(0))
  anchor = jax.tree.map(lambda p: p + rng.normal(size=p.shape).astype(np.float32), params)
  x = rng.normal(size=(4, 5)).astype(np.float32)
  y = np.array([0, 2, 1, 2])
  mask = np.array([1, 1, 1, 0], np.float32)  # The last row is padding.
  mu = 0.7
  context = LocalContext(anchor, (), None, {'mu': mu})
  grads = jax.grad(lambda p: client.default_loss(apply_fn.outputs, p, Batch(x, y, mask), context))(
      params)
  # By hand: softmax regression gradient over the 3 real rows, plus mu (w - w_global).
  w, b = np.asarray(params['Dense_0']['kernel']), np.asarray(params['Dense_0']['bias'])
  logits = x[:3] @ w + b
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  delta = (p - np.eye(3)[y[:3]]) / 3
  want_w = x[:3].T @ delta + mu * (w - np.asarray(anchor['Dense_0']['kernel']))
  want_b = delta.sum(0) + mu * (b - np.asarray(anchor['Dense_0']['bias']))
  np.testing.assert_allclose(grads['Dense_0']['kernel'], want_w, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grads['Dense_0']['bias'], want_b, rtol=1e-5, atol=1e-6)


def test_proximal_term_value():
  a = {'w': jnp.array([1.0, 2.0]), 'b': jnp.array([3.0])}
  b = {'w': jnp.array([0.0, 0.0]), 'b': jnp.array([1.0])}
  assert float(client.proximal_term(a, b)) == 0.5 * (1 + 4 + 4)


def test_sgd_step_matches_torch_style_weight_decay():
  """w <- w - lr (grad + decay * w), the update of torch.optim.SGD(weight_decay=decay)."""
  apply_fn, params = models.create_model('logistic_regression', 3, 5, jax.random.PRNGKey(1))
  x = np.ones((2, 5), np.float32)
  y = np.array([0, 1])
  mask = np.ones(2, np.float32)
  hp = {'learning_rate': 0.1, 'weight_decay': 0.01, 'mu': 0.0}
  tx = client.local_optimizer(0.1, 0.01)
  new, _, _ = client.local_step(client.default_loss, model_lib.outputs_of(apply_fn), params,
                                tx.init(params), Batch(x, y, mask),
                                LocalContext(params, (), None, hp))
  g = jax.grad(lambda p: client.masked_mean(client.cross_entropies(apply_fn(p, x), y), mask))(
      params)
  want = jax.tree.map(lambda p, g: p - 0.1 * (g + 0.01 * p), params, g)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), new, want)


def test_cnn_shapes():
  apply_fn, params = models.create_model('cnn', 10, 784, jax.random.PRNGKey(0))
  assert apply_fn(params, jnp.zeros((3, 784))).shape == (3, 10)
  sizes = [p.size for p in jax.tree.leaves(params)]
  # 5x5x1x32+32, 5x5x32x64+64, 3136x512+512, 512x10+10.
  assert sum(sizes) == 832 + 51264 + 1606144 + 5130
  assert optax.softmax_cross_entropy_with_integer_labels(apply_fn(params, jnp.zeros((1, 784))),
                                                         jnp.array([0])).shape == (1,)
