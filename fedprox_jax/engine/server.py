"""The server: its state, and a round's aggregation and update, per run (vmapped over runs).

Each run's server state is its global model, its server optimizer's state and its algorithm's
state. A round hands the algorithm the sums of q_i * upload_i over the aggregated clients; the
algorithm turns them into Delta_t, and the server optimizer (an optax transformation fed the
pseudo-gradient -Delta_t) moves the model. A run whose round aggregated no client keeps its whole
server state.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedprox_jax.algorithms import server_optimizers
from fedprox_jax.algorithms.base import Algorithm
from fedprox_jax.algorithms.base import Totals


class ServerState(NamedTuple):
  params: object  # pytree [R, ...]
  optimizer: object  # pytree [R, ...]
  algorithm: object  # pytree [R, ...]


def init(algorithm: Algorithm, optimizer: str, params, hp: dict) -> ServerState:
  """The server state of R runs from their initial models [R, ...] and hyperparameters [R]."""

  def one(p, h):
    return ServerState(p, server_optimizers.make(optimizer, h).init(p), algorithm.init_state(p, h))

  return jax.vmap(one)(params, hp)


def update(algorithm: Algorithm, optimizer: str, server: ServerState, sums, weight: jax.Array,
           population_weight: jax.Array, hp: dict) -> ServerState:
  """Every run's server state after a round whose aggregated uploads are `sums` [R, ...]."""

  def one(state: ServerState, sums, weight, population_weight, h):
    delta, algorithm_state = algorithm.server_delta(Totals(sums, weight, population_weight),
                                                    state.algorithm, h)
    updates, optimizer_state = server_optimizers.make(optimizer,
                                                      h).update(jax.tree.map(jnp.negative, delta),
                                                                state.optimizer, state.params)
    new = ServerState(optax.apply_updates(state.params, updates), optimizer_state, algorithm_state)
    return jax.tree.map(lambda a, b: jnp.where(weight > 0, a, b), new, state)

  return jax.vmap(one)(server, sums, weight, population_weight, hp)
