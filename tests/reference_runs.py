"""Runs of the sequential reference (engine/reference.py) on small hand-made cohorts: shared by
the reference's tests."""
from typing import NamedTuple

import jax
import numpy as np

from fedprox_jax.engine import reference as ref

DIM, CLASSES, BATCH, RUNS = 5, 3, 8, 2


class Cohort(NamedTuple):
  clients: np.ndarray
  epochs: np.ndarray
  weights: np.ndarray
  keys: np.ndarray
  stragglers: np.ndarray


def apply_fn(params, x):
  return x @ params['Dense_0']['kernel'] + params['Dense_0']['bias']


def make_data(sizes, seed=0):
  rng = np.random.default_rng(seed)
  sizes = np.asarray(sizes, np.int32)
  offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32)
  x = rng.normal(size=(int(sizes.sum()), DIM)).astype(np.float32)
  y = rng.integers(0, CLASSES, len(x)).astype(np.int32)
  return x, y, offsets, sizes


def uneven_data():
  return make_data(np.random.default_rng(1).integers(3, 38, 12))


def init_params(runs=RUNS, seed=2):
  rng = np.random.default_rng(seed)
  return {
      'Dense_0': {
          'kernel': rng.normal(scale=0.3, size=(runs, DIM, CLASSES)).astype(np.float32),
          'bias': rng.normal(scale=0.1, size=(runs, CLASSES)).astype(np.float32)
      }
  }


def settings(**over):
  base = dict(learning_rate=0.1,
              weight_decay=1e-3,
              mu=0.1,
              server_learning_rate=1.0,
              server_momentum=0.9,
              b1=0.9,
              b2=0.99,
              eps=1e-3,
              weighting=[0, 1])
  base.update(over)
  return {k: np.broadcast_to(np.asarray(v), (RUNS,)) for k, v in base.items()}


def make_cohort(clients, epochs, sizes, seed, dropped=None, by_batches=(False, True)):
  """Weights are the run's q_i (examples or batches); `dropped` [R, K] zeroes some of them."""
  clients, epochs = np.asarray(clients), np.asarray(epochs)
  n = np.asarray(sizes)[clients]
  weights = np.where(np.asarray(by_batches)[:, None], -(-n // BATCH), n).astype(np.float32)
  if dropped is not None:
    weights = np.where(dropped, 0.0, weights).astype(np.float32)
  base = jax.random.PRNGKey(seed)
  keys = np.stack([[np.asarray(jax.random.fold_in(base, 100 * r + int(c)))
                    for c in row]
                   for r, row in enumerate(clients)])
  return Cohort(clients, epochs, weights, keys, epochs < epochs.max())


def round_cohort(t, sizes):
  """Run 0 has a straggler (1 epoch), a dropped client (weight 0) and an idle one (0 epochs)."""
  clients = (np.array([[0, 3, 5, 7], [1, 2, 9, 11]]) + t) % 12
  epochs = np.array([[2, 1, 2, 0], [2, 2, 1, 2]])
  dropped = np.array([[False, False, True, False], [False] * 4])
  return make_cohort(clients, epochs, sizes, seed=t, dropped=dropped)


def run_rounds(algorithm, opt, cfg, data, rounds=3, cohorts=None, state=None):
  round_fn = ref.make_reference_round(apply_fn,
                                      algorithm=algorithm,
                                      server_optimizer=opt,
                                      batch_size=BATCH)
  state = state or ref.initial_state(init_params(), 12, cfg['eps'])
  for t in range(rounds):
    cohort = cohorts[t] if cohorts else round_cohort(t, data[3])
    state = round_fn(state, cohort, cfg, *data)
  return state


def assert_trees(check, a, b):
  for la, lb in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    check(la, lb)


def no_drop_cohorts(sizes, rounds=3):
  """round_cohort's cohorts with every client aggregated (weight 1) and working: weights sum to K
  exactly."""
  out = []
  for t in range(rounds):
    c = round_cohort(t, sizes)
    out.append(c._replace(weights=np.ones_like(c.weights), epochs=np.maximum(c.epochs, 1)))
  return out


def each_clients_final_params(cfg, data, cohort, params):
  """Each of the cohort's clients' final parameters, from the sequential reference's FedProx run
  of it alone from `params` (K = 1: server SGD at rate 1 lands on them), a list over the slots."""
  return [
      run_rounds('fedprox',
                 'sgd',
                 cfg,
                 data,
                 1, [Cohort(*(f[:, j:j + 1]
                              for f in cohort))],
                 state=initial_reference_state(params)).params
      for j in range(cohort.clients.shape[1])
  ]


def initial_reference_state(params):
  """The sequential reference's state of 12 clients from `params` (no server moments)."""
  return ref.initial_state(params, 12, np.full(RUNS, 1e-3))
