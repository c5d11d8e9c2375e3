"""One federated round for a whole cohort (of one run or of many) as one compiled program.

Client jobs (a client, its step count, the global parameters of its run) are packed into a few
vmapped lanes, longest job first onto the least-loaded lane, so lanes finish together; each lane
runs its jobs one after another, resetting to its next job's global parameters at a job boundary.
The loop runs as many steps as the busiest lane needs (a while loop with a traced bound), so a round
costs the cohort's own work and shapes never depend on the cohort: no recompiles between rounds.
"""
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedprox_jax import client
from fedprox_jax import shuffle
from fedprox_jax.models import ApplyFn


class ClientData(NamedTuple):
  """Every client's local training examples on the device, rows grouped client by client."""
  x: jax.Array       # [n, d] raw features (the model normalises them)
  y: jax.Array       # [n] int32
  offsets: jax.Array  # [clients] first row of each client
  sizes: jax.Array    # [clients] examples of each client


class Cohort(NamedTuple):
  """The sampled clients of R runs, K each; epochs 0 means no work, weight 0 not aggregated."""
  clients: jax.Array     # [R, K] int32
  epochs: jax.Array      # [R, K] int32
  weights: jax.Array     # [R, K] float32
  keys: jax.Array        # [R, K, 2] uint32, each client's key for this round
  stragglers: jax.Array  # [R, K] bool


