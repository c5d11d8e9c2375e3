"""One federated round for a whole cohort (of one run or of many) as one compiled program.

Jobs are packed onto lanes (core/packing.py), the lanes run the clients' local steps and collect
their uploads (core/lanes.py), then every run's server aggregates and updates (engine/server.py).
The loop runs as many steps as the busiest lane needs (a while loop with a traced bound), so shapes
never depend on the cohort: no recompiles between rounds.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from fedprox_jax import aggregation
from fedprox_jax.algorithms.base import Algorithm
from fedprox_jax.core import cohort as cohort_lib
from fedprox_jax.core import lanes as lanes_lib
from fedprox_jax.core import packing
from fedprox_jax.core.cohort import Cohort
from fedprox_jax.engine import server as server_lib


def _pad_jobs(tree, num_jobs):
  """[R, K, ...] per-client values as [J + 1, ...] per job, the empty job last (zeros)."""
  return jax.tree.map(
      lambda a: jnp.concatenate(
          [a.reshape(num_jobs, *a.shape[2:]),
           jnp.zeros((1, *a.shape[2:]), a.dtype)]), tree)


# A client's key for the stages' draws (quantization's rounding): fold_in(its own key of the
# round, this stream). The cohort drew that key from (seed, round, client id), so a client draws
# the same whatever its cohort position, lane, chunk or data placement (cohort_rows.for_round
# swaps the ids for slots, never the keys), and a resumed run draws what an undisturbed one does.
CLIENT_STREAM = 1 << 20


def job_keys(cohort: Cohort):
  """[J + 1, 2] keys of the round's jobs for the stages' draws (the empty job last)."""
  flat = cohort.keys.reshape(-1, cohort.keys.shape[-1])
  flat = jax.vmap(jax.random.fold_in, in_axes=(0, None))(flat, CLIENT_STREAM)
  return jnp.concatenate([flat, flat[:1]])


def make_train_cohort(algorithm: Algorithm,
                      optimizer: str,
                      apply_fn,
                      *,
                      batch_size: int,
                      num_lanes: int,
                      max_epochs: int,
                      mesh: jax.sharding.Mesh | None = None,
                      stages=()):
  """Builds train_cohort(server, hp, cohort, client_states, data, population_weight, keys=None)
  -> (server, client_states, stats) for R runs: `client_states` are the cohort's own [R, K, ...]
  (None without client state); `data` holds at least the cohort's rows, `population_weight` [R] is
  sum_j q_j over every client (engine/cohort_rows.py: `data` may hold the cohort's rows alone);
  `keys` [R] are the aggregation stages' keys of the round (aggregation/), whose stats come back
  in stats['aggregation'].

  With a `mesh` (one axis, 'lanes'), each device runs its share of the lanes as its own loop
  (shard_map): nothing crosses devices until the final sums, and a device's program is the
  single-device one, whatever the model.
  """

  def train_cohort(server: server_lib.ServerState,
                   hp: dict,
                   cohort: Cohort,
                   client_states,
                   data,
                   population_weight,
                   keys=None):
    num_runs, k = cohort.clients.shape
    num_jobs = num_runs * k
    keys_of_jobs = job_keys(cohort)
    jobs = packing.make_jobs(cohort, data.sizes, data.offsets, batch_size, max_epochs)
    lane_jobs, lane_start, load = packing.pack_lanes(jobs.steps[:num_jobs], num_lanes)
    num_steps = jnp.max(load)
    job_states = None if client_states is None else _pad_jobs(client_states, num_jobs)
    runs = lanes_lib.RunInputs(server.params, server.algorithm, hp, server.aggregation)
    before = (lanes_lib.before_steps(algorithm, apply_fn, batch_size, jobs, runs, job_states, data)
              if algorithm.before_steps else None)
    loop = functools.partial(lanes_lib.run_lanes, algorithm, apply_fn, batch_size, stages=stages)
    if mesh is not None:
      lanes, everywhere = jax.sharding.PartitionSpec('lanes'), jax.sharding.PartitionSpec()
      # No collectives inside, so the check of which values vary across devices is off.
      loop = jax.shard_map(loop,
                           mesh=mesh,
                           out_specs=lanes,
                           in_specs=(lanes, lanes, everywhere, everywhere, everywhere, everywhere,
                                     everywhere, everywhere, everywhere),
                           check_vma=False)
    sums, states_out = loop(lane_jobs, lane_start, num_steps, jobs, runs, job_states, before, data,
                            keys_of_jobs)
    (sums, extras), idle_states = lanes_lib.add_idle_uploads(algorithm, jobs, runs, job_states,
                                                             before,
                                                             jax.tree.map(lambda a: a.sum(0), sums),
                                                             keys_of_jobs, stages)
    aggregated = jnp.where(jobs.weight[:num_jobs] > 0, jobs.weight[:num_jobs], 0.0)
    weight = jax.ops.segment_sum(aggregated, jobs.run[:num_jobs], num_runs)
    new_server, stage_stats = server_lib.update(algorithm,
                                                optimizer,
                                                server,
                                                sums,
                                                weight,
                                                population_weight,
                                                hp,
                                                stages=stages,
                                                extras=extras,
                                                keys=keys,
                                                cohort_size=k)
    if client_states is not None:  # Each job's state comes from the one lane that ran it.
      # Only the aggregated clients that did some work change theirs (a client left out of the
      # aggregate keeps its state, as it keeps its influence: none).
      worked = jnp.concatenate([(jobs.steps[:num_jobs] > 0) & (jobs.weight[:num_jobs] > 0),
                                jnp.zeros(1, bool)])
      keep = lambda new, old: jax.tree.map(
          lambda a, b: jnp.where(worked.reshape(-1, *[1] * (b.ndim - 1)), a, b), new, old)
      if aggregation.keeps_client_state(stages):
        # An aggregated client without work sent its stages' part too (its residual): it is
        # idle_states' (the others' there are as they were).
        job_states = {**job_states, 'stages': idle_states}
      new_states = keep(jax.tree.map(lambda a: a.sum(0), states_out), job_states)
      client_states = jax.tree.map(lambda a: a[:num_jobs].reshape(num_runs, k, *a.shape[1:]),
                                   new_states)
    finite = jnp.stack([
        jnp.all(jnp.isfinite(p), axis=tuple(range(1, p.ndim)))
        for p in jax.tree.leaves(new_server.params)
    ]).all(0)
    stats = dict(executed_steps=num_steps * num_lanes,
                 real_steps=jnp.sum(jobs.steps),
                 finite=finite,
                 stragglers=cohort.stragglers.sum(1),
                 active_clients=(cohort.weights > 0).sum(1),
                 aggregation=stage_stats)
    return new_server, client_states, stats

  return train_cohort


def population_weight(sizes: np.ndarray, batch_size: int, weighting) -> np.ndarray:
  """sum_j q_j over every client, for each run ([R] from the runs' weighting codes [R]): counted
  in int64 on the host (exact whatever the population), as cohort.client_weights weighs a
  client."""
  sizes = np.asarray(sizes, np.int64)
  totals = {
      cohort_lib.EXAMPLES: sizes.sum(),
      cohort_lib.BATCHES: (-(-sizes // batch_size)).sum(),
      cohort_lib.UNIFORM: len(sizes)
  }
  return np.array([totals[int(w)] for w in np.asarray(weighting).reshape(-1)], np.float32)
