"""Sanity checks of the sequential MOON reference (tests/reference_moon.py): FedAvg at moon_mu = 0
and in the first round (the global model stands in for the missing previous one, so the two
similarities are equal and the contrastive term's gradient vanishes), l_con and two local steps
worked by hand in float64 NumPy, and the previous local model kept and used in the next round."""
from unittest import mock

import jax
import numpy as np
import pytest

from fedprox_jax.configs import mnist_fedprox
from fedprox_jax.core.model import ApplyFn
from fedprox_jax.core.model import Outputs
from fedprox_jax.engine import client_states
from fedprox_jax.engine import reference as ref
from fedprox_jax.errors import ConfigError
from fedprox_jax.experiment import validation
from tests import reference_moon as moon
from tests.packed_rounds import packed_rounds
from tests.reference_runs import BATCH
from tests.reference_runs import CLASSES
from tests.reference_runs import DIM
from tests.reference_runs import Cohort
from tests.reference_runs import assert_trees
from tests.reference_runs import make_cohort
from tests.reference_runs import make_data
from tests.reference_runs import round_cohort
from tests.reference_runs import settings
from tests.reference_runs import uneven_data
from tests.runs import small_config

HIDDEN = 8
close = lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6)


def mlp_params(seeds=(0, 1)):
  """One MLP per run, stacked: [R, ...] leaves."""
  models = [moon.mlp_init(seed, DIM, HIDDEN, CLASSES) for seed in seeds]
  return jax.tree.map(lambda *a: np.stack(a), *models)


def moon_settings(**over):
  return settings(**{'moon_mu': 1.0, 'moon_temperature': 0.5, **over})


def moon_rounds(cfg, data, cohorts, state=None, batch_size=BATCH):
  round_fn = moon.make_round(moon.mlp_outputs, batch_size)
  state = state or moon.initial_state(mlp_params(), len(data[3]))
  for cohort in cohorts:
    state = round_fn(state, cohort, cfg, *data)
  return state


def fedavg_rounds(cfg, data, cohorts):
  round_fn = ref.make_reference_round(lambda p, x: moon.mlp_outputs(p, x)[0],
                                      algorithm='fedavg',
                                      server_optimizer='sgd',
                                      batch_size=BATCH)
  state = ref.initial_state(mlp_params(), len(data[3]), cfg['eps'])
  for cohort in cohorts:
    state = round_fn(state, cohort, cfg, *data)
  return state


def test_zero_moon_mu_is_fedavg():
  data = uneven_data()
  cohorts = [round_cohort(t, data[3]) for t in range(3)]
  cfg = moon_settings(moon_mu=0.0, server_learning_rate=0.7)
  assert_trees(close,
               moon_rounds(cfg, data, cohorts).params,
               fedavg_rounds(cfg, data, cohorts).params)


def test_first_round_is_fedavg_whatever_moon_mu():
  data = uneven_data()
  cohorts = [round_cohort(0, data[3])]
  cfg = moon_settings(moon_mu=[1.0, 5.0])
  assert_trees(close,
               moon_rounds(cfg, data, cohorts).params,
               fedavg_rounds(cfg, data, cohorts).params)


def test_previous_model_is_kept_and_used_in_the_next_round():
  data = uneven_data()
  cohort = round_cohort(0, data[3])  # Run 0: client 5 is dropped and client 7 idle.
  cfg = moon_settings(moon_mu=2.0, server_learning_rate=1.0)
  state = moon_rounds(cfg, data, [cohort])
  for k in range(4):  # Alone in its cohort, a client's y_k is the next global model.
    alone = moon_rounds(cfg, data, [Cohort(*(f[:, k:k + 1] for f in cohort))])
    for r in range(2):
      cid = cohort.clients[r, k]
      trained = cohort.weights[r, k] > 0 and cohort.epochs[r, k] > 0
      assert state.has_prev[r, cid] == trained
      for prev, y_k in zip(jax.tree.leaves(state.prev), jax.tree.leaves(alone.params)):
        close(prev[r, cid], y_k[r] if trained else 0.0)
  assert state.has_prev.sum() == 6  # Only the cohort's trained clients have one.
  # The same clients again: with their previous models the contrastive term pulls; with the
  # global model standing in (as before any training) it would not.
  again = moon_rounds(cfg, data, [cohort], state=state)
  standing_in = state._replace(has_prev=np.zeros_like(state.has_prev))
  forgot = moon_rounds(cfg, data, [cohort], state=standing_in)
  assert_trees(close, forgot.params, fedavg_rounds(cfg, data, [cohort] * 2).params)
  gap = np.abs(again.params['hidden']['kernel'] - forgot.params['hidden']['kernel'])
  assert gap[0].max() > 1e-4 and gap[1].max() > 1e-4


