"""Synthetic(alpha, beta) data, the dissimilarity metric and adaptive mu."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedprox_jax import experiment
from fedprox_jax.algorithms import fedprox
from fedprox_jax.configs import synthetic as synthetic_config
from fedprox_jax.core import client
from fedprox_jax.engine import evaluation
from fedprox_jax.tasks import models
from fedprox_jax.tasks import synthetic
from tests.conftest import tiny_data


def _generate(variant, seed=0, num_clients=30, dim=60, **bounds):
  alpha, beta, iid = synthetic_config.DATASETS[variant]
  settings = dict(log_mean=4.0, log_sigma=2.0, min_examples=50, max_examples=0) | bounds
  return synthetic.generate(
      alpha=alpha,
      beta=beta,
      iid=iid,
      sizes_of=lambda rng: synthetic.device_sizes(rng, num_clients, **settings),
      dim=dim,
      num_classes=10,
      seed=seed)


def _devices(variant, seed=0):
  """[(x, y)] of each of 30 devices."""
  sizes, x, y = _generate(variant, seed)
  ends = np.cumsum(sizes)[:-1]
  return list(zip(np.split(x, ends), np.split(y, ends)))


def _loop_over_devices(alpha, beta, iid, num_clients, dim, num_classes, seed):
  """The paper's generator as its code writes it: one device at a time, on one stream."""
  rng = np.random.default_rng(seed)
  sizes = rng.lognormal(4, 2, num_clients).astype(int) + 50
  u = rng.normal(0, alpha, num_clients)
  big_b = rng.normal(0, beta, num_clients)
  sigma = np.arange(1, dim + 1, dtype=np.float64)**-1.2
  shared_w = rng.normal(0, 1, (dim, num_classes))
  shared_b = rng.normal(0, 1, num_classes)
  xs, ys = [], []
  for k in range(num_clients):
    if iid:
      w, b, v = shared_w, shared_b, np.zeros(dim)
    else:
      w = rng.normal(u[k], 1, (dim, num_classes))
      b = rng.normal(u[k], 1, num_classes)
      v = rng.normal(big_b[k], 1, dim)
    x = v + rng.normal(size=(sizes[k], dim)) * np.sqrt(sigma)
    xs.append(x.astype(np.float32))
    ys.append(np.argmax(x @ w + b, axis=1).astype(np.int32))
  return sizes, np.concatenate(xs), np.concatenate(ys)


@pytest.mark.parametrize('variant', ['iid', '1_1'])
@pytest.mark.parametrize('chunk', [7, 4096])
def test_generator_equals_the_loop_over_devices(variant, chunk, monkeypatch):
  """Blocks of `chunk` devices (one block, or 5 of 7 and one of 2) give the loop's numbers."""
  monkeypatch.setattr(synthetic, 'CHUNK', chunk)
  alpha, beta, iid = synthetic_config.DATASETS[variant]
  expected = _loop_over_devices(alpha, beta, iid, 37, 12, 10, seed=3)
  got = _generate(variant, seed=3, num_clients=37, dim=12)
  for e, g in zip(expected, got, strict=True):
    np.testing.assert_array_equal(e, g)


def test_generator_shapes_sizes_and_determinism():
  devices = _devices('1_1')
  assert len(devices) == 30
  for x, y in devices:
    assert x.shape == (len(y), 60) and x.dtype == np.float32 and len(y) >= 50
    assert y.min() >= 0 and y.max() < 10
  again, other = _devices('1_1'), _devices('1_1', seed=1)
  assert all(np.array_equal(a[0], b[0]) for a, b in zip(devices, again))
  assert not all(len(a[1]) == len(b[1]) for a, b in zip(devices, other))
  sizes = np.array([len(y) for _, y in devices])
  assert sizes.std() > 0.5 * sizes.mean()  # lognormal(4, 2) + 50: very uneven.


def test_bounded_sizes():
  bounded = dict(log_mean=2.0, log_sigma=1.0, min_examples=10)
  sizes = synthetic.device_sizes(np.random.default_rng(0), 1000, max_examples=50, **bounded)
  unbounded = synthetic.device_sizes(np.random.default_rng(0), 1000, max_examples=0, **bounded)
  assert sizes.min() >= 10 and sizes.max() == 50
  assert np.array_equal(sizes, np.minimum(unbounded, 50)) and unbounded.max() > 50


def test_labels_are_each_devices_own_argmax_as_a_loop_computes_it():
  rng = np.random.default_rng(5)
  sizes = np.array([3, 1, 4, 2])
  device = np.repeat(np.arange(4), sizes)
  x, w, b = rng.normal(size=(10, 6)), rng.normal(size=(4, 6, 5)), rng.normal(size=(4, 5))
  expected = []
  for k in range(4):  # Each device's rows times its own model, one device at a time.
    rows = x[device == k]
    expected += [int(np.argmax(rows[i] @ w[k] + b[k])) for i in range(len(rows))]
  assert synthetic.labels_of(x, device, w, b).tolist() == expected


