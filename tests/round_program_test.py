"""The packed, vectorized round of every algorithm and server optimizer against the plain,
independently written reference (engine/reference.py): a Python loop over runs, clients, epochs
and batches."""
import itertools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedprox_jax import algorithms
from fedprox_jax.algorithms import server_optimizers
from fedprox_jax.core import cohort as cohort_lib
from fedprox_jax.core import packing
from fedprox_jax.engine import reference
from fedprox_jax.engine import round_program
from fedprox_jax.engine import server as server_lib
from fedprox_jax.tasks import models
from tests.conftest import tiny_data

BATCH = 10
ROUNDS = 3


def _population_weight(data) -> np.ndarray:
  """sum_j q_j of the two runs of _hp: by examples (run 0), by batches (run 1)."""
  sizes = data.train_sizes.astype(np.int64)
  return np.array([sizes.sum(), (-(-sizes // BATCH)).sum()], np.float32)


def _hp(optimizer: str) -> dict:
  """Two runs that differ in every hyperparameter; run 1 weights clients by batches."""
  adaptive = optimizer in ('adam', 'yogi', 'adagrad')
  return {
      k:
          np.asarray(
              v,
              bool if isinstance(v[0], bool) else np.int32 if isinstance(v[0], int) else np.float32)
      for k, v in dict(learning_rate=[0.1, 0.05],
                       weight_decay=[0.001, 0.0],
                       mu=[0.5, 0.0],
                       straggler_fraction=[0.5, 0.5],
                       fixed_straggler_count=[False, True],
                       drop_stragglers=[False, False],
                       weighting=[0, 1],
                       server_learning_rate=[0.05, 0.1] if adaptive else [1.0, 0.7],
                       server_momentum=[0.9, 0.5],
                       server_b1=[0.9, 0.8],
                       server_b2=[0.99, 0.9],
                       server_eps=[1e-3, 1e-2]).items()
  }


def _cohort(data, round_index: int, hp) -> cohort_lib.Cohort:
  """Hand-made cohorts: stragglers with partial work, a dropped straggler (no work, no weight), a
  client aggregated with no work, partial last batches; other clients every round."""
  clients = np.array([[[0, 3, 5, 7], [1, 2, 9, 11]], [[4, 3, 8, 10], [0, 6, 7, 11]],
                      [[2, 1, 5, 9], [10, 8, 3, 4]]][round_index - 1], np.int32)
  epochs = np.array([[[3, 1, 0, 2], [3, 0, 2, 1]], [[2, 3, 1, 3], [1, 3, 3, 2]],
                     [[3, 3, 2, 1], [2, 1, 3, 3]]][round_index - 1], np.int32)
  sizes = data.train_sizes[clients]
  weights = np.where(hp['weighting'][:, None] == 1, -(-sizes // BATCH), sizes)
  weights = weights.astype(np.float32)
  if round_index == 1:
    weights[1, 1] = 0.0  # Dropped: no epochs, no weight. (Client 5 of run 0: epochs 0, weight.)
  keys = jax.random.split(jax.random.PRNGKey(round_index), 8).reshape(2, 4, 2)
  return cohort_lib.Cohort(jnp.asarray(clients), jnp.asarray(epochs), jnp.asarray(weights), keys,
                           jnp.asarray(epochs < 3))


def _reference_settings(hp):
  rename = {'server_b1': 'b1', 'server_b2': 'b2', 'server_eps': 'eps'}
  return {rename.get(k, k): v for k, v in hp.items()}


# FedAvg is FedProx's program (its config sets mu = 0 and drops stragglers): one is enough here.
# The algorithms engine/reference.py does not know are held against references of their own in
# their test files (test_every_algorithm_is_held_against_a_reference).
COMBINATIONS = list(
    itertools.product([a for a in reference.ALGORITHMS if a != 'fedavg'],
                      server_optimizers.OPTIMIZERS))


def test_every_algorithm_is_held_against_a_reference():
  """An algorithm the plain reference of engine/reference.py does not know has its own, and a test
  of its packed rounds against it in tests/NAME_test.py."""
  here = pathlib.Path(__file__).parent
  for name in algorithms.ALGORITHMS:
    if name in reference.ALGORITHMS:
      continue
    test_file = here / f'{name}_test.py'
    assert test_file.is_file(), f'{name}: no tests/{name}_test.py'
    assert 'def test_three_packed_rounds_equal_the_reference' in test_file.read_text(), name


def _drop_stragglers_by_hand(cohort: cohort_lib.Cohort) -> cohort_lib.Cohort:
  """FedAvg's cohort: its stragglers do no work and are not aggregated."""
  return cohort._replace(weights=jnp.where(cohort.stragglers, 0.0, cohort.weights),
                         epochs=jnp.where(cohort.stragglers, 0, cohort.epochs))


def test_fedavg_rounds_equal_the_plain_loop_over_the_clients_that_finished():
  """FedAvg shares FedProx's program (one compile serves both); what makes it FedAvg is mu = 0 and
  a cohort without its stragglers. Its packed rounds against the plain loop over cohorts whose
  stragglers were dropped here, for the two server optimizers that FedAvg runs with."""
  assert algorithms.get('fedavg').structure() == algorithms.get('fedprox').structure()
  assert algorithms.get('fednova').structure() != algorithms.get('fedprox').structure()
  for optimizer in ('sgd', 'momentum'):
    test_three_packed_rounds_equal_the_reference('fedavg',
                                                 optimizer,
                                                 hp_changes={'mu': [0.0, 0.0]},
                                                 cohort_changes=_drop_stragglers_by_hand)


@pytest.mark.parametrize('algorithm, optimizer', COMBINATIONS)
def test_three_packed_rounds_equal_the_reference(algorithm,
                                                 optimizer,
                                                 num_lanes=3,
                                                 hp_changes=None,
                                                 cohort_changes=lambda cohort: cohort):
  data = tiny_data()
  apply_fn, _ = models.create_model('logistic_regression', data.num_classes, 16,
                                    jax.random.PRNGKey(0))
  params = jax.tree.map(
      lambda *p: jnp.stack(p), *[
          models.create_model('logistic_regression', data.num_classes, 16, jax.random.PRNGKey(r))[1]
          for r in range(2)
      ])
  hp = _hp(optimizer)
  hp.update({k: np.asarray(v, np.float32) for k, v in (hp_changes or {}).items()})
  alg = algorithms.get(algorithm)
  train = jax.jit(
      round_program.make_train_cohort(alg,
                                      optimizer,
                                      apply_fn,
                                      batch_size=BATCH,
                                      num_lanes=num_lanes,
                                      max_epochs=3))
  device_data = packing.ClientData(
      *map(jnp.asarray, (data.train_x, data.train_y, data.train_offsets, data.train_sizes)))
  server = server_lib.init(alg, optimizer, params, hp)
  store = None
  if alg.init_client_state:
    store = jax.tree.map(lambda a: np.zeros((2, data.num_clients, *a.shape[1:]), a.dtype), params)
  ref_round = reference.make_reference_round(apply_fn,
                                             algorithm=algorithm,
                                             server_optimizer=optimizer,
                                             batch_size=BATCH)
  ref = reference.initial_state(params, data.num_clients, hp['server_eps'])
  for r in range(1, ROUNDS + 1):
    cohort = cohort_changes(_cohort(data, r, hp))
    clients = np.asarray(cohort.clients)
    gathered = None if store is None else jax.tree.map(
        lambda a: np.stack([a[i, clients[i]] for i in range(2)]), store)
    server, new_states, stats = train(server, hp, cohort, gathered, device_data,
                                      _population_weight(data))
    if store is not None:
      for i in range(2):
        jax.tree.map(lambda a, b: a[i].__setitem__(clients[i], np.asarray(b)[i]), store, new_states)
    ref = ref_round(ref, cohort, _reference_settings(hp), data.train_x, data.train_y,
                    data.train_offsets, data.train_sizes)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    jax.tree.map(close, server.params, ref.params)
    if algorithm == 'scaffold':
      jax.tree.map(close, jax.tree.leaves(server.algorithm['c']), ref.c)
      jax.tree.map(close, jax.tree.leaves(store), ref.client_c)
    assert np.asarray(stats['finite']).all()
  # And the rounds really moved the models.
  assert not np.allclose(server.params['Dense_0']['kernel'], params['Dense_0']['kernel'])


@pytest.mark.parametrize('algorithm, optimizer, num_lanes', [('fedprox', 'sgd', 1),
                                                             ('fedprox', 'sgd', 8),
                                                             ('scaffold', 'adam', 1),
                                                             ('fednova', 'momentum', 8)])
def test_any_number_of_lanes_gives_the_reference(algorithm, optimizer, num_lanes):
  test_three_packed_rounds_equal_the_reference(algorithm, optimizer, num_lanes)


@pytest.mark.parametrize('algorithm', ['fedprox', 'scaffold'])
def test_nobody_aggregated_keeps_the_whole_server_state(algorithm):
  data = tiny_data()
  apply_fn, params = models.create_model('logistic_regression', data.num_classes, 16,
                                         jax.random.PRNGKey(0))
  params = jax.tree.map(lambda p: jnp.stack([p, p + 1]), params)
  hp = _hp('adam')
  alg = algorithms.get(algorithm)
  server = server_lib.init(alg, 'adam', params, hp)
  cohort = _cohort(data, 2, hp)
  cohort = cohort._replace(weights=cohort.weights.at[0].set(0.0), epochs=cohort.epochs.at[0].set(0))
  states = (None if alg.init_client_state is None else jax.tree.map(
      lambda a: jnp.ones((2, 4, *a.shape[1:])), params))
  train = jax.jit(
      round_program.make_train_cohort(alg,
                                      'adam',
                                      apply_fn,
                                      batch_size=BATCH,
                                      num_lanes=2,
                                      max_epochs=3))
  device_data = packing.ClientData(
      *map(jnp.asarray, (data.train_x, data.train_y, data.train_offsets, data.train_sizes)))
  new, new_states, _ = train(server, hp, cohort, states, device_data, _population_weight(data))
  run0 = lambda tree: jax.tree.map(lambda a: np.asarray(a)[0], tree)
  jax.tree.map(np.testing.assert_array_equal, run0(new), run0(server))  # Run 0: nothing moves.
  assert not np.allclose(new.params['Dense_0']['kernel'][1], params['Dense_0']['kernel'][1])
  if states is not None:
    jax.tree.map(np.testing.assert_array_equal, run0(new_states), run0(states))


def test_packing_balances_lanes_and_places_every_job_once():
  steps = jnp.array([50, 3, 0, 17, 17, 8, 1, 30, 0, 12])
  lane_jobs, lane_start, load = packing.pack_lanes(steps, 3)
  lane_jobs, lane_start, load = map(np.asarray, (lane_jobs, lane_start, load))
  placed = lane_jobs[lane_jobs < len(steps)]
  assert sorted(placed) == list(range(len(steps)))
  for lane in range(3):
    jobs = lane_jobs[lane][lane_jobs[lane] < len(steps)]
    starts = lane_start[lane][:len(jobs)]
    assert list(starts) == list(np.concatenate([[0], np.cumsum(np.asarray(steps)[jobs])[:-1]]))
    assert load[lane] == np.asarray(steps)[jobs].sum()
  assert load.max() == 50  # The longest job alone bounds the round: 138 steps over 3 lanes.


def test_sampled_cohort_follows_the_straggler_model():
  sizes = jnp.full(100, 25, jnp.int32)

  @jax.jit  # One program for the 200 draws below, rather than 200 op-by-op dispatches.
  def draw(seed, fraction, fixed, drop, weighting):
    return cohort_lib.sample_cohort(jax.random.PRNGKey(seed),
                                    sizes=sizes,
                                    clients_per_round=10,
                                    local_epochs=10,
                                    batch_size=BATCH,
                                    fraction=jnp.float32(fraction),
                                    fixed_count=jnp.bool_(fixed),
                                    drop_stragglers=jnp.bool_(drop),
                                    weighting=jnp.int32(weighting))

  sample = lambda seed, fraction, fixed, drop, weighting=0: draw(seed, fraction, fixed, drop,
                                                                 weighting)

  c = sample(0, 0.5, True, False)
  assert len(set(np.asarray(c.clients))) == 10
  assert int(c.stragglers.sum()) == 5
  epochs = np.asarray(c.epochs)
  assert (epochs[np.asarray(c.stragglers)] < 10).all() and (epochs >= 1).all()
  assert (epochs[~np.asarray(c.stragglers)] == 10).all()
  assert (np.asarray(c.weights) == 25).all() and (np.asarray(
      sample(0, 0.5, True, False, 1).weights) == 3).all()
  assert (np.asarray(sample(0, 0.5, True, False, 2).weights) == 1).all()  # Uniform.
  dropped = sample(0, 0.5, True, True)
  assert (np.asarray(dropped.weights)[np.asarray(dropped.stragglers)] == 0).all()
  assert (np.asarray(dropped.epochs)[np.asarray(dropped.stragglers)] == 0).all()
  counts = [int(sample(s, 0.3, False, False).stragglers.sum()) for s in range(200)]
  assert abs(np.mean(counts) - 3.0) < 0.3  # Bernoulli(0.3) over 10 clients.
  assert len(set(counts)) > 3
  assert int(sample(1, 0.0, False, False).stragglers.sum()) == 0
  assert int(sample(1, 1.0, False, False).stragglers.sum()) == 10
