"""A round's client jobs, and their packing onto lanes.

Client jobs (a client, its step count, its run) are packed into a few vmapped lanes, longest job
first onto the least-loaded lane, so lanes finish together; each lane runs its jobs one after
another. A round then costs its cohort's own work, and shapes never depend on the cohort.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedprox_jax.core import shuffle
from fedprox_jax.core.cohort import Cohort


class ClientData(NamedTuple):
  """Every client's local training examples on the device, rows grouped client by client."""
  x: jax.Array  # [n, d] raw features (the model normalises them)
  y: jax.Array  # [n] int32
  offsets: jax.Array  # [clients] first row of each client
  sizes: jax.Array  # [clients] examples of each client


class Jobs(NamedTuple):
  """Every client job of a round, flat over runs (job j: run j // K, cohort slot j % K), and one
  more, empty job (id J) that idle lanes point at."""
  run: jax.Array  # [J + 1] int32
  n: jax.Array  # [J + 1] the client's training examples (1 for the empty job)
  offset: jax.Array  # [J + 1] its first row in the clients' data
  steps_per_epoch: jax.Array  # [J + 1]
  steps: jax.Array  # [J + 1] local steps in all (0: no work)
  weight: jax.Array  # [J + 1] aggregation weight q_i (0: not aggregated)
  shift: jax.Array  # [J + 1, E, rounds] uint32: per-epoch shuffle tables
  salt: jax.Array  # [J + 1, E, rounds] uint32

  @property
  def num_jobs(self) -> int:
    return self.run.shape[0] - 1


def make_jobs(cohort: Cohort, sizes: jax.Array, offsets: jax.Array, batch_size: int,
              max_epochs: int) -> Jobs:
  num_runs, k = cohort.clients.shape
  num_jobs = num_runs * k
  pad = lambda a, v: jnp.concatenate(
      [a.reshape(num_jobs, *a.shape[2:]),
       jnp.full((1, *a.shape[2:]), v, a.dtype)])
  n = pad(sizes[cohort.clients], 1)
  steps_per_epoch = -(-n // batch_size)
  # Shuffle tables of every (job, epoch), made once per round rather than at every step.
  epoch_keys = jax.vmap(lambda key: jax.vmap(lambda e: shuffle.epoch_key(key, e))
                        (jnp.arange(max_epochs)))(pad(cohort.keys, 0))
  shift, salt = jax.vmap(jax.vmap(shuffle.round_tables, in_axes=(0, None)))(epoch_keys, n)
  return Jobs(run=pad(jnp.repeat(jnp.arange(num_runs, dtype=jnp.int32)[:, None], k, 1), 0),
              n=n,
              offset=pad(offsets[cohort.clients], 0),
              steps_per_epoch=steps_per_epoch,
              steps=pad(cohort.epochs, 0) * steps_per_epoch,
              weight=pad(cohort.weights, 0.0),
              shift=shift,
              salt=salt)


def pack_lanes(steps: jax.Array, num_lanes: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Longest-processing-time-first packing of jobs onto lanes.

  Returns lane_jobs [L, J] (job ids in run order, padded with J, the id of an empty job),
  lane_start [L, J] (each job's first lane step, padded with a huge number) and load [L]. Loads
  are int32: engine/resources.check_steps refuses a run whose round could pass 2^31 - 1 steps on
  its lanes (total + L x the largest job bounds L x the busiest lane's load).
  """
  num_jobs = steps.shape[0]
  order = jnp.argsort(-steps, stable=True)
  big = jnp.iinfo(jnp.int32).max

  def assign(q, carry):
    load, count, lane_jobs, lane_start = carry
    job = order[q]
    lane = jnp.argmin(load)
    lane_jobs = lane_jobs.at[lane, count[lane]].set(job)
    lane_start = lane_start.at[lane, count[lane]].set(load[lane])
    return load.at[lane].add(steps[job]), count.at[lane].add(1), lane_jobs, lane_start

  init = (jnp.zeros(num_lanes, jnp.int32), jnp.zeros(num_lanes, jnp.int32),
          jnp.full((num_lanes, num_jobs), num_jobs,
                   jnp.int32), jnp.full((num_lanes, num_jobs), big, jnp.int32))
  load, _, lane_jobs, lane_start = jax.lax.fori_loop(0, num_jobs, assign, init)
  return lane_jobs, lane_start, load
