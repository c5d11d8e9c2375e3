"""Sanity checks of the sequential FedDyn reference (tests/reference_feddyn.py): its first round
against the closed form (with g = 0 a client's local training is FedProx's with mu + alpha), the
server state h as the population's weighted mean of the clients' g, and one step with g != 0 worked
by hand in float64 NumPy."""
import jax
import numpy as np

from fedprox_jax.engine import reference as ref
from tests import reference_feddyn as feddyn
from tests.packed_rounds import packed_rounds
from tests.reference_runs import BATCH
from tests.reference_runs import CLASSES
from tests.reference_runs import Cohort
from tests.reference_runs import apply_fn
from tests.reference_runs import assert_trees
from tests.reference_runs import init_params
from tests.reference_runs import make_cohort
from tests.reference_runs import make_data
from tests.reference_runs import round_cohort
from tests.reference_runs import settings
from tests.reference_runs import uneven_data

ALPHA = 0.3


def feddyn_rounds(cfg, data, cohorts, state=None, batch_size=BATCH):
  round_fn = feddyn.make_round(apply_fn, batch_size)
  state = state or feddyn.initial_state(init_params(), len(data[3]))
  for cohort in cohorts:
    state = round_fn(state, cohort, cfg, *data)
  return state


def local_models(cfg, data, cohort):
  """Each client's y_k [R, ...] from w with g_k = 0: engine/reference's FedProx with mu + alpha,
  alone in its cohort under server SGD of rate 1."""
  round_fn = ref.make_reference_round(apply_fn,
                                      algorithm='fedprox',
                                      server_optimizer='sgd',
                                      batch_size=BATCH)
  prox = dict(cfg, mu=cfg['mu'] + cfg['alpha'], server_learning_rate=np.ones(2))
  models = []
  for k in range(cohort.clients.shape[1]):
    alone = Cohort(*(f[:, k:k + 1] for f in cohort))
    state = round_fn(ref.initial_state(init_params(), len(data[3]), cfg['eps']), alone, prox, *data)
    models.append([a.astype(np.float64) for a in jax.tree.leaves(state.params)])
  return models


def test_first_round_of_the_whole_population_is_the_closed_form():
  data = make_data([6, 9, 4, 11, 7, 5])
  clients = [list(range(6))] * 2
  cohort = make_cohort(clients, [[2, 1, 2, 2, 1, 2], [2] * 6], data[3], seed=0)
  cohort = cohort._replace(weights=np.ones((2, 6), np.float32))
  cfg = settings(alpha=ALPHA, weighting=2)
  state = feddyn_rounds(cfg, data, [cohort])
  ys = local_models(cfg, data, cohort)
  w = [a.astype(np.float64) for a in jax.tree.leaves(init_params())]
  new, h, g = (jax.tree.leaves(tree) for tree in (state.params, state.h, state.g))
  for leaf, w_l in enumerate(w):
    mean_move = np.mean([y[leaf] - w_l for y in ys], axis=0)
    np.testing.assert_allclose(h[leaf], -ALPHA * mean_move, atol=1e-6)
    # h = -alpha mean(y - w), so w + Delta = mean(y) - h / alpha = w + 2 mean(y - w).
    np.testing.assert_allclose(new[leaf], w_l + 2.0 * mean_move, atol=1e-5)
    for k, y in enumerate(ys):
      np.testing.assert_allclose(g[leaf][:, k], -ALPHA * (y[leaf] - w_l), atol=1e-6)


