import collections

import jax
import jax.numpy as jnp
import numpy as np

from fedprox_jax.core import shuffle


def _orders(n, num_keys, epoch=0):
  keys = jax.random.split(jax.random.PRNGKey(0), num_keys)
  f = jax.jit(
      jax.vmap(lambda k: shuffle.permute(shuffle.epoch_key(k, epoch), jnp.int32(n), jnp.arange(n))))
  return np.asarray(f(keys))


def test_every_order_is_a_permutation():
  for n in (1, 2, 3, 9, 10, 17, 64, 1395):
    for order in _orders(n, 5):
      assert sorted(order) == list(range(n))


def test_all_orders_of_five_are_about_equally_likely():
  counts = collections.Counter(map(tuple, _orders(5, 60000)))
  assert len(counts) == 120
  freq = np.array(list(counts.values()))
  # Multinomial(60000, 1/120): std of a count is about 22; allow for sampling noise.
  assert freq.std() < 30 and abs(freq.mean() - 500) < 1e-9


def test_position_marginals_are_uniform():
  n, k = 40, 20000
  orders = _orders(n, k)
  table = np.stack([np.bincount(orders[:, i], minlength=n) for i in range(n)])
  assert table.std() < 1.3 * np.sqrt(k / n)
  assert abs(np.mean(orders[:, 1:] == orders[:, :-1] + 1) - 1 / n) < 0.003


def test_epochs_and_keys_give_different_orders():
  a, b = _orders(50, 2, epoch=0), _orders(50, 2, epoch=1)
  assert not np.array_equal(a[0], b[0]) and not np.array_equal(a[0], a[1])