def sample_cohort(round_key: jax.Array, *, sizes: jax.Array, clients_per_round: int,
                  local_epochs: int, batch_size: int, fraction: jax.Array,
                  fixed_count: jax.Array, drop_stragglers: jax.Array,
                  weight_by_batches: bool) -> Cohort:
  """One run's cohort: clients uniform without replacement, stragglers and their epochs.

  A straggler is drawn with probability `fraction` (the Flower baseline) or, with `fixed_count`,
  exactly round(K * fraction) of the K clients are (the paper's code). A straggler does a number of
  epochs uniform in {1, ..., E - 1}; FedAvg (`drop_stragglers`) leaves them out altogether.
  """
  k_sample, k_straggle, k_epochs, k_clients = jax.random.split(round_key, 4)
  k = clients_per_round
  clients = jax.random.choice(k_sample, sizes.shape[0], (k,), replace=False).astype(jnp.int32)
  u = jax.random.uniform(k_straggle, (k,))
  rank = jnp.argsort(jnp.argsort(u))
  num_fixed = jnp.floor(k * fraction + 0.5).astype(jnp.int32)
  stragglers = jnp.where(fixed_count, rank < num_fixed, u < fraction)
  # With E = 1 there is no smaller amount of work, so a straggler does the one epoch.
  partial = jax.random.randint(k_epochs, (k,), 1, max(local_epochs, 2))
  partial = jnp.minimum(partial, local_epochs)
  dropped = stragglers & drop_stragglers
  epochs = jnp.where(stragglers, partial, local_epochs)
  epochs = jnp.where(dropped, 0, epochs).astype(jnp.int32)
  n = sizes[clients]
  weights = (-(-n // batch_size) if weight_by_batches else n).astype(jnp.float32)
  weights = jnp.where(dropped, 0.0, weights)
  keys = jax.vmap(lambda c: jax.random.fold_in(k_clients, c))(clients)
  return Cohort(clients, epochs, weights, keys, stragglers)


def pack_lanes(steps: jax.Array, num_lanes: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Longest-processing-time-first packing of jobs onto lanes.

  Returns lane_jobs [L, J] (job ids in run order, padded with J, the id of an empty job),
  lane_start [L, J] (each job's first lane step, padded with a huge number) and load [L].
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
          jnp.full((num_lanes, num_jobs), num_jobs, jnp.int32),
          jnp.full((num_lanes, num_jobs), big, jnp.int32))
  load, _, lane_jobs, lane_start = jax.lax.fori_loop(0, num_jobs, assign, init)
  return lane_jobs, lane_start, load


def _take(tree, i):
  return jax.tree.map(lambda a: a[i], tree)


def _select(pred, on_true, on_false):
  return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def make_train_cohort(apply_fn: ApplyFn, tx: optax.GradientTransformation, *, batch_size: int,
                      num_lanes: int, max_epochs: int, mesh: jax.sharding.Mesh | None = None):
  """Builds train_cohort(global_params [R], cohort, mu [R], data) -> (new global [R], stats).

  With a `mesh` (one axis, 'lanes'), each device runs its share of the lanes as its own loop
  (shard_map): nothing crosses devices until the final sum, and a device's program is the
  single-device one, whatever the model.
  """
  b = batch_size

  def train_cohort(global_params, cohort: Cohort, mu: jax.Array, data: ClientData):
    num_runs, k = cohort.clients.shape
    num_jobs = num_runs * k
    # Flat job arrays with one extra, empty job (id num_jobs) that idle lanes point at.
    pad = lambda a, v: jnp.concatenate([a.reshape(num_jobs, *a.shape[2:]),
                                        jnp.full((1, *a.shape[2:]), v, a.dtype)])
    jobs = dict(run=pad(jnp.repeat(jnp.arange(num_runs, dtype=jnp.int32)[:, None], k, 1), 0),
                n=pad(data.sizes[cohort.clients], 1),
                offset=pad(data.offsets[cohort.clients], 0),
                weight=pad(cohort.weights, 0.0))
    jobs['steps_per_epoch'] = -(-jobs['n'] // b)
    jobs['steps'] = pad(cohort.epochs, 0) * jobs['steps_per_epoch']
    jobs['mu'] = mu[jobs['run']]
    # Shuffle tables of every (job, epoch), made once per round rather than at every step.
    epoch_keys = jax.vmap(lambda key: jax.vmap(lambda e: shuffle.epoch_key(key, e))(
        jnp.arange(max_epochs)))(pad(cohort.keys, 0))
    jobs['shift'], jobs['salt'] = jax.vmap(jax.vmap(shuffle.round_tables, in_axes=(0, None)))(
        epoch_keys, jobs['n'])

    lane_jobs, lane_start, load = pack_lanes(jobs['steps'][:num_jobs], num_lanes)
    num_steps = jnp.max(load)
    lanes_loop = functools.partial(_run_lanes, apply_fn, tx, b)
    if mesh is not None:
      lanes, everywhere = jax.sharding.PartitionSpec('lanes'), jax.sharding.PartitionSpec()
      # No collectives inside, so the check of which values vary across devices is off.
      lanes_loop = jax.shard_map(lanes_loop, mesh=mesh, out_specs=lanes, in_specs=(
          lanes, lanes, everywhere, everywhere, everywhere, everywhere), check_vma=False)
    acc = lanes_loop(lane_jobs, lane_start, num_steps, jobs, global_params, data)
    run, steps, weight = jobs['run'], jobs['steps'], jobs['weight']

    # Jobs that did no steps but are aggregated contribute their run's global parameters.
    total = jax.ops.segment_sum(weight, run, num_runs)
    idle = jax.ops.segment_sum(jnp.where(steps == 0, weight, 0.0), run, num_runs)

    def aggregate(a, g):
      bcast = lambda v: v.reshape(-1, *[1] * (g.ndim - 1))
      mean = (a.sum(0) + bcast(idle) * g) / bcast(jnp.maximum(total, 1e-30))
      return jnp.where(bcast(total) > 0, mean, g)  # Nobody aggregated: the model stays.

    new_global = jax.tree.map(aggregate, acc, global_params)
    stats = dict(executed_steps=num_steps * num_lanes, real_steps=jnp.sum(steps))
    return new_global, stats

  return train_cohort


def _run_lanes(apply_fn: ApplyFn, tx: optax.GradientTransformation, b: int, lane_jobs, lane_start,
               num_steps, jobs: dict, global_params, data: ClientData):
  """Runs lanes [L] (each a list of jobs with start steps) for num_steps steps in lockstep; returns
  each lane's weighted sum of its finished jobs' parameters per run, [L, R, ...]."""
  anchor0 = _take(global_params, 0)
  opt_init = tx.init(anchor0)
  steps, run = jobs['steps'], jobs['run']

  def lane_step(t, jobs_l, start_l, params, opt_state, acc):
    slot = jnp.maximum(jnp.searchsorted(start_l, t, side='right') - 1, 0)
    job = jobs_l[slot]
    s = t - start_l[slot]
    active = s < steps[job]
    anchor = _take(global_params, run[job])
    begin = active & (s == 0)
    params = _select(begin, anchor, params)
    opt_state = _select(begin, opt_init, opt_state)
    per_epoch = jobs['steps_per_epoch'][job]
    epoch, batch = s // per_epoch, s % per_epoch
    n = jobs['n'][job]
    pos = batch * b + jnp.arange(b)
    local = shuffle.permute_with_tables(jobs['shift'][job, epoch], jobs['salt'][job, epoch], n,
                                        jnp.minimum(pos, n - 1))
    rows = jobs['offset'][job] + local
    new_params, new_opt, _ = client.sgd_step(apply_fn, tx, params, opt_state, anchor,
                                             data.x[rows], data.y[rows],
                                             (pos < n).astype(jnp.float32), jobs['mu'][job])
    params = _select(active, new_params, params)
    opt_state = _select(active, new_opt, opt_state)
    # A lane whose job just ended adds weight * params to its own sum for the job's run.
    w = jnp.where(active & (s == steps[job] - 1), jobs['weight'][job], 0.0)
    acc = jax.tree.map(lambda a, p: a.at[run[job]].add(w * p), acc, params)
    return params, opt_state, acc

  def body(carry):
    t, params, opt_state, acc = carry
    params, opt_state, acc = jax.vmap(lane_step, in_axes=(None, 0, 0, 0, 0, 0))(
        t, lane_jobs, lane_start, params, opt_state, acc)
    return t + 1, params, opt_state, acc

  num_lanes = lane_jobs.shape[0]
  lanes_of = lambda tree: jax.tree.map(lambda a: jnp.broadcast_to(a, (num_lanes, *a.shape)), tree)
  carry = (jnp.int32(0), lanes_of(anchor0), lanes_of(opt_init),
           lanes_of(jax.tree.map(jnp.zeros_like, global_params)))
  return jax.lax.while_loop(lambda c: c[0] < num_steps, body, carry)[3]
