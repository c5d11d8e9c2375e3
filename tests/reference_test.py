"""Sanity checks of the sequential reference against properties that follow from its equations."""
import jax
import numpy as np

from fedprox_jax.engine import reference as ref
from tests.reference_runs import BATCH
from tests.reference_runs import CLASSES
from tests.reference_runs import Cohort
from tests.reference_runs import apply_fn
from tests.reference_runs import assert_trees
from tests.reference_runs import init_params
from tests.reference_runs import make_cohort
from tests.reference_runs import make_data
from tests.reference_runs import round_cohort
from tests.reference_runs import run_rounds
from tests.reference_runs import settings
from tests.reference_runs import uneven_data


def test_swap_or_not_is_a_permutation():
  for n in range(1, 40):
    order = ref.swap_or_not(np.asarray(ref.epoch_key(jax.random.PRNGKey(n), 3)), n)
    np.testing.assert_array_equal(np.sort(order), np.arange(n))


def test_fednova_with_equal_work_is_fedavg():
  data = make_data([10] * 12)
  cohorts = [
      make_cohort((np.array([[0, 3, 5, 7], [1, 2, 9, 11]]) + t) % 12, [[2] * 4] * 2,
                  data[3],
                  seed=t,
                  dropped=np.array([[False, True, False, False]] * 2)) for t in range(2)
  ]
  cfg = settings(server_learning_rate=0.7)
  nova = run_rounds('fednova', 'momentum', cfg, data, 2, cohorts)
  avg = run_rounds('fedavg', 'momentum', cfg, data, 2, cohorts)
  assert_trees(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), nova.params, avg.params)


def test_scaffold_first_round_is_fedavg():
  data, cfg = uneven_data(), settings()
  assert_trees(np.testing.assert_array_equal,
               run_rounds('scaffold', 'adam', cfg, data, 1).params,
               run_rounds('fedavg', 'adam', cfg, data, 1).params)


def test_sgd_with_unit_rate_is_the_weighted_mean_of_clients():
  data, cfg = uneven_data(), settings()
  cohort = round_cohort(0, data[3])
  new = run_rounds('fedprox', 'sgd', cfg, data, 1, [cohort]).params
  # Each client alone (K = 1, same key) with eta = 1 lands exactly on its own final params.
  finals = [
      run_rounds('fedprox', 'sgd', cfg, data, 1, [Cohort(*(f[:, k:k + 1]
                                                           for f in cohort))]).params
      for k in range(4)
  ]
  w = np.asarray(cohort.weights, np.float64)
  p = w / w.sum(1, keepdims=True)
  mean = jax.tree.map(
      lambda *a: sum(p[:, k].reshape(-1, *[1] * (a[k].ndim - 1)) * a[k].astype(np.float64)
                     for k in range(4)), *finals)
  assert_trees(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), new, mean)
  train = ref.make_reference_train_cohort(apply_fn,
                                          learning_rate=0.1,
                                          weight_decay=1e-3,
                                          batch_size=BATCH)
  old = train(init_params(), cohort, cfg['mu'], *data)
  assert_trees(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), old, mean)


def test_empty_cohort_leaves_the_run_alone():
  data, cfg = uneven_data(), settings()
  before = run_rounds('scaffold', 'adam', cfg, data, 2)
  cohort = round_cohort(2, data[3])
  cohort = cohort._replace(weights=cohort.weights * np.array([[0.0], [1.0]], np.float32))
  after = run_rounds('scaffold', 'adam', cfg, data, 1, [cohort], state=before)
  for field_before, field_after in zip(before, after):
    assert_trees(lambda a, b: np.testing.assert_array_equal(a[0], b[0]), field_before, field_after)
  assert not np.array_equal(before.params['Dense_0']['kernel'][1],
                            after.params['Dense_0']['kernel'][1])


def test_scaffold_server_variate_is_the_weighted_mean_of_client_variates():
  data, cfg = uneven_data(), settings(server_learning_rate=0.5)
  state = run_rounds('scaffold', 'yogi', cfg, data, 3)
  sizes = data[3]
  for r, by_batches in enumerate([False, True]):
    q = (-(-sizes // BATCH) if by_batches else sizes).astype(np.float64)
    for c, cc in zip(state.c, state.client_c):
      np.testing.assert_allclose(c[r], np.tensordot(q / q.sum(), cc[r], 1), atol=1e-12)
      assert np.abs(c[r]).max() > 0
  # Run 0 trained clients 0..5 (two per round); the dropped and idle ones (6..9) keep c_i = 0.
  trained = np.array(
      [np.any(np.concatenate([cc[0, j].ravel() for cc in state.client_c])) for j in range(12)])
  np.testing.assert_array_equal(trained, np.arange(12) < 6)


def test_one_local_step_by_hand():
  x, y, offsets, sizes = data = make_data([1, 5], seed=3)
  lr, wd, mu = 0.3, 0.01, 0.5
  cfg = settings(learning_rate=lr, weight_decay=wd, mu=mu)
  cohort = make_cohort([[0], [0]], [[2], [2]], sizes, seed=0, by_batches=(False, False))
  params = init_params()
  kernel, bias = (params['Dense_0'][k][0].astype(np.float64) for k in ('kernel', 'bias'))
  wk, wb = kernel.copy(), bias.copy()
  for _ in range(2):  # Two epochs of one (padded) batch holding the client's one example.
    logits = x[0] @ kernel + bias
    s = np.exp(logits - logits.max())
    s = s / s.sum() - np.eye(CLASSES)[y[0]]
    kernel = kernel - lr * (np.outer(x[0], s) + mu * (kernel - wk) + wd * kernel)
    bias = bias - lr * (s + mu * (bias - wb) + wd * bias)
  round_fn = ref.make_reference_round(apply_fn,
                                      algorithm='scaffold',
                                      server_optimizer='sgd',
                                      batch_size=4)
  state = round_fn(ref.initial_state(params, 2, cfg['eps']), cohort, cfg, *data)
  np.testing.assert_allclose(state.params['Dense_0']['kernel'][0], kernel, atol=1e-5)
  np.testing.assert_allclose(state.params['Dense_0']['bias'][0], bias, atol=1e-5)
  flat = jax.tree.leaves(state.params)
  for c, cc, w, new in zip(state.c, state.client_c, jax.tree.leaves(params), flat):
    c_i = (w[0].astype(np.float64) - new[0]) / (2 * lr)  # c_i = (w - y_i) / (tau * lr), c = 0.
    np.testing.assert_allclose(cc[0, 0], c_i, atol=1e-4)
    np.testing.assert_allclose(c[0], c_i / 6.0, atol=1e-4)  # Q = 1 + 5 examples.
