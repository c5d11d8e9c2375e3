"""The lanes' loop: every lane runs its client jobs back to back, one local step per loop step, in
lockstep with the other lanes (vmapped), for as many steps as the busiest lane needs.

At a job boundary a lane resets to the job's run's global parameters. Each step minimises the
algorithm's local loss (the default: cross-entropy + mu prox) on one batch. When a job ends, the
lane asks the algorithm for the client's upload, passes it through the client sides of the
aggregation stages (clipping), adds q_i * upload to its own sums for the job's run (masked where
q_i = 0, so a client left out can never inject a NaN) and the stages' extras to their sums, and
keeps the client's new persistent state, if the algorithm has one. Nothing crosses lanes until the
caller sums them. In a program of one lane (each CPU device's), stages that skip work by lax.cond
(compression's) run unbatched, so that the conds skip it (top-k's search where a run keeps every
coordinate).
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedprox_jax import aggregation
from fedprox_jax.algorithms.base import Algorithm
from fedprox_jax.algorithms.base import Batch
from fedprox_jax.algorithms.base import ClientResult
from fedprox_jax.algorithms.base import LocalContext
from fedprox_jax.core import client
from fedprox_jax.core import model as model_lib
from fedprox_jax.core import shuffle
from fedprox_jax.core.packing import Jobs


class RunInputs(NamedTuple):
  """What a run's clients start from, stacked over the runs."""
  params: jax.Array  # pytree [R, ...]: the global models
  state: jax.Array  # pytree [R, ...]: the algorithm's server states
  hp: dict  # {name: [R]}: hyperparameters, mu included
  aggregation: dict = {}  # {stage: [R, ...]}: the aggregation stages' server states


def take(tree, i):
  return jax.tree.map(lambda a: a[i], tree)


def _select(pred, on_true, on_false):
  return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def _result(delta, params, steps, hp, before) -> ClientResult:
  return ClientResult(delta, steps, hp['learning_rate'], hp['weight_decay'], hp['mu'], params,
                      before)


def _upload_and_extras(algorithm: Algorithm, stages, result: ClientResult, runs: RunInputs, run,
                       client_state, key):
  """(upload, new client state, stage extras) of a job of run `run` whose work is `result` (`key`:
  the job's key of the round, for the stages' draws). Where a stage keeps a state for every
  client, the client state is aggregation/client_state.py's, whose 'stages' part the stages
  update."""
  hp = take(runs.hp, run)
  upload, new_state = algorithm.upload(result, take(runs.state, run), client_state, hp)
  return _sent(algorithm, stages, upload, new_state, runs, run, client_state, key)


def _sent(algorithm: Algorithm, stages, upload, new_state, runs: RunInputs, run, client_state, key):
  """The algorithm's upload and new client state through the stages' client sides: (upload as
  sent, new client state, stage extras)."""
  hp = take(runs.hp, run)
  keeps = aggregation.keeps_client_state(stages)
  upload, extras, stage_states = aggregation.client(stages, upload, take(runs.aggregation, run), hp,
                                                    key, new_state['stages'] if keeps else None)
  if keeps:
    new_state = {**new_state, 'stages': stage_states}
  if algorithm.after_send and any(s.client for s in stages):  # What was sent moves the state.
    new_state = algorithm.after_send(upload, client_state, new_state, hp)
  return upload, new_state, extras


def _add(sums, run, w, values):
  """sums [R, ...] + w * values at `run` (nothing where w = 0: never a NaN from a left-out
  client)."""
  return jax.tree.map(lambda a, u: a.at[run].add(jnp.where(w > 0, w * u, 0.0)), sums, values)


