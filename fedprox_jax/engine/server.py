"""The server: its state, and a round's aggregation and update, per run (vmapped over runs).

Each run's server state is its global model, its server optimizer's state, its algorithm's state
and its aggregation stages' (a clip norm that adapts). A round passes the sums of q_i * upload_i
over the aggregated clients through the server sides of the aggregation stages (aggregation/:
noise, a fixed denominator), the algorithm turns what comes out into Delta_t, and the server
optimizer (an optax transformation fed the pseudo-gradient -Delta_t) moves the model. A run whose
round aggregated no client keeps its whole server state, unless a stage fixed the denominator
(DP-FedAvg's noise is released every round).
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedprox_jax import aggregation
from fedprox_jax.aggregation.base import Aggregate
from fedprox_jax.algorithms import server_optimizers
from fedprox_jax.algorithms.base import Algorithm
from fedprox_jax.algorithms.base import Totals


class ServerState(NamedTuple):
  params: object  # pytree [R, ...]
  optimizer: object  # pytree [R, ...]
  algorithm: object  # pytree [R, ...]
  aggregation: object = ()  # {stage: state [R, ...]}, for the stages that keep one ({}: none)


def init(algorithm: Algorithm, optimizer: str, params, hp: dict, stages=()) -> ServerState:
  """The server state of R runs from their initial models [R, ...] and hyperparameters [R]."""

  def one(p, h):
    return ServerState(p,
                       server_optimizers.make(optimizer, h).init(p), algorithm.init_state(p, h),
                       aggregation.init_states(stages, h))

  return jax.vmap(one)(params, hp)


def update(algorithm: Algorithm,
           optimizer: str,
           server: ServerState,
           sums,
           weight: jax.Array,
           population_weight: jax.Array,
           hp: dict,
           stages=(),
           extras=None,
           keys=None,
           cohort_size: int = 0):
  """Every run's server state after a round whose aggregated uploads are `sums` [R, ...] (and
  the client stages' `extras` [R]), and each run's stats of the server stages ({name: [R]}).
  `keys` [R] are the stages' keys of the round."""

  def one(state: ServerState, sums, extras, weight, population_weight, h, key):
    got, stage_states, stats = aggregation.server(
        stages, Aggregate(sums, weight, extras, jnp.float32(cohort_size)), state.aggregation, h,
        key)
    delta, algorithm_state = algorithm.server_delta(Totals(got.sums, got.weight, population_weight),
                                                    state.algorithm, h)
    updates, optimizer_state = server_optimizers.make(optimizer,
                                                      h).update(jax.tree.map(jnp.negative, delta),
                                                                state.optimizer, state.params)
    new = ServerState(optax.apply_updates(state.params, updates), optimizer_state, algorithm_state,
                      stage_states)
    return jax.tree.map(lambda a, b: jnp.where(got.weight > 0, a, b), new, state), stats

  if keys is None:
    keys = jnp.zeros((weight.shape[0], 2), jnp.uint32)
  return jax.vmap(one)(server, sums, extras or {}, weight, population_weight, hp, keys)
