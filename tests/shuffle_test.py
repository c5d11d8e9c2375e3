"""The swap-or-not shuffle: every epoch order a permutation, uniform, fresh per epoch and client."""
import collections
import math

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


def _chi_square_bound(cells: int) -> float:
  """Five standard deviations above the chi-square law's mean (fixed keys: the draw is fixed, and
  a fair shuffle sits far inside it; one that favours some orders lands far outside)."""
  return cells - 1 + 5 * math.sqrt(2 * (cells - 1))


def test_all_orders_of_five_are_about_equally_likely():
  draws = 60000
  counts = collections.Counter(map(tuple, _orders(5, draws)))
  assert len(counts) == 120
  expected = draws / 120
  chi2 = sum((c - expected)**2 / expected for c in counts.values())
  assert chi2 < _chi_square_bound(120), chi2


def test_position_marginals_are_uniform():
  n, k = 40, 20000
  orders = _orders(n, k)
  table = np.stack([np.bincount(orders[:, i], minlength=n) for i in range(n)])
  assert table.std() < 1.3 * np.sqrt(k / n)
  assert abs(np.mean(orders[:, 1:] == orders[:, :-1] + 1) - 1 / n) < 0.003


def test_epochs_and_keys_give_different_orders():
  """A client's epochs are fresh permutations, each uniform: every epoch's order is a permutation,
  no two of 200 epochs (or of 200 clients' keys) repeat an order of 50, and where an element lands
  over the epochs of one key is uniform (a shuffle that ignored the epoch would fail all three)."""
  n, count = 50, 200
  one_key = jax.random.PRNGKey(7)
  by_epoch = np.asarray(
      jax.jit(
          jax.vmap(lambda e: shuffle.permute(shuffle.epoch_key(one_key, e), jnp.int32(n),
                                             jnp.arange(n))))(jnp.arange(count)))
  by_key = _orders(n, count)
  for orders in (by_epoch, by_key):
    np.testing.assert_array_equal(np.sort(orders, 1), np.broadcast_to(np.arange(n), orders.shape))
    assert len({tuple(order) for order in orders}) == count
  first = np.bincount(by_epoch[:, 0], minlength=n)  # Where position 0 goes, epoch after epoch.
  expected = count / n
  chi2 = np.sum((first - expected)**2 / expected)
  assert chi2 < _chi_square_bound(n), chi2