def run_lanes(algorithm: Algorithm,
              apply_fn,
              batch_size: int,
              lane_jobs,
              lane_start,
              num_steps,
              jobs: Jobs,
              runs: RunInputs,
              client_states,
              before,
              data,
              job_keys,
              stages=()):
  """Runs lanes [L] for num_steps steps; returns each lane's sums of q_i * upload_i per run
  ([L, R, ...]) with the stages' extras summed over the aggregated clients ([L, R]), as
  (sums, extras), and its jobs' new client states ([L, J + 1, ...], None without client state).
  `before` holds each job's before_steps means ([J + 1, ...], None without them), `job_keys`
  each job's key of the round ([J + 1, 2]) for the stages' draws."""
  b = batch_size
  model = model_lib.outputs_of(apply_fn)
  loss_fn = algorithm.local_loss or client.default_loss
  anchor0, hp0 = take(runs.params, 0), take(runs.hp, 0)
  opt_init = client.local_optimizer(hp0['learning_rate'], hp0['weight_decay']).init(anchor0)
  upload_shape = jax.eval_shape(lambda: _upload_and_extras(
      algorithm, stages, _result(anchor0, anchor0, jobs.steps[0], hp0, take(before, 0)), runs, 0,
      take(client_states, 0), job_keys[0]))
  upload_shape = (upload_shape[0], upload_shape[2])
  num_runs = jax.tree.leaves(runs.params)[0].shape[0]

  def lane_step(t, jobs_l, start_l, params, opt_state):
    slot = jnp.maximum(jnp.searchsorted(start_l, t, side='right') - 1, 0)
    job = jobs_l[slot]
    s = t - start_l[slot]
    active = s < jobs.steps[job]
    run = jobs.run[job]
    anchor, state, hp = take(runs.params, run), take(runs.state, run), take(runs.hp, run)
    client_state = take(client_states, job)
    begin = active & (s == 0)
    params = _select(begin, anchor, params)
    opt_state = _select(begin, opt_init, opt_state)
    per_epoch = jobs.steps_per_epoch[job]
    epoch, batch = s // per_epoch, s % per_epoch
    n = jobs.n[job]
    pos = batch * b + jnp.arange(b)
    local = shuffle.permute_with_tables(jobs.shift[job, epoch], jobs.salt[job, epoch], n,
                                        jnp.minimum(pos, n - 1))
    rows = jobs.offset[job] + local
    context = LocalContext(anchor, state, client_state, hp)
    correction = (algorithm.correction(state, client_state, hp) if algorithm.correction else None)
    new_params, new_opt, _ = client.local_step(
        loss_fn, model, params, opt_state,
        Batch(data.x[rows], data.y[rows], (pos < n).astype(jnp.float32)), context, correction)
    params = _select(active, new_params, params)
    opt_state = _select(active, new_opt, opt_state)
    return params, opt_state, job, active & (s == jobs.steps[job] - 1)

  def uploaded(params, job):
    """A job's upload and new client state as the algorithm makes them."""
    run = jobs.run[job]
    anchor, hp = take(runs.params, run), take(runs.hp, run)
    delta = jax.tree.map(jnp.subtract, params, anchor)
    return algorithm.upload(_result(delta, params, jobs.steps[job], hp, take(before, job)),
                            take(runs.state, run), take(client_states, job), hp)

  def sent(upload, new_state, job):
    return _sent(algorithm, stages, upload, new_state, runs, jobs.run[job],
                 take(client_states, job), job_keys[job])

  def written(upload, new_state, extras, job, end, sums, states_out):
    """A job's last step (`end`): what the client sent goes into this lane's sums for its run,
    and its new state is kept."""
    run = jobs.run[job]
    w = jnp.where(end, jobs.weight[job], 0.0)
    sums = (_add(sums[0], run, w, upload), _add(sums[1], run, (w > 0).astype(jnp.float32), extras))
    if states_out is not None:
      states_out = jax.tree.map(lambda o, v: o.at[job].set(jnp.where(end, v, o[job])), states_out,
                                new_state)
    return sums, states_out

  all_lanes_step = jax.vmap(lane_step, in_axes=(None, 0, 0, 0, 0))
  if lane_jobs.shape[0] == 1 and any(s.skips_work for s in stages):
    # One lane (a CPU device's share): the stages run unbatched, so that their lax.conds skip
    # the work a run does not ask for (vmapped, a cond computes both branches and selects).
    unbatched = lambda tree: jax.tree.map(lambda a: a[0], tree)
    batched = lambda tree: jax.tree.map(lambda a: jnp.asarray(a)[None], tree)
    all_lanes_sent = lambda *args: batched(sent(*unbatched(args)))
  else:
    all_lanes_sent = jax.vmap(sent)

  def all_lanes_finish(params, job, end, sums, states_out):
    upload, new_state = jax.vmap(uploaded)(params, job)
    upload, new_state, extras = all_lanes_sent(upload, new_state, job)
    return jax.vmap(written)(upload, new_state, extras, job, end, sums, states_out)

  def body(carry):
    t, params, opt_state, sums, states_out = carry
    params, opt_state, job, end = all_lanes_step(t, lane_jobs, lane_start, params, opt_state)
    # Jobs end on few steps: the uploads and the writes of the lanes' sums and client states (as
    # costly as a step, for an algorithm with client state) are skipped on the others.
    sums, states_out = jax.lax.cond(end.any(), all_lanes_finish, lambda *a: a[3:], params, job, end,
                                    sums, states_out)
    return t + 1, params, opt_state, sums, states_out

  num_lanes = lane_jobs.shape[0]
  lanes_of = lambda tree: jax.tree.map(lambda a: jnp.broadcast_to(a, (num_lanes, *a.shape)), tree)
  sums0 = jax.tree.map(lambda s: jnp.zeros((num_runs, *s.shape), s.dtype), upload_shape)
  carry = (jnp.int32(0), lanes_of(anchor0), lanes_of(opt_init), lanes_of(sums0),
           None if client_states is None else lanes_of(jax.tree.map(jnp.zeros_like, client_states)))
  _, _, _, sums, states_out = jax.lax.while_loop(lambda c: c[0] < num_steps, body, carry)
  return sums, states_out