def cosine_by_hand(a, b):
  return a @ b / (max(np.linalg.norm(a), 1e-8) * max(np.linalg.norm(b), 1e-8))


def test_contrastive_loss_of_one_example_by_hand():
  rng = np.random.default_rng(0)
  z, z_glob, z_prev = rng.normal(size=(3, HIDDEN))
  for t in (0.5, 2.0):
    for zz, zg, zp in [(z, z_glob, z_prev), (z, z_glob, 0 * z_prev), (0 * z, z_glob, z_prev)]:
      positive, negative = np.exp(cosine_by_hand(zz, zg) / t), np.exp(cosine_by_hand(zz, zp) / t)
      expected = -np.log(positive / (positive + negative))
      np.testing.assert_allclose(moon.contrastive_loss(zz, zg, zp, t), expected, rtol=1e-5)
  # A dead representation (every unit of relu at 0) must not turn a step's gradient into NaN.
  grad = jax.grad(lambda v: moon.contrastive_loss(v, z_glob, z_prev, 0.5))(np.zeros(HIDDEN))
  assert np.all(np.isfinite(grad))


def cosine_grad(z, c):
  """d cos(z, c) / dz, both norms above the floor."""
  nz, nc = np.linalg.norm(z), np.linalg.norm(c)
  return c / (nz * nc) - (z @ c) * z / (nz**3 * nc)


def example_grad(params, anchor, prev, x, label, moon_mu, t):
  """The gradient of one example's CE + moon_mu l_con for the MLP."""
  rep = lambda p: np.maximum(x @ p['hidden']['kernel'] + p['hidden']['bias'], 0.0)
  z, z_glob, z_prev = rep(params), rep(anchor), rep(prev)
  logits = z @ params['out']['kernel'] + params['out']['bias']
  s = np.exp(logits - logits.max())
  s = s / s.sum() - np.eye(CLASSES)[label]
  positive, negative = np.exp(cosine_by_hand(z, z_glob) / t), np.exp(cosine_by_hand(z, z_prev) / t)
  p_pos, p_neg = positive / (positive + negative), negative / (positive + negative)
  dl_dz = ((p_pos - 1.0) * cosine_grad(z, z_glob) + p_neg * cosine_grad(z, z_prev)) / t
  d_hidden = (params['out']['kernel'] @ s + moon_mu * dl_dz) * (z > 0)
  hidden = {'kernel': np.outer(x, d_hidden), 'bias': d_hidden}
  return {'hidden': hidden, 'out': {'kernel': np.outer(z, s), 'bias': s}}


def grad_by_hand(params, anchor, prev, xs, labels, mu, moon_mu, t):
  """The gradient of the mean over the examples of CE + moon_mu l_con, + mu/2 ||y - w||^2."""
  grads = [example_grad(params, anchor, prev, x, label, moon_mu, t) for x, label in zip(xs, labels)]
  mean = jax.tree.map(lambda *g: sum(g) / len(g), *grads)
  return jax.tree.map(lambda g, p, a: g + mu * (p - a), mean, params, anchor)


def test_two_local_steps_against_a_previous_model_by_hand():
  x, y, offsets, sizes = data = make_data([3, 5], seed=3)
  lr, wd, mu, moon_mu, t = 0.3, 0.01, 0.5, 2.0, 0.5
  cfg = moon_settings(learning_rate=lr, weight_decay=wd, mu=mu, moon_mu=moon_mu, moon_temperature=t)
  cohort = make_cohort([[0], [0]], [[2], [2]], sizes, seed=0)
  state = moon.initial_state(mlp_params(), 2)
  rng = np.random.default_rng(5)
  prev = jax.tree.map(lambda a: (a + rng.normal(scale=0.3, size=a.shape)).astype(np.float32),
                      state.prev)
  state = state._replace(prev=prev, has_prev=np.array([[True, False]] * 2))
  # Client 0's 3 examples in one batch of 4: both means must skip the padded (repeated) row.
  new = moon_rounds(cfg, data, [cohort], state=state, batch_size=4)
  xs, labels = x[:3], y[:3]
  for r in range(2):
    anchor = jax.tree.map(lambda a: a[r].astype(np.float64), mlp_params())
    prev_0 = jax.tree.map(lambda a: a[r, 0].astype(np.float64), prev)
    first = grad_by_hand(anchor, anchor, prev_0, xs, labels, mu, moon_mu, t)
    without = grad_by_hand(anchor, anchor, prev_0, xs, labels, mu, 0.0, t)
    assert np.abs(first['hidden']['bias'] - without['hidden']['bias']).max() > 1e-3  # It pulls.
    params = anchor
    for _ in range(2):  # Two epochs of one batch.
      grads = grad_by_hand(params, anchor, prev_0, xs, labels, mu, moon_mu, t)
      params = jax.tree.map(lambda p, g: p - lr * (g + wd * p), params, grads)
    atol = lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5)
    assert_trees(atol, jax.tree.map(lambda a: a[r], new.params), params)  # One client, eta = 1.
    assert_trees(atol, jax.tree.map(lambda a: a[r, 0], new.prev), params)
    assert_trees(np.testing.assert_array_equal, jax.tree.map(lambda a: a[r, 1], new.prev),
                 jax.tree.map(lambda a: a[r, 1], prev))