def test_heterogeneity_grows_from_iid_to_one_one():

  def spread(devices):
    means = np.stack([x.mean(0) for x, _ in devices])  # Each device's mean input.
    labels = np.stack([np.bincount(y, minlength=10) / len(y) for _, y in devices])
    return means.std(0).mean(), labels.std(0).mean()

  iid_x, iid_y = spread(_devices('iid'))
  hard_x, hard_y = spread(_devices('1_1'))
  assert iid_x < 0.15 < 0.5 < hard_x  # v = 0 for every device vs v_k ~ N(B_k, 1).
  assert iid_y < hard_y


def test_dissimilarity_equals_a_loop_over_clients():
  data = tiny_data()
  apply_fn, _ = models.create_model('logistic_regression', data.num_classes, 16,
                                    jax.random.PRNGKey(0))
  params = [
      models.create_model('logistic_regression', data.num_classes, 16, jax.random.PRNGKey(s))[1]
      for s in (1, 2)
  ]
  stacked = jax.tree.map(lambda *p: jnp.stack(p), *params)
  clients = np.repeat(np.arange(data.num_clients), data.train_sizes).astype(np.int32)
  measure = jax.jit(evaluation.make_dissimilarity(apply_fn, data.num_clients, chunk_size=64))
  got = measure(stacked, data.train_x, data.train_y, clients)
  for r, p in enumerate(params):
    flat = lambda tree: np.concatenate([np.ravel(a) for a in jax.tree.leaves(tree)])
    grads, sizes = [], []
    for c in range(data.num_clients):
      rows = clients == c
      g = jax.grad(lambda q: client.masked_mean(
          client.cross_entropies(apply_fn(q, data.train_x[rows]), data.train_y[rows]),
          np.ones(rows.sum())))(p)
      grads.append(flat(g))
      sizes.append(rows.sum())
    grads, sizes = np.array(grads), np.array(sizes)
    mean = (grads * sizes[:, None]).sum(0) / sizes.sum()
    want = np.mean(np.sum((grads - mean)**2, 1))
    np.testing.assert_allclose(got[r], want, rtol=1e-4)


def test_adaptive_mu_rule_on_a_hand_made_loss_sequence():
  losses = [5.0, 4.0, 4.5, 4.4, 4.3, 4.2, 4.1, 4.0, 3.9, 3.9, 4.0]
  # rises at 4.5 and at the last 4.0; falls five times in a row from 4.4 to 4.0.
  state = fedprox.initial_mu({'mu': np.array([1.0, 0.0, 1.0])})
  enabled = np.array([True, True, False])
  mus = []
  for loss in losses:
    state = fedprox.update_mu(state, np.full(3, loss), enabled)
    mus.append([round(float(v), 6) for v in state.mu])
  assert [m[0] for m in mus] == [1.0, 1.0, 1.1, 1.1, 1.1, 1.1, 1.1, 1.0, 1.0, 1.0, 1.1]
  assert [m[1] for m in mus] == [0.0, 0.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.0, 0.0, 0.0, 0.1]
  assert all(m[2] == 1.0 for m in mus)  # Not adaptive: mu never moves.
  floor = fedprox.initial_mu({'mu': np.array([0.0])})
  for loss in (6.0, 5.0, 4.0, 3.0, 2.0, 1.0):
    floor = fedprox.update_mu(floor, np.array([loss]), np.array([True]))
  assert floor.mu[0] == 0.0  # Never below 0.


@pytest.mark.slow
def test_adaptive_mu_moves_is_logged_and_resumes(tmp_path):
  config = synthetic_config.get_config('iid')
  config.num_rounds = 12
  config.algorithm.adaptive_mu = True
  config.checkpoint_every = 4
  whole = experiment.train_and_evaluate(config, str(tmp_path / 'whole'))
  mus = [r['mu'] for r in whole]
  assert mus[0] == 1.0 and len(set(np.round(mus, 6))) > 1  # It moved.
  assert all('train/dissimilarity' in r for r in whole)
  short = config.copy_and_resolve_references()
  short.num_rounds = 7  # Saved at rounds 4 and 7; then extended to 12 from round 7's state.
  experiment.train_and_evaluate(short, str(tmp_path / 'split'))
  resumed = experiment.train_and_evaluate(config, str(tmp_path / 'split'))
  strip = lambda records: [{
      k: v for k, v in r.items() if not k.startswith('time/')
  } for r in records]
  assert strip(resumed) == strip(whole)