# Batches' rows per step of the pass before the steps: fewer, larger steps (a forward pass has no
# step to take between batches).
BEFORE_CHUNK = 8


def before_steps(algorithm: Algorithm, apply_fn, batch_size: int, jobs: Jobs, runs: RunInputs,
                 client_states, data):
  """Each job's means of algorithm.before_steps' per-batch sums over its client's local training
  examples at its run's global model ([J + 1, ...]; the empty job's are 0).

  All jobs at once (vmapped, or one after another for a model that declares vmapping slow),
  BEFORE_CHUNK batches' rows at a time in row order, for as many chunks as the largest client
  needs: a forward pass over the cohort's data, next to the E epochs of training after it (the
  sums do not depend on how the rows are cut).
  """
  b = batch_size * BEFORE_CHUNK
  model = model_lib.outputs_of(apply_fn)

  def batch_sums(job, i):
    n = jobs.n[job]
    pos = i * b + jnp.arange(b)
    rows = jobs.offset[job] + jnp.minimum(pos, n - 1)
    run = jobs.run[job]
    anchor = take(runs.params, run)
    context = LocalContext(anchor, take(runs.state, run), take(client_states, job),
                           take(runs.hp, run))
    return algorithm.before_steps(model, anchor,
                                  Batch(data.x[rows], data.y[rows], (pos < n).astype(jnp.float32)),
                                  context)

  all_jobs = jnp.arange(jobs.run.shape[0])
  every_job = model_lib.over_params(apply_fn, batch_sums, (0, None))
  zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(every_job, all_jobs, 0))
  sums = jax.lax.fori_loop(0, jnp.max(-(-jobs.n // b)),
                           lambda i, acc: jax.tree.map(jnp.add, acc, every_job(all_jobs, i)), zeros)
  real = jnp.arange(jobs.run.shape[0]) < jobs.num_jobs
  n = jnp.where(real, jobs.n, 1).astype(jnp.float32)
  return jax.tree.map(
      lambda a: jnp.where(real.reshape(-1, *[1] *
                                       (a.ndim - 1)), a / n.reshape(-1, *[1] * (a.ndim - 1)), 0.0),
      sums)


def add_idle_uploads(algorithm: Algorithm,
                     jobs: Jobs,
                     runs: RunInputs,
                     client_states,
                     before,
                     sums,
                     job_keys,
                     stages=()):
  """`sums` ([R, ...] uploads, [R] extras) plus q_i * upload_i of the aggregated jobs that do no
  step (no lane runs them): a client with q_i > 0 and no work still uploads what its result gives
  (delta 0; q-FFL's h_i is not 0). Sampled cohorts have none (every aggregated client does an
  epoch or more), so this costs a test of the cohort alone, one job at a time where there are
  some. Returns (sums, the stages' client states after those uploads [J + 1, ...]: an idle
  client's residual changes as it sends it; None where no stage keeps one)."""
  num_jobs = jobs.num_jobs
  idle = (jobs.steps[:num_jobs] == 0) & (jobs.weight[:num_jobs] > 0)
  keeps = aggregation.keeps_client_state(stages)
  stage_states = client_states['stages'] if keeps else None

  def add(j, carry):
    sums, stage_states = carry
    run = jobs.run[j]
    anchor, hp = take(runs.params, run), take(runs.hp, run)
    zero = jax.tree.map(jnp.zeros_like, anchor)
    upload, new_state, extras = _upload_and_extras(
        algorithm, stages, _result(zero, anchor, jobs.steps[j], hp, take(before, j)), runs, run,
        take(client_states, j), job_keys[j])
    w = jnp.where(idle[j], jobs.weight[j], 0.0)
    if keeps:
      stage_states = jax.tree.map(lambda o, v: o.at[j].set(jnp.where(idle[j], v, o[j])),
                                  stage_states, new_state['stages'])
    return (_add(sums[0], run, w, upload), _add(sums[1], run, (w > 0).astype(jnp.float32),
                                                extras)), stage_states

  return jax.lax.cond(idle.any(), lambda c: jax.lax.fori_loop(0, num_jobs, add, c), lambda c: c,
                      (sums, stage_states))