def test_empty_cohort_keeps_the_whole_state():
  data = uneven_data()
  cfg = moon_settings()
  before = moon_rounds(cfg, data, [round_cohort(t, data[3]) for t in range(2)])
  cohort = round_cohort(2, data[3])
  cohort = cohort._replace(weights=cohort.weights * np.array([[0.0], [1.0]], np.float32))
  after = moon_rounds(cfg, data, [cohort], state=before)
  for field_before, field_after in zip(before, after):
    assert_trees(lambda a, b: np.testing.assert_array_equal(a[0], b[0]), field_before, field_after)
  assert not np.array_equal(before.has_prev[1], after.has_prev[1])


# The package's MOON (fedprox_jax/algorithms/moon.py) against the reference, on the same MLP
# declared to the package as a model with a representation (its hidden layer).

MLP = ApplyFn(lambda p, x: Outputs(*moon.mlp_outputs(p, x)), has_representation=True)


def test_three_packed_rounds_equal_the_reference():
  """Two runs differing in moon_mu, T and the server's rate; stragglers, a dropped client, an idle
  one and partial batches: the models and every client's previous model."""
  data = uneven_data()
  cfg = moon_settings(moon_mu=[1.0, 3.0],
                      moon_temperature=[0.5, 0.2],
                      server_learning_rate=[1.0, 0.7])
  cohorts = [round_cohort(t, data[3]) for t in range(3)]
  server, store = packed_rounds('moon', MLP, mlp_params(), cfg, data, cohorts=cohorts)
  reference = moon_rounds(cfg, data, cohorts)
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  jax.tree.map(close, server.params, reference.params)
  jax.tree.map(close, store['params'], reference.prev)
  np.testing.assert_array_equal(store['seen'] > 0, reference.has_prev)
  assert reference.has_prev.any() and not reference.has_prev.all()


def test_moon_mu_zero_is_fedavg_with_the_same_model():
  data = uneven_data()
  cfg = moon_settings(moon_mu=0.0, server_learning_rate=[1.0, 0.7])
  moon_server, _ = packed_rounds('moon', MLP, mlp_params(), cfg, data)
  fedavg_server, _ = packed_rounds('fedavg', MLP, mlp_params(), cfg, data)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               moon_server.params, fedavg_server.params)
  other, _ = packed_rounds('moon', MLP, mlp_params(), moon_settings(), data)
  assert not np.allclose(other.params['out']['kernel'], moon_server.params['out']['kernel'])


def test_a_model_without_a_representation_is_refused_before_any_compute():
  c = small_config(**{'algorithm.name': 'moon'})  # The logistic regression.
  with pytest.raises(ConfigError) as refused:
    validation.validate(c)
  assert str(refused.value) == (
      "config.model.name = 'logistic_regression' declares no representation, which moon "
      'contrasts: use a model that has one (cnn, lstm)')


def test_previous_models_that_cannot_fit_are_refused_before_any_compute():
  """The CNN's previous local models of MNIST's 1000 clients: 6.2 GiB."""
  c = mnist_fedprox.get_config()
  c.model.name, c.algorithm.name = 'cnn', 'moon'
  needed = 1000 * 4 * (832 + 51264 + 1606144 + 5130) + 1000 * 4  # Models and 'seen' flags.
  with mock.patch.object(client_states, 'host_budget', return_value=needed - 1):
    with pytest.raises(ConfigError, match='moon keeps a state for every client: 6.2 GiB'):
      validation.validate(c)
  with mock.patch.object(client_states, 'host_budget', return_value=needed):
    validation.validate(c)
