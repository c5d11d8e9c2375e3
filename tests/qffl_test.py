"""Sanity checks of the sequential q-FFL reference (tests/reference_qffl.py): FedAvg at q = 0, and
q-FedAvg's server step (F_k, dw_k, Delta_k, h_k) worked by hand in float64 NumPy."""
import jax
import numpy as np

from fedprox_jax import experiment
from fedprox_jax.engine import reference as ref
from tests import reference_qffl as qffl
from tests.packed_rounds import packed_rounds
from tests.reference_runs import BATCH
from tests.reference_runs import CLASSES
from tests.reference_runs import apply_fn
from tests.reference_runs import assert_trees
from tests.reference_runs import init_params
from tests.reference_runs import make_cohort
from tests.reference_runs import make_data
from tests.reference_runs import round_cohort
from tests.reference_runs import settings
from tests.reference_runs import uneven_data
from tests.runs import small_config


def qffl_rounds(cfg, data, cohorts, batch_size=BATCH):
  round_fn = qffl.make_round(apply_fn, batch_size)
  state = qffl.initial_state(init_params(), len(data[3]))
  for cohort in cohorts:
    state = round_fn(state, cohort, cfg, *data)
  return state


def uniform_cohorts(data, rounds=3):
  """round_cohort's clients (a straggler, a dropped and an idle one in run 0), weights 1 or 0."""
  cohorts = [round_cohort(t, data[3]) for t in range(rounds)]
  return [c._replace(weights=(c.weights > 0).astype(np.float32)) for c in cohorts]


def fedavg_rounds(cfg, data, cohorts):
  round_fn = ref.make_reference_round(apply_fn,
                                      algorithm='fedavg',
                                      server_optimizer='sgd',
                                      batch_size=BATCH)
  state = ref.initial_state(init_params(), len(data[3]), cfg['eps'])
  for cohort in cohorts:
    state = round_fn(state, cohort, cfg, *data)
  return state


def test_q_zero_is_fedavg():
  data = uneven_data()
  cohorts = uniform_cohorts(data)
  cfg = settings(q=0.0, qffl_lipschitz=[0.0, 2.5], server_learning_rate=0.7)
  assert_trees(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               qffl_rounds(cfg, data, cohorts).params,
               fedavg_rounds(cfg, data, cohorts).params)


def test_positive_q_is_not_fedavg():
  data = uneven_data()
  cohorts = uniform_cohorts(data)
  cfg = settings(q=[0.5, 2.0], qffl_lipschitz=0.0)
  fair = qffl_rounds(cfg, data, cohorts).params['Dense_0']['kernel']
  avg = fedavg_rounds(cfg, data, cohorts).params['Dense_0']['kernel']
  for r in range(2):
    assert np.abs(fair[r] - avg[r]).max() > 1e-3


def one_step_by_hand(w, x, y, lr, wd):
  """(F at w over all the examples, y after one full-batch step from w) in float64."""
  kernel, bias = (w[k].astype(np.float64) for k in ('kernel', 'bias'))
  logits = x @ kernel + bias
  logits = logits - logits.max(axis=1, keepdims=True)
  probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  loss = -np.mean(np.log(probs[np.arange(len(y)), y]))
  residual = (probs - np.eye(CLASSES)[y]) / len(y)  # d mean CE / d logits.
  return loss, {
      'kernel': kernel - lr * (x.T @ residual + wd * kernel),
      'bias': bias - lr * (residual.sum(0) + wd * bias)
  }


def server_by_hand(w, clients, q, lip, eta):
  """w + eta * Delta_t from (weight, F_k, y_k) triples, each of Algorithm 2's terms written out."""
  numerator = {k: np.zeros_like(v, np.float64) for k, v in w.items()}
  denominator = 0.0
  for weight, loss, y_k in clients:
    dw = {k: lip * (w[k] - y_k[k]) for k in w}
    norm2 = sum(np.sum(d**2) for d in dw.values())
    for k in w:
      numerator[k] += weight * loss**q * dw[k]
    denominator += weight * ((q * loss**(q - 1) * norm2 if q else 0.0) + lip * loss**q)
  return {k: w[k] - eta * numerator[k] / denominator for k in w}


def run_params(params, r):
  return {k: v[r].astype(np.float64) for k, v in params['Dense_0'].items()}


def test_one_client_one_step_by_hand():
  x, y, offsets, sizes = data = make_data([5, 7], seed=3)
  lr, wd, eta = 0.3, 0.01, 0.5
  q, lip = np.array([0.5, 2.0]), np.array([0.0, 3.0])  # Run 0: L = 1 / lr; run 1: L = 3.
  cfg = settings(learning_rate=lr,
                 weight_decay=wd,
                 mu=0.4,
                 server_learning_rate=eta,
                 q=q,
                 qffl_lipschitz=lip)
  # 5 examples in one padded batch of 8: one step whose mean must skip the 3 padded rows.
  cohort = make_cohort([[0], [0]], [[1], [1]], sizes, seed=0)
  new = qffl_rounds(cfg, data, [cohort]).params
  for r, L in enumerate([1.0 / lr, 3.0]):
    w = run_params(init_params(), r)
    loss, y_k = one_step_by_hand(w, x[:5], y[:5], lr, wd)
    expected = server_by_hand(w, [(1.0, loss, y_k)], q[r], L, eta)
    np.testing.assert_allclose(new['Dense_0']['kernel'][r], expected['kernel'], atol=1e-5)
    np.testing.assert_allclose(new['Dense_0']['bias'][r], expected['bias'], atol=1e-5)


