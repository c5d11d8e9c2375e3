"""The package's packed, vectorized rounds of any algorithm on the small hand-made cohorts of
tests/reference_runs.py (stragglers with partial work, a dropped client, an idle one, partial
batches): what the algorithms' tests hold against their sequential references."""
import jax
import jax.numpy as jnp
import numpy as np

from fedprox_jax import aggregation
from fedprox_jax import algorithms
from fedprox_jax.aggregation import client_state
from fedprox_jax.algorithms import base
from fedprox_jax.core import cohort as cohort_lib
from fedprox_jax.core import packing
from fedprox_jax.engine import round_program
from fedprox_jax.engine import server as server_lib
from fedprox_jax.engine import simulation
from tests.reference_runs import BATCH
from tests.reference_runs import round_cohort


def full_hp(settings: dict) -> dict:
  """The round program's hp of the reference's settings ({name: [R]}): the common fields the
  references do not read at values that change nothing (no straggler draw: cohorts are given)."""
  runs = len(settings['learning_rate'])
  fixed = dict(straggler_fraction=0.0,
               fixed_straggler_count=False,
               drop_stragglers=False,
               server_momentum=0.9,
               server_b1=0.9,
               server_b2=0.99,
               server_eps=1e-3)
  hp = {k: np.full(runs, v) for k, v in fixed.items()}
  hp.update({k: np.asarray(v) for k, v in settings.items() if k not in ('b1', 'b2', 'eps')})
  dtype = lambda a: (bool if a.dtype == bool else np.int32
                     if np.issubdtype(a.dtype, np.integer) else np.float32)
  return {k: jnp.asarray(a, dtype(a)) for k, a in hp.items()}


def with_stage_states(algorithm, stages, params, hp):
  """The algorithm as the engine runs it with these stages: its client state holding theirs (the
  upload's shapes traced from run 0's parameters)."""
  if not aggregation.keeps_client_state(stages):
    return algorithm
  one = jax.tree.map(lambda a: jnp.asarray(a)[0], params)
  h = {k: v[0] for k, v in hp.items()}
  own = algorithm.init_client_state(one) if algorithm.init_client_state else None
  result = base.ClientResult(one, jnp.int32(1), h['learning_rate'], h['weight_decay'], h['mu'], one)
  upload = jax.eval_shape(lambda: algorithm.upload(result, algorithm.init_state(one, h), own, h)[0])
  return client_state.with_client_state(algorithm, stages, upload)


def packed_rounds(name: str,
                  apply_fn,
                  params,
                  settings: dict,
                  data,
                  rounds: int = 3,
                  num_lanes: int = 3,
                  cohorts=None,
                  stages=(),
                  seed: int = 0):
  """`rounds` packed rounds of algorithm `name` (server SGD) from `params` [R, ...] through the
  aggregation stages named in `stages` (their hyperparameters in `settings`, their keys drawn
  from `seed` and the round); returns the server state and every client's state [R, N, ...]
  (None without client state)."""
  stages = aggregation.chain(stages)
  hp = full_hp(settings)
  algorithm = with_stage_states(algorithms.get(name), stages, params, hp)
  x, y, offsets, sizes = data
  train = jax.jit(
      round_program.make_train_cohort(algorithm,
                                      'sgd',
                                      apply_fn,
                                      batch_size=BATCH,
                                      num_lanes=num_lanes,
                                      max_epochs=3,
                                      stages=stages))
  client_data = packing.ClientData(*map(jnp.asarray, (x, y, offsets, sizes)))
  server = server_lib.init(algorithm, 'sgd', jax.tree.map(jnp.asarray, params), hp, stages)
  runs = len(settings['learning_rate'])
  run_keys = jax.random.split(jax.random.PRNGKey(seed), runs)
  store = None
  if algorithm.init_client_state is not None:  # Each run's clients from its initial model.
    first = jax.vmap(algorithm.init_client_state)(jax.tree.map(jnp.asarray, params))
    store = jax.tree.map(lambda a: np.repeat(np.asarray(a)[:, None], len(sizes), 1), first)
  population = round_program.population_weight(sizes, BATCH, np.asarray(hp['weighting']))
  for t in range(rounds):
    given = cohorts[t] if cohorts else round_cohort(t, sizes)
    cohort = cohort_lib.Cohort(*(jnp.asarray(f) for f in given))
    clients = np.asarray(cohort.clients)
    gathered = None if store is None else jax.tree.map(
        lambda a: np.stack([a[r, clients[r]] for r in range(runs)]), store)
    server, new_states, stats = train(server, hp, cohort, gathered, client_data, population,
                                      simulation.stage_keys(t, run_keys))
    assert np.asarray(stats['finite']).all()
    if store is not None:
      for r in range(runs):
        jax.tree.map(lambda a, b: a[r].__setitem__(clients[r], np.asarray(b)[r]), store, new_states)
  return server, store
