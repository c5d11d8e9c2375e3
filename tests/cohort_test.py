"""The packed, vectorized round against the plain Python loop over clients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedprox_jax import client
from fedprox_jax import cohort as cohort_lib
from fedprox_jax import models
from fedprox_jax import reference
from tests.conftest import tiny_data

BATCH = 10


def _setup(num_runs=2, seed=0):
  data = tiny_data()
  apply_fn, _ = models.create_model('logistic_regression', data.num_classes, 16,
                                    jax.random.PRNGKey(0))
  params = [models.create_model('logistic_regression', data.num_classes, 16,
                                jax.random.PRNGKey(seed + r))[1] for r in range(num_runs)]
  params = jax.tree.map(lambda *p: jnp.stack(p), *params)
  tx = client.make_optimizer(0.1, 0.001)
  device_data = cohort_lib.ClientData(jnp.asarray(data.train_x), jnp.asarray(data.train_y),
                                      jnp.asarray(data.train_offsets),
                                      jnp.asarray(data.train_sizes))
  return data, apply_fn, tx, params, device_data


def _hand_made_cohort(data):
  """Two runs: stragglers with partial work, a zero-work client that is still aggregated, a
  dropped straggler (no work, no weight) and clients with partial last batches."""
  clients = np.array([[0, 3, 5, 7], [1, 2, 9, 11]], np.int32)
  epochs = np.array([[3, 1, 0, 2], [3, 0, 2, 1]], np.int32)
  weights = data.train_sizes[clients].astype(np.float32)
  weights[1, 1] = 0.0  # Dropped by FedAvg.
  keys = jax.random.split(jax.random.PRNGKey(42), 8).reshape(2, 4, 2)
  return cohort_lib.Cohort(jnp.asarray(clients), jnp.asarray(epochs), jnp.asarray(weights),
                           keys, jnp.asarray(epochs < 3))


@pytest.mark.parametrize('num_lanes', [1, 2, 3, 8])
def test_packed_round_equals_python_loop_over_clients(num_lanes):
  data, apply_fn, tx, params, device_data = _setup()
  cohort = _hand_made_cohort(data)
  assert (data.train_sizes[np.asarray(cohort.clients)] % BATCH != 0).any()
  mu = jnp.array([0.5, 0.0])
  train = jax.jit(cohort_lib.make_train_cohort(apply_fn, tx, batch_size=BATCH,
                                               num_lanes=num_lanes, max_epochs=3))
  got, stats = train(params, cohort, mu, device_data)
  ref = reference.make_reference_train_cohort(apply_fn, tx, batch_size=BATCH)
  want = ref(params, cohort, mu, data.train_x, data.train_y, data.train_offsets,
             data.train_sizes)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), got, want)
  # And the round really moved the models.
  assert not np.allclose(got['Dense_0']['kernel'], params['Dense_0']['kernel'])
  steps = np.asarray(cohort.epochs) * -(-data.train_sizes[np.asarray(cohort.clients)] // BATCH)
  assert int(stats['real_steps']) == steps.sum()
  assert int(stats['executed_steps']) >= steps.sum()


def test_nobody_aggregated_keeps_the_model():
  data, apply_fn, tx, params, device_data = _setup()
  cohort = _hand_made_cohort(data)._replace(weights=jnp.zeros((2, 4)),
                                            epochs=jnp.zeros((2, 4), jnp.int32))
  train = jax.jit(cohort_lib.make_train_cohort(apply_fn, tx, batch_size=BATCH, num_lanes=2,
                                               max_epochs=3))
  got, _ = train(params, cohort, jnp.ones(2), device_data)
  jax.tree.map(np.testing.assert_array_equal, got, params)


def test_packing_balances_lanes_and_places_every_job_once():
  steps = jnp.array([50, 3, 0, 17, 17, 8, 1, 30, 0, 12])
  lane_jobs, lane_start, load = cohort_lib.pack_lanes(steps, 3)
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

  def sample(seed, fraction, fixed, drop):
    return cohort_lib.sample_cohort(
        jax.random.PRNGKey(seed), sizes=sizes, clients_per_round=10, local_epochs=10,
        batch_size=BATCH, fraction=jnp.float32(fraction), fixed_count=jnp.bool_(fixed),
        drop_stragglers=jnp.bool_(drop), weight_by_batches=False)

  c = sample(0, 0.5, True, False)
  assert len(set(np.asarray(c.clients))) == 10
  assert int(c.stragglers.sum()) == 5
  epochs = np.asarray(c.epochs)
  assert (epochs[np.asarray(c.stragglers)] < 10).all() and (epochs >= 1).all()
  assert (epochs[~np.asarray(c.stragglers)] == 10).all()
  dropped = sample(0, 0.5, True, True)
  assert (np.asarray(dropped.weights)[np.asarray(dropped.stragglers)] == 0).all()
  assert (np.asarray(dropped.epochs)[np.asarray(dropped.stragglers)] == 0).all()
  counts = [int(sample(s, 0.3, False, False).stragglers.sum()) for s in range(200)]
  assert abs(np.mean(counts) - 3.0) < 0.3  # Bernoulli(0.3) over 10 clients.
  assert len(set(counts)) > 3
  assert int(sample(1, 0.0, False, False).stragglers.sum()) == 0
  assert int(sample(1, 1.0, False, False).stragglers.sum()) == 10