def test_first_round_of_part_of_the_population_weights_by_its_total():
  data = uneven_data()
  sizes = data[3]
  cohort = round_cohort(0, sizes)  # Run 0: a straggler, a dropped and an idle client.
  eta = 0.7
  cfg = settings(alpha=ALPHA, weighting=[0, 1], server_learning_rate=eta)  # As cohort's weights.
  state = feddyn_rounds(cfg, data, [cohort])
  ys = local_models(cfg, data, cohort)
  q = cohort.weights.astype(np.float64)
  population = np.array([sizes.sum(), (-(-sizes // BATCH)).sum()], np.float64)
  w = [a.astype(np.float64) for a in jax.tree.leaves(init_params())]
  new, h = (jax.tree.leaves(tree) for tree in (state.params, state.h))
  for leaf, w_l in enumerate(w):
    per_run = lambda values: np.asarray(values).reshape(-1, *[1] * (w_l.ndim - 1))
    moved = sum(per_run(q[:, k]) * (y[leaf] - w_l) for k, y in enumerate(ys))
    mean = sum(per_run(q[:, k]) * y[leaf] for k, y in enumerate(ys)) / per_run(q.sum(1))
    np.testing.assert_allclose(h[leaf], -ALPHA * moved / per_run(population), atol=1e-6)
    np.testing.assert_allclose(new[leaf], w_l + eta * (mean - h[leaf] / ALPHA - w_l), atol=1e-5)


def test_h_is_the_population_mean_of_g_and_untrained_clients_keep_g_zero():
  data = uneven_data()
  sizes = data[3]
  cfg = settings(alpha=ALPHA, weighting=[0, 1], server_learning_rate=0.8)
  state = feddyn_rounds(cfg, data, [round_cohort(t, sizes) for t in range(3)])
  for r, q in enumerate([sizes, -(-sizes // BATCH)]):
    q = q.astype(np.float64)
    for h, g in zip(jax.tree.leaves(state.h), jax.tree.leaves(state.g)):
      np.testing.assert_allclose(h[r], np.tensordot(q / q.sum(), g[r], 1), atol=1e-12)
      assert np.abs(h[r]).max() > 0
  # Run 0 trained clients 0..5 (two a round); run 1 all but 5..8. The others keep g = 0.
  for r, trained in enumerate([np.arange(12) < 6, (np.arange(12) < 5) | (np.arange(12) > 8)]):
    has_g = [np.any([np.any(g[r, j]) for g in jax.tree.leaves(state.g)]) for j in range(12)]
    np.testing.assert_array_equal(has_g, trained)


def test_one_step_with_client_and_server_state_by_hand():
  x, y, offsets, sizes = data = make_data([1, 5], seed=3)
  lr, wd, mu, eta = 0.3, 0.01, 0.5, 0.5
  # Run 0 weights by examples (population 6), run 1 uniformly (population 2): q = 1 in both.
  cfg = settings(learning_rate=lr,
                 weight_decay=wd,
                 mu=mu,
                 server_learning_rate=eta,
                 alpha=ALPHA,
                 weighting=[0, 2])
  cohort = make_cohort([[0], [0]], [[1], [1]], sizes, seed=0, by_batches=(False, False))
  rng = np.random.default_rng(7)
  state = feddyn.initial_state(init_params(), 2)
  state = state._replace(h=jax.tree.map(lambda a: rng.normal(size=a.shape), state.h),
                         g=jax.tree.map(lambda a: rng.normal(size=a.shape), state.g))
  new = feddyn_rounds(cfg, data, [cohort], state=state, batch_size=4)
  for r, population in enumerate([6.0, 2.0]):
    w = {k: v[r].astype(np.float64) for k, v in init_params()['Dense_0'].items()}
    g = {k: v[r, 0] for k, v in state.g['Dense_0'].items()}
    h = {k: v[r] for k, v in state.h['Dense_0'].items()}
    logits = x[0] @ w['kernel'] + w['bias']
    s = np.exp(logits - logits.max())
    s = s / s.sum() - np.eye(CLASSES)[y[0]]
    grads = {'kernel': np.outer(x[0], s), 'bias': s}  # y = w: both squared terms add 0.
    for k in w:
      y_k = w[k] - lr * (grads[k] - g[k] + wd * w[k])
      h_new = h[k] - ALPHA * (y_k - w[k]) / population
      np.testing.assert_allclose(new.g['Dense_0'][k][r, 0], g[k] - ALPHA * (y_k - w[k]), atol=1e-5)
      np.testing.assert_allclose(new.h['Dense_0'][k][r], h_new, atol=1e-6)
      np.testing.assert_allclose(new.params['Dense_0'][k][r],
                                 w[k] + eta * (y_k - h_new / ALPHA - w[k]),
                                 atol=1e-5)
      np.testing.assert_array_equal(new.g['Dense_0'][k][r, 1], state.g['Dense_0'][k][r, 1])


def test_empty_cohort_keeps_the_whole_state():
  data = uneven_data()
  cfg = settings(alpha=ALPHA, weighting=[0, 1])
  before = feddyn_rounds(cfg, data, [round_cohort(t, data[3]) for t in range(2)])
  cohort = round_cohort(2, data[3])
  cohort = cohort._replace(weights=cohort.weights * np.array([[0.0], [1.0]], np.float32))
  after = feddyn_rounds(cfg, data, [cohort], state=before)
  for field_before, field_after in zip(before, after):
    assert_trees(lambda a, b: np.testing.assert_array_equal(a[0], b[0]), field_before, field_after)
  assert not np.array_equal(before.h['Dense_0']['kernel'][1], after.h['Dense_0']['kernel'][1])


# The package's FedDyn (fedprox_jax/algorithms/feddyn.py) against the reference.


def test_three_packed_rounds_equal_the_reference():
  """Two runs differing in alpha and the server's rate, weighted by examples and by batches;
  stragglers, a dropped client, an idle one and partial batches: the models, the server's h and
  every client's g."""
  data = uneven_data()
  cfg = settings(alpha=[0.05, 0.2], server_learning_rate=[1.0, 0.7])
  server, g = packed_rounds('feddyn', apply_fn, init_params(), cfg, data)
  reference = feddyn_rounds(cfg, data, [round_cohort(t, data[3]) for t in range(3)])
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  jax.tree.map(close, server.params, reference.params)
  jax.tree.map(close, jax.tree.leaves(server.algorithm['h']), jax.tree.leaves(reference.h))
  jax.tree.map(close, jax.tree.leaves(g), jax.tree.leaves(reference.g))
  assert np.abs(np.asarray(server.algorithm['h']['Dense_0']['kernel'])).max() > 0