def test_weighted_idle_and_dropped_clients_by_hand():
  x, y, offsets, sizes = data = make_data([5, 7, 6, 4], seed=4)
  lr, wd, q = 0.2, 0.0, 1.5
  cfg = settings(learning_rate=lr, weight_decay=wd, q=q, qffl_lipschitz=0.0)
  cohort = make_cohort([[0, 1, 2, 3]] * 2, [[1, 1, 1, 0]] * 2, sizes, seed=1)
  # Client 2 is dropped; idle client 3 adds nothing to the numerator but L F^q to the denominator.
  weights = np.array([[3.0, 1.0, 0.0, 2.0]] * 2, np.float32)
  new = qffl_rounds(cfg, data, [cohort._replace(weights=weights)]).params
  for r in range(2):
    w = run_params(init_params(), r)
    clients = []
    for k in (0, 1, 3):
      rows = slice(offsets[k], offsets[k] + sizes[k])
      loss, y_k = one_step_by_hand(w, x[rows], y[rows], lr, wd)
      clients.append((weights[r, k], loss, w if k == 3 else y_k))
    expected = server_by_hand(w, clients, q, 1.0 / lr, 1.0)
    np.testing.assert_allclose(new['Dense_0']['kernel'][r], expected['kernel'], atol=1e-5)
    np.testing.assert_allclose(new['Dense_0']['bias'][r], expected['bias'], atol=1e-5)


def test_empty_cohort_keeps_the_model():
  data = uneven_data()
  cohort = round_cohort(0, data[3])
  cohort = cohort._replace(weights=cohort.weights * np.array([[0.0], [1.0]], np.float32))
  new = qffl_rounds(settings(q=1.0, qffl_lipschitz=0.0), data, [cohort]).params
  old = init_params()
  np.testing.assert_array_equal(new['Dense_0']['kernel'][0], old['Dense_0']['kernel'][0])
  np.testing.assert_array_equal(new['Dense_0']['bias'][0], old['Dense_0']['bias'][0])
  assert not np.array_equal(new['Dense_0']['kernel'][1], old['Dense_0']['kernel'][1])


# The package's q-FFL (fedprox_jax/algorithms/qffl.py) against the reference.


def test_three_packed_rounds_equal_the_reference():
  """Two runs differing in q, L and the server's rate; stragglers, a dropped client, an idle one
  and partial batches (tests/reference_runs.round_cohort)."""
  data = uneven_data()
  cfg = settings(q=[0.5, 2.0], qffl_lipschitz=[0.0, 3.0], server_learning_rate=[1.0, 0.7])
  server, _ = packed_rounds('qffl', apply_fn, init_params(), cfg, data)
  reference = qffl_rounds(cfg, data, [round_cohort(t, data[3]) for t in range(3)])
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  jax.tree.map(close, server.params, reference.params)
  assert not np.allclose(server.params['Dense_0']['kernel'], init_params()['Dense_0']['kernel'])


def test_q_zero_runs_are_fedavg_under_the_same_uniform_weights():
  """q = 0 is FedAvg (keeping stragglers, no proximal term) under the same client weights."""
  common = {'algorithm.mu': 0.0, 'algorithm.weighting': 'uniform', 'num_rounds': 4}
  # (q-FFL uploads its h_i too: its upload bytes are more.)
  run = lambda **over: [{
      k: v
      for k, v in r.items()
      if not k.startswith(('time/', 'comm/upload')) and k != 'adaptive_mu'
  }
                        for r in experiment.train_and_evaluate(small_config(**common, **over))]
  qffl_records = run(**{'algorithm.name': 'qffl', 'algorithm.q': 0.0})
  fedavg_records = run(**{'algorithm.name': 'fedavg', 'algorithm.drop_stragglers': False})
  for a, b in zip(qffl_records, fedavg_records, strict=True):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=key)
  assert qffl_records != run(**{'algorithm.name': 'qffl', 'algorithm.q': 1.0})


def test_a_client_with_zero_loss_keeps_the_step_finite():
  """Float32 cross-entropy can be exactly 0: F^(q-1) at 0 < q < 1 would make h infinite (the
  round's Delta then 0, or NaN for an idle client); F + 1e-10, as the authors' code, keeps it
  finite."""
  from fedprox_jax.algorithms import qffl as packed  # pylint: disable=g-import-not-at-top
  from fedprox_jax.algorithms.base import ClientResult  # pylint: disable=g-import-not-at-top
  for delta in (0.0, 0.1):
    result = ClientResult({'w': jax.numpy.full(3, delta)}, jax.numpy.int32(1), 0.1, 0.0, 0.0, None,
                          {'loss': jax.numpy.float32(0.0)})
    upload, _ = packed.upload(result, (), None, {'q': 0.5, 'qffl_lipschitz': 0.0})
    assert np.isfinite(upload['h']) and np.all(np.isfinite(upload['delta']['w']))
